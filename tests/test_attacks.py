"""The red team's attacks on the gate: each try to make `verify` pass what it must refuse, kept as a
test whether it found a hole (fixed, and named in the test's id) or the gate already refused it."""

from __future__ import annotations

import base64
import codecs
import copy
import hashlib
import json
import os
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import COMMIT, PIPELINE_ENV, run_cli, shared_ref
from slsa_provenance.gate.artifacts import folder_artifacts
from slsa_provenance.gate.checks import Artifact, Builder, Expectations, check_artifacts, run_checks
from slsa_provenance.gate.flow import GateOptions, GateResult, verify_gate
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.sbom import SBOM_NAMES
from slsa_provenance.provenance.statement import (
    SPDX_MEDIA_TYPE,
    ResourceDescriptor,
    Subject,
    build_statement,
    canonical_json,
)
from slsa_provenance.signing import dsse
from slsa_provenance.signing.keys import public_key_pem
from slsa_provenance.signing.local import LocalSigner
from test_registry import acr, registry  # noqa: F401 (the real registry's fixtures, asked for by name)
from test_run_summary import step_env

APP = b"app v1\n"
APP_SHA = hashlib.sha256(APP).hexdigest()
REPOSITORY = PIPELINE_ENV["BUILD_REPOSITORY_URI"]
BUILDER = "https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/main"

Statement = dict[str, Any]


@pytest.fixture(scope="module")
def signer(key_files: dict[str, tuple[Path, Path]]) -> LocalSigner:
    return LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))


def statement(ref: str = "refs/heads/main", reason: str = "IndividualCI", **subjects: str) -> Statement:
    context = replace(
        RunContext.from_variables(PIPELINE_ENV),
        source_branch=ref,
        reason=reason,
        pipeline_file="azure-pipelines.yml",
        server_confirmed=True,
    )
    named = [Subject(name, sha) for name, sha in (subjects or {"bin/app": APP_SHA}).items()]
    return build_statement(context, named)


def envelope(signer: LocalSigner, payload: bytes, payload_type: str = dsse.PAYLOAD_TYPE) -> dict[str, Any]:
    signed = dsse.sign(payload, payload_type, signer)
    return json.loads(signed.to_json())


def signed_json(signer: LocalSigner, document: Statement) -> bytes:
    return json.dumps(envelope(signer, canonical_json(copy.deepcopy(document)))).encode()


def first_error(data: bytes, signer: LocalSigner, expected: Expectations | None = None) -> str:
    """The gate's verdict on `data` for the artifact bin/app: '' when it passes."""
    report = run_checks(data, [signer.public_key()], expected or Expectations(), [Artifact("app", APP_SHA)])
    return next((r.error for r in report.results if r.error), "")


# Each: what the attacker sends (from a trusted signer and a valid Statement), and the verdict's start
# ('' = passes, and should). "HOLE" marks what passed before this file's fixes.
def _payload_variant(edit: Callable[[bytes], bytes]) -> Callable[[LocalSigner], bytes]:
    def make(signer: LocalSigner) -> bytes:
        return json.dumps(envelope(signer, edit(canonical_json(statement())))).encode()

    return make


def _envelope_variant(edit: Callable[[dict[str, Any], str], str]) -> Callable[[LocalSigner], bytes]:
    def make(signer: LocalSigner) -> bytes:
        signed = envelope(signer, canonical_json(statement()))
        return edit(signed, json.dumps(signed)).encode("utf-8", "surrogatepass")

    return make


def _other_payload() -> str:
    other = statement(**{"bin/app": "0" * 64})
    return base64.b64encode(canonical_json(other)).decode()


def _untrusted_second_signature(signer: LocalSigner) -> bytes:
    signed = envelope(signer, canonical_json(statement()))
    stranger = ec.generate_private_key(ec.SECP256R1())
    extra = stranger.sign(dsse.pae(dsse.PAYLOAD_TYPE, canonical_json(statement())), ec.ECDSA(_sha256()))
    signed["signatures"].insert(0, {"keyid": signed["signatures"][0]["keyid"], "sig": _b64(extra)})
    return json.dumps(signed).encode()


def _only_untrusted_signature(signer: LocalSigner) -> bytes:
    signed = envelope(signer, canonical_json(statement()))
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = stranger.sign(dsse.pae(dsse.PAYLOAD_TYPE, canonical_json(statement())), ec.ECDSA(_sha256()))
    signed["signatures"] = [{"keyid": signed["signatures"][0]["keyid"], "sig": _b64(forged)}]
    return json.dumps(signed).encode()


def _type_confusion(signer: LocalSigner) -> bytes:
    other_type = "application/vnd.in-toto+JSON"
    return json.dumps(envelope(signer, canonical_json(statement()), other_type)).encode()


def _statement_variant(edit: Callable[[Statement], None]) -> Callable[[LocalSigner], bytes]:
    def make(signer: LocalSigner) -> bytes:
        document = statement()
        edit(document)
        return signed_json(signer, document)

    return make


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bundle_twice(signer: LocalSigner) -> bytes:
    signed = json.dumps(envelope(signer, canonical_json(statement())))
    other = json.dumps(json.loads(signed) | {"payload": _other_payload()})
    return (
        '{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{},'
        f'"dsseEnvelope":{other},"dsseEnvelope":{signed}}}'
    ).encode()


def _bundle_and_envelope(signer: LocalSigner) -> bytes:
    """A bundle of one Statement that is also, at its top level, a DSSE envelope of another."""
    signed = json.dumps(envelope(signer, canonical_json(statement())))
    other = envelope(signer, base64.b64decode(_other_payload()))
    return json.dumps(
        other
        | {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": json.loads(signed)}
    ).encode()


ENVELOPE_ATTACKS: dict[str, tuple[Callable[[LocalSigner], bytes], str]] = {
    "HOLE payload key twice in the envelope (a first-key parser reads the other)": (
        _envelope_variant(lambda e, text: f'{{"payload":"{_other_payload()}",{text[1:]}'),
        "(1) envelope: envelope is ambiguous JSON: key 'payload' is given twice",
    ),
    "HOLE dsseEnvelope twice in a bundle": (
        _bundle_twice,
        "(1) envelope: envelope is ambiguous JSON: key 'dsseEnvelope' is given twice",
    ),
    "HOLE a bundle that is also a DSSE envelope of another Statement": (
        _bundle_and_envelope,
        "(1) envelope: the Sigstore bundle also carries DSSE envelope fields at its top level",
    ),
    "HOLE NaN in the envelope": (
        _envelope_variant(lambda e, text: text[:-1] + ',"x":NaN}'),
        "(1) envelope: envelope is ambiguous JSON: NaN is not a JSON number",
    ),
    "HOLE key twice in the signed payload": (
        _payload_variant(lambda p: p[:-1] + b',"_type":"https://in-toto.io/Statement/v1"}'),
        "(3) statement: the payload is ambiguous JSON: key '_type' is given twice",
    ),
    "HOLE Infinity in the signed payload": (
        _payload_variant(lambda p: p[:-1] + b',"x":Infinity}'),
        "(3) statement: the payload is ambiguous JSON: Infinity is not a JSON number",
    ),
    "HOLE 1e999 in the signed payload": (
        _payload_variant(lambda p: p[:-1] + b',"x":1e999}'),
        "(3) statement: the payload is ambiguous JSON: the number 1e999 is too large",
    ),
    "HOLE a BOM before the signed payload": (
        _payload_variant(lambda p: codecs.BOM_UTF8 + p),
        "(3) statement: the payload is not UTF-8 JSON without a byte order mark",
    ),
    "HOLE a UTF-16 signed payload": (
        _payload_variant(lambda p: p.decode().encode("utf-16-le")),
        "(3) statement: the payload is not UTF-8 JSON without a byte order mark",
    ),
    "a key twice in a subject's digest (found by counting keys against colons)": (
        _payload_variant(lambda p: p.replace(b'{"sha256":', b'{"sha256":"' + b"0" * 64 + b'","sha256":', 1)),
        "(3) statement: the payload is ambiguous JSON: key 'sha256' is given twice",
    ),
    "a key twice that holds colons and escaped quotes": (
        _payload_variant(lambda p: p[:-1] + b',"x":{"a\\":\\\\b":1,"a\\":\\\\b":2}}'),
        "(3) statement: the payload is ambiguous JSON: key",
    ),
    "colons, quotes and brackets inside strings, no key twice": (
        _payload_variant(lambda p: p[:-1] + b',"x":{"a\\":[{b":"\\\\","c:":"]}\\\\\\"::"}}'),
        "",
    ),
    "deep nesting behind an escaped backslash before a quote": (
        _payload_variant(lambda p: p[:-1] + b',"x":"\\\\",' + b'"y":' + b"[" * 100 + b"]" * 100 + b"}"),
        "(3) statement: the payload is not JSON",
    ),
    "signed payload not UTF-8": (
        _payload_variant(lambda p: p[:-1] + b',"x":"\xff"}'),
        "(3) statement: the payload is not JSON",
    ),
    "a 5000-digit number in the signed payload": (
        _payload_variant(lambda p: p[:-1] + b',"x":' + b"9" * 5000 + b"}"),
        "(3) statement: the payload is not JSON",
    ),
    "a BOM before the envelope (the signed bytes are the same)": (
        _envelope_variant(lambda e, text: "\ufeff" + text),
        "",
    ),
    "a second signature by an untrusted key (one trusted signature suffices)": (
        _untrusted_second_signature,
        "",
    ),
    "only an untrusted key's signature, with the trusted keyid": (
        _only_untrusted_signature,
        "(2) signature: no signature verifies",
    ),
    "URL-safe base64 without padding (the same signed bytes)": (
        _envelope_variant(
            lambda e, text: json.dumps(
                e | {"payload": e["payload"].replace("+", "-").replace("/", "_").rstrip("=")}
            )
        ),
        "",
    ),
    "payloadType in upper case": (
        _envelope_variant(lambda e, text: json.dumps(e | {"payloadType": dsse.PAYLOAD_TYPE.upper()})),
        "(1) envelope: payloadType: got 'APPLICATION/VND.IN-TOTO+JSON'",
    ),
    "payload signed under another payloadType": (
        _type_confusion,
        "(1) envelope: payloadType: got 'application/vnd.in-toto+JSON'",
    ),
    "payload swapped under a valid signature": (
        _envelope_variant(lambda e, text: json.dumps(e | {"payload": _other_payload()})),
        "(2) signature",
    ),
    "subject digest in upper-case hex (the same digest)": (
        _statement_variant(lambda s: s["subject"][0]["digest"].update(sha256=APP_SHA.upper())),
        "",
    ),
    "subject with sha512 only": (
        _statement_variant(lambda s: s["subject"][0].update(digest={"sha512": "0" * 128})),
        "(9) subject: sha256",
    ),
    "the same subject twice with different digests": (
        _statement_variant(
            lambda s: s["subject"].append({"name": "bin/app", "digest": {"sha256": "0" * 64}})
        ),
        "(3) statement: subject 'bin/app' appears more than once",
    ),
    "HOLE a subject named by a number (compared as its text)": (
        _statement_variant(lambda s: s["subject"][0].update(name=123)),
        "(3) statement: subject[0].name is not a non-empty string",
    ),
    "HOLE a subject without a name": (
        _statement_variant(lambda s: s["subject"][0].pop("name")),
        "(3) statement: subject[0].name is not a non-empty string",
    ),
    "no subjects": (
        _statement_variant(lambda s: s.update(subject=[])),
        "(3) statement: subject is missing or empty",
    ),
    "an in-toto v0.1 Statement": (
        _statement_variant(lambda s: s.update(_type="https://in-toto.io/Statement/v0.1")),
        "(3) statement: _type",
    ),
    "serverConfirmed as the string 'true'": (
        _statement_variant(
            lambda s: s["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"].update(
                serverConfirmed="true"
            )
        ),
        '(11) confirmation: serverConfirmed: got "true", expected true',
    ),
}


@pytest.mark.parametrize("attack", ENVELOPE_ATTACKS, ids=list(ENVELOPE_ATTACKS))
def test_envelope_and_json_attacks(signer: LocalSigner, attack: str) -> None:
    make, verdict = ENVELOPE_ATTACKS[attack]
    error = first_error(make(signer), signer)
    assert error.startswith(verdict) if verdict else error == "", error


def _pull_request(ref: str = "refs/pull/7/merge", reason: str = "PullRequest") -> Statement:
    return statement(ref=ref, reason=reason)


def _with(path: str, value: str) -> Callable[[], Statement]:
    def make() -> Statement:
        document = statement()
        *parents, last = path.split(".")
        target: Any = document["predicate"]
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
        return document

    return make


def _with_subject_digest(value: object) -> Callable[[], Statement]:
    def make() -> Statement:
        document = statement()
        document["subject"][0]["digest"]["sha256"] = value
        return document

    return make


WORKFLOW = "buildDefinition.externalParameters.workflow"
SOURCE = "buildDefinition.resolvedDependencies.0.uri"

# (the signed Statement, what the gate expects, the verdict's start: '' = passes, and should)
EXPECTATION_ATTACKS: dict[str, tuple[Callable[[], Statement], Expectations, str]] = {
    "HOLE a pull-request build, no ref expected": (
        _pull_request,
        Expectations(),
        "(7) ref: workflow.ref: got",
    ),
    "HOLE a pull-request build, policy refs refs/**": (
        _pull_request,
        Expectations(refs=("refs/**",)),
        "(7) ref: workflow.ref: got 'refs/pull/7/merge' from a pull-request build",
    ),
    "HOLE a pull-request build on a branch ref (reason PullRequest)": (
        lambda: _pull_request(ref="refs/heads/feature"),
        Expectations(source_ref="refs/heads/**"),
        "(7) ref: workflow.ref: got 'refs/heads/feature' from a pull-request build",
    ),
    "a pull-request build, asked for by --source-ref refs/pull/**": (
        _pull_request,
        Expectations(source_ref="refs/pull/**"),
        "",
    ),
    "a pull-request build against --source-ref refs/heads/*": (
        _pull_request,
        Expectations(source_ref="refs/heads/*"),
        "(7) ref: workflow.ref: got 'refs/pull/7/merge', expected 'refs/heads/*'",
    ),
    **{
        f"ref {why}": (lambda ref=ref: statement(ref=ref), Expectations(source_ref=glob), "(7) ref")
        for why, (ref, glob) in {
            "glob * across a segment": ("refs/heads/release/1.0/evil", "refs/heads/release/*"),
            "glob ? matching /": ("refs/heads/a/b", "refs/heads/a?b"),
            "exact, with a suffix": ("refs/heads/main-evil", "refs/heads/main"),
            "exact, with a trailing newline": ("refs/heads/main\n", "refs/heads/main"),
            "glob under refs/tags with .. segments": ("refs/tags/v1/../../heads/evil", "refs/tags/v*"),
        }.items()
    },
    **{
        f"repository {why}": (
            _with(f"{WORKFLOW}.repository", uri),
            Expectations(source_uri=REPOSITORY),
            "(6) source: workflow.repository",
        )
        for why, uri in {
            "with .git": REPOSITORY + ".git",
            "in upper case": REPOSITORY.upper(),
            "with a trailing slash": REPOSITORY + "/",
            "with %2F": REPOSITORY.replace("/_git/", "%2F_git%2F"),
            "with userinfo": REPOSITORY.replace("https://", "https://evil@"),
            "on another host with the path": REPOSITORY.replace("dev.azure.com", "dev.azure.com.evil.io"),
        }.items()
    },
    "repositories policy: a repository of a similar name": (
        _with(f"{WORKFLOW}.repository", REPOSITORY + "-fork"),
        Expectations(repositories=(REPOSITORY,)),
        "(6) source: workflow.repository: got",
    ),
    "resolvedDependencies[0] from another repository": (
        _with(SOURCE, "git+https://dev.azure.com/evil/web/_git/web@refs/heads/main"),
        Expectations(source_uri=REPOSITORY),
        "(6) source: resolvedDependencies[0].uri",
    ),
    "commit, a short prefix expected": (statement, Expectations(commit=COMMIT[:12]), "(8) commit"),
    "commit expected in upper case (the same commit)": (statement, Expectations(commit=COMMIT.upper()), ""),
    "builder glob * across a folder of the pipeline path": (
        lambda: replace_builder(BUILDER.replace("azure-pipelines.yml", "forks/evil.yml")),
        Expectations(builders=(Builder(BUILDER.replace("azure-pipelines.yml", "*.yml"), 3),)),
        "(5) builder.id",
    ),
    "builder glob @refs/heads/* against a nested branch": (
        lambda: replace_builder(BUILDER.replace("heads/main", "heads/a/b")),
        Expectations(builders=(Builder(BUILDER.replace("heads/main", "heads/*"), 3),)),
        "(5) builder.id",
    ),
    "builder glob [a-z] class": (
        lambda: replace_builder(BUILDER.replace("/web/web/", "/web/w3b/")),
        Expectations(builders=(Builder(BUILDER.replace("/web/web/", "/web/w[a-z]b/"), 3),)),
        "(5) builder.id",
    ),
    "builder id exact, another host": (
        lambda: replace_builder(BUILDER.replace("dev.azure.com", "dev.azure.com.evil.io")),
        Expectations(builder_id=BUILDER),
        "(5) builder.id",
    ),
    "builder id given and a policy's builders: both must match": (
        statement,
        Expectations(builder_id=BUILDER, builders=(Builder(BUILDER + "x", 3),)),
        "(5) builder.id",
    ),
    "HOLE builder glob: a branch named feature/x@refs/heads/main": (
        lambda: statement(ref="refs/heads/feature/x@refs/heads/main"),
        Expectations(builders=(Builder("https://dev.azure.com/contoso/web/**@refs/heads/main", 2),)),
        "(5) builder.id: got 'https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/feature/x@",
    ),
    "builder id whose @ref is not workflow.ref": (
        lambda: replace_builder(BUILDER.replace("@refs/heads/main", "@refs/heads/release")),
        Expectations(builders=(Builder("**@**", 2),)),
        "(5) builder.id: got 'https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/release', "
        "expected it to end with @ and workflow.ref 'refs/heads/main'",
    ),
    "HOLE builder bound to keys, signed by another trusted key": (
        statement,
        Expectations(builders=(Builder(BUILDER, 3, keys=("sha256:" + "0" * 64,)),)),
        f"(5) builder.id: got '{BUILDER}', signed by key sha256:",
    ),
    "builder bound to keys at level 3, another entry at level 2 for this key": (
        statement,
        Expectations(builders=(Builder(BUILDER, 3, keys=("sha256:" + "0" * 64,)), Builder(BUILDER, 2))),
        "",
    ),
    "HOLE ref glob ** across a .. segment": (
        lambda: statement(ref="refs/tags/v1/../../heads/evil"),
        Expectations(source_ref="refs/tags/**"),
        "(7) ref",
    ),
    "HOLE ref glob [!.] matching /": (
        lambda: statement(ref="refs/heads/a/b"),
        Expectations(source_ref="refs/heads/a[!.]b"),
        "(7) ref",
    ),
    "HOLE builder glob [!x] matching /": (
        lambda: replace_builder(BUILDER.replace("/web/web/", "/web/w/b/")),
        Expectations(builders=(Builder(BUILDER.replace("/web/web/", "/web/w[!x]b/"), 2),)),
        "(5) builder.id",
    ),
    "builder id whose pipeline path holds an @ (split before workflow.ref)": (
        lambda: replace_builder(BUILDER.replace("azure-pipelines.yml", "ci/a@b.yml")),
        Expectations(builders=(Builder(BUILDER.replace("azure-pipelines.yml", "ci/*@b.yml"), 2),)),
        "",
    ),
    "builder glob ** for the path, a ref glob that the ref does not match": (
        lambda: statement(ref="refs/heads/mainline"),
        Expectations(builders=(Builder("**@refs/heads/main", 2),)),
        "(5) builder.id: got",
    ),
    "a subject digest that is a list holding the digest": (
        _with_subject_digest([APP_SHA]),
        Expectations(),
        "(9) subject: sha256",
    ),
    "buildType of another builder": (
        _with(
            "buildDefinition.buildType",
            "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
        ),
        Expectations(),
        "(4) buildType",
    ),
}


def replace_builder(builder: str) -> Statement:
    document = statement()
    document["predicate"]["runDetails"]["builder"]["id"] = builder
    return document


@pytest.mark.parametrize("attack", EXPECTATION_ATTACKS, ids=list(EXPECTATION_ATTACKS))
def test_source_ref_and_builder_attacks(signer: LocalSigner, attack: str) -> None:
    make, expected, verdict = EXPECTATION_ATTACKS[attack]
    error = first_error(signed_json(signer, make()), signer, expected)
    assert error.startswith(verdict) if verdict else error == "", error


def _link_out(folder: Path, name: str) -> None:
    outside = folder.parent / f"outside-{name.replace('/', '-')}"
    outside.write_bytes(APP)
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to(outside)


def _hard_link_in(folder: Path) -> None:
    outside = folder.parent / "outside-hard"
    outside.write_bytes(APP)
    (folder / "bin" / "app").unlink()
    os.link(outside, folder / "bin" / "app")


def _write(name: str, data: bytes = b"") -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    return make


NFC = unicodedata.normalize("NFC", "bin/café")

# (what the attacker does to the folder, the subjects signed (None: bin/app alone), the line expected)
FOLDER_ATTACKS: dict[str, tuple[Callable[[Path], None], dict[str, str] | None, str]] = {
    "HOLE a file link out of the folder, to the right content": (
        lambda f: ((f / "bin" / "app").unlink(), _link_out(f, "bin/app")),
        None,
        "FAILED: bin/app: (9) subject: bin/app is a symbolic link out of the folder",
    ),
    "HOLE a link out of the folder in _manifest/, under an allowed name": (
        lambda f: _link_out(f, "_manifest/slsa_1.0/provenance.intoto.jsonl"),
        None,
        "FAILED: _manifest/slsa_1.0/provenance.intoto.jsonl: (9) subject: _manifest/slsa_1.0/provenance"
        ".intoto.jsonl is a symbolic link out of the folder",
    ),
    "a file link inside the folder (its content is checked)": (
        lambda f: (f / "bin" / "copy").symlink_to("app"),
        {"bin/app": APP_SHA, "bin/copy": APP_SHA},
        "PASSED: bin/copy",
    ),
    "a hard link to a file outside (its content is what ships)": (_hard_link_in, None, "PASSED: bin/app"),
    "a folder link inside the folder": (
        lambda f: (f / "lib").symlink_to("bin"),
        None,
        "FAILED: lib: (9) subject: lib is a symbolic link to a folder",
    ),
    "a stray file in _manifest/": (
        _write("_manifest/slsa_1.0/evil.js", b"evil()"),
        None,
        "FAILED: _manifest/slsa_1.0/evil.js: (9) subject: _manifest/ may hold only",
    ),
    "_MANIFEST/ in another case (a case-insensitive deployment target)": (
        _write("_MANIFEST/evil.js", b"evil()"),
        None,
        "FAILED: _MANIFEST/evil.js: (9) subject: no subject is named '_MANIFEST/evil.js'",
    ),
    "an empty file that is not a subject": (
        _write("empty.txt"),
        {"bin/app": APP_SHA, "other-empty.txt": hashlib.sha256(b"").hexdigest()},
        "FAILED: empty.txt: (9) subject: no subject is named 'empty.txt'",
    ),
    "a file swapped for another subject's": (
        _write("bin/app", b"app v0 (vulnerable)\n"),
        {"bin/app": APP_SHA, "bin/old": hashlib.sha256(b"app v0 (vulnerable)\n").hexdigest()},
        "FAILED: bin/app: (9) subject: bin/app sha256 got",
    ),
    **{
        f"the subject named {name!r}": (
            lambda f: None,
            {name: APP_SHA},
            "FAILED: bin/app: (9) subject: no subject is named 'bin/app'",
        )
        for name in ("./bin/app", "bin//app", "/bin/app", "bin\\app", "bin/app/", "BIN/app", "bin/app ")
    },
    "a file named bin\\app beside bin/app (one path on Windows)": (
        _write("bin\\app", b"evil()"),
        None,
        "FAILED: bin\\app: (9) subject: no subject is named 'bin\\\\app'",
    ),
    "a file named BIN/app beside bin/app (one path on a case-insensitive target)": (
        _write("BIN/app", b"evil()"),
        None,
        "FAILED: BIN/app: (9) subject: no subject is named 'BIN/app'",
    ),
    "the subject in NFD, the file in NFC": (
        lambda f: (f / "bin" / "app").rename(f / NFC),
        {unicodedata.normalize("NFD", NFC): APP_SHA},
        f"FAILED: {NFC}: (9) subject: no subject is named {NFC!r}",
    ),
    "HOLE a file name that prints a PASSED line of its own": (
        _write("x\nPASSED: bin/app", b"evil()"),
        None,
        "FAILED: x\\nPASSED: bin/app: (9) subject: no subject is named",
    ),
}


@pytest.mark.parametrize("attack", FOLDER_ATTACKS, ids=list(FOLDER_ATTACKS))
def test_folder_attacks(tmp_path: Path, attack: str) -> None:
    change, subjects, line = FOLDER_ATTACKS[attack]
    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    change(folder)
    document = statement(**(subjects or {"bin/app": APP_SHA}))
    lines = [result.line() for result in check_artifacts(document, folder_artifacts(folder))]
    assert any(text.startswith(line) for text in lines), lines
    assert all(text.startswith("PASSED") for text in lines) == line.startswith("PASSED"), lines


def test_hole_artifacts_given_with_images_are_refused_not_ignored(tmp_path: Path) -> None:
    """--image with --artifact verified the image alone and never looked at the files (exit 0)."""
    from slsa_provenance.errors import InputError
    from slsa_provenance.gate.flow import GateOptions, verify_gate

    image = "127.0.0.1:9/app@sha256:" + "a" * 64
    for extra in ({"artifacts": [tmp_path]}, {"digests": ["sha256:" + "b" * 64]}):
        options = GateOptions(images=[image], keys=["unused.pem"], **extra)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=r"^--artifact and --digest are checked against --provenance"):
            verify_gate(options)


def _bundle_of(envelope_bytes: bytes, signer: LocalSigner) -> bytes:
    from slsa_provenance.signing.bundle import bundle_parts

    return b"".join(bundle_parts(envelope_bytes, signer.keyid))


# (what the folder ships in _manifest/slsa_1.0/, given the verified envelope and another, passes?)
SHIPPED_ATTACKS: dict[str, tuple[Callable[[bytes, bytes, LocalSigner], dict[str, bytes]], bool]] = {
    "the provenance verified, and its bundle": (
        lambda ours, other, s: {
            "provenance.intoto.jsonl": ours + b"\n",
            "provenance.sigstore.json": _bundle_of(ours, s),
        },
        True,
    ),
    "HOLE another build's provenance, shipped unchecked": (
        lambda ours, other, s: {"provenance.intoto.jsonl": other + b"\n"},
        False,
    ),
    "HOLE a bundle of another build's provenance": (
        lambda ours, other, s: {"provenance.sigstore.json": _bundle_of(other, s)},
        False,
    ),
    "HOLE a script under the provenance's name": (
        lambda ours, other, s: {"provenance.intoto.jsonl": b"<script>evil()</script>"},
        False,
    ),
}


@pytest.mark.parametrize("attack", SHIPPED_ATTACKS, ids=list(SHIPPED_ATTACKS))
def test_provenance_shipped_in_the_folder(
    tmp_path: Path, signer: LocalSigner, key_files: dict[str, tuple[Path, Path]], attack: str
) -> None:
    from slsa_provenance.gate.flow import GateOptions, verify_gate

    ship, passes = SHIPPED_ATTACKS[attack]
    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    ours = dsse.Envelope.from_json(signed_json(signer, statement())).to_json()
    other = dsse.Envelope.from_json(signed_json(signer, statement(ref="refs/heads/other"))).to_json()
    for name, data in ship(ours, other, signer).items():
        _write(f"_manifest/slsa_1.0/{name}", data)(folder)
    (tmp_path / "verified.intoto.jsonl").write_bytes(ours)
    options = GateOptions(
        provenance=tmp_path / "verified.intoto.jsonl",
        keys=[str(key_files["ecdsa-p256"][1])],
        artifacts=[folder],
    )
    lines = verify_gate(options).lines()
    assert ("PASSED: bin/app" in lines) and all(line.startswith("PASSED") for line in lines) == passes, lines
    if not passes:
        shipped = next(line for line in lines if line.startswith("FAILED"))
        assert shipped.startswith("FAILED: _manifest/slsa_1.0/provenance."), shipped
        assert shipped.endswith("holds another envelope than the provenance file verified"), shipped


def gate(tmp_path: Path, signer: LocalSigner, document: Statement, **options: Any) -> GateResult:
    """verify_gate of `document`, signed by the trusted key, with `options` (artifacts, vsa, ...)."""
    provenance = tmp_path / "verified.intoto.jsonl"
    if not provenance.exists():
        provenance.write_bytes(dsse.Envelope.from_json(signed_json(signer, document)).to_json())
    options = {"provenance": provenance, "keys": [str(tmp_path / "trusted.pub")], **options}
    (tmp_path / "trusted.pub").write_bytes(public_key_pem(signer.public_key()))
    return verify_gate(GateOptions(**options))


IMAGE = "myacr.azurecr.io/team/app"

# (the files the folder holds, the subjects signed, a line expected, whether everything passes)
COMPLETENESS: dict[str, tuple[dict[str, bytes], dict[str, str], str, bool]] = {
    "HOLE a subject deleted from the folder (a security config, say)": (
        {"bin/app": APP},
        {"bin/app": APP_SHA, "etc/policy.conf": hashlib.sha256(b"deny all\n").hexdigest()},
        "FAILED: etc/policy.conf: (9) subject: etc/policy.conf is missing from",
        False,
    ),
    "HOLE every subject deleted, only the SBOM left": (
        {"_manifest/spdx_2.2/manifest.spdx.json": b"{}"},
        {"bin/app": APP_SHA},
        "FAILED: bin/app: (9) subject: bin/app is missing from",
        False,
    ),
    "an image subject beside the files is not looked for in the folder": (
        {"bin/app": APP},
        {"bin/app": APP_SHA, IMAGE: "c" * 64},
        "PASSED: bin/app",
        True,
    ),
    "HOLE a subject named like an image, not recorded as one, is a file that must be there": (
        {"bin/app": APP},
        {"bin/app": APP_SHA, "cdn.example.com/app.js": "c" * 64},
        "FAILED: cdn.example.com/app.js: (9) subject: cdn.example.com/app.js is missing from",
        False,
    ),
}


@pytest.mark.parametrize("attack", COMPLETENESS, ids=list(COMPLETENESS))
def test_a_folder_must_hold_every_file_subject(tmp_path: Path, signer: LocalSigner, attack: str) -> None:
    files, subjects, line, passes = COMPLETENESS[attack]
    folder = tmp_path / "drop"
    for name, data in files.items():
        _write(name, data)(folder)
    byproducts = [
        ResourceDescriptor(
            name=n, digest={"sha256": hashlib.sha256(d).hexdigest()}, media_type=SPDX_MEDIA_TYPE
        )
        for n, d in files.items()
        if n in SBOM_NAMES
    ]
    document = statement(**subjects)
    document["predicate"]["runDetails"]["byproducts"] = [b.to_json() for b in byproducts]
    if IMAGE in subjects:  # as generate records an image it attests: signed, not guessed from the name
        document["predicate"]["buildDefinition"]["internalParameters"]["images"] = [IMAGE]
    result = gate(tmp_path, signer, document, artifacts=[folder])
    assert any(text.startswith(line) for text in result.lines()), result.lines()
    assert result.passed == passes, result.lines()


REAL_SBOMS = {
    "sbom-tool's sample, sidecar matching": ("sbom-tool/samples/_manifest/spdx_2.2", ""),
    "sbom-tool 1.5.1, a final newline added after (the sidecar no longer matches)": (
        "sbom/sbom-tool-1.5.1-source-drop/_manifest/spdx_2.2",
        "(10) sbom: _manifest/spdx_2.2/manifest.spdx.json.sha256 does not match "
        "_manifest/spdx_2.2/manifest.spdx.json: sha256 got 6ca7a68b",
    ),
    "the manifest task's UTF-16LE sidecar, the SBOM reformatted after": (
        "sbom/ado-manifest-task-2.1.14-repo-drop/_manifest/spdx_2.2",
        "(10) sbom: _manifest/spdx_2.2/manifest.spdx.json.sha256 does not match "
        "_manifest/spdx_2.2/manifest.spdx.json: sha256 got e73bd577",
    ),
}


@pytest.mark.parametrize("case", REAL_SBOMS, ids=list(REAL_SBOMS))
def test_hole_sidecars_must_match_the_sbom_beside_them(
    tmp_path: Path, signer: LocalSigner, case: str
) -> None:
    """The gate allowed any `.sha256` in `_manifest/` and never read it."""
    source, error = REAL_SBOMS[case]
    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    for name in ("manifest.spdx.json", "manifest.spdx.json.sha256"):
        data = shared_ref(f"{source}/{name}").read_bytes()
        _write(f"_manifest/spdx_2.2/{name}", data)(folder)
    sbom = (folder / SBOM_NAMES[0]).read_bytes()
    document = statement()
    document["predicate"]["runDetails"]["byproducts"] = [
        {
            "name": SBOM_NAMES[0],
            "digest": {"sha256": hashlib.sha256(sbom).hexdigest()},
            "mediaType": SPDX_MEDIA_TYPE,
        }
    ]
    result = gate(tmp_path, signer, document, artifacts=[folder])
    failed = [line for line in result.lines() if line.startswith("FAILED")]
    if not error:
        assert result.passed, result.lines()
    else:
        assert failed == [f"FAILED: {SBOM_NAMES[0]}.sha256: {failed[0].split(': ', 2)[2]}"], failed
        assert failed[0].split(": ", 2)[2].startswith(error), failed


@pytest.mark.parametrize(
    ("sidecar", "error"),
    [
        (b"not a digest", "does not hold a SHA-256 digest"),
        (None, "describes _manifest/spdx_2.2/manifest.spdx.json, which is not there"),
    ],
)
def test_a_sidecar_without_a_digest_or_without_its_sbom_is_refused(
    tmp_path: Path, signer: LocalSigner, sidecar: bytes | None, error: str
) -> None:
    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    _write(f"{SBOM_NAMES[0]}.sha256", sidecar or b"a" * 64)(folder)
    if sidecar is not None:
        _write(SBOM_NAMES[0], b"{}")(folder)
    result = gate(tmp_path, signer, statement(), artifacts=[folder])
    assert not result.passed
    assert any(
        error in line for line in result.lines() if line.startswith(f"FAILED: {SBOM_NAMES[0]}.sha256")
    ), result.lines()


def _vsa_at(name: str) -> Callable[[Path], Path]:
    return lambda tmp: tmp / name


# Where --vsa points (given the test's folder); each is an input the gate reads, refused with exit 2,
# and left as it was.
VSA_OVER_INPUTS: dict[str, Callable[[Path], Path]] = {
    "HOLE the provenance": _vsa_at("verified.intoto.jsonl"),
    "HOLE the trusted key": _vsa_at("trusted.pub"),
    "HOLE the summary signer's private key": _vsa_at("vsa.key"),
    "HOLE the policy": _vsa_at("policy.yml"),
    "HOLE the SBOM given": _vsa_at("sbom.json"),
    "HOLE an artifact file": _vsa_at("app"),
    "HOLE a file inside an artifact folder": _vsa_at("drop/bin/app"),
    "HOLE a new file inside an artifact folder": _vsa_at("drop/vsa.intoto.jsonl"),
    "HOLE the provenance by another path": lambda tmp: tmp / "drop" / ".." / "verified.intoto.jsonl",
    "HOLE the provenance by a hard link": lambda tmp: (
        os.link(tmp / "verified.intoto.jsonl", tmp / "hard"),
        tmp / "hard",
    )[1],
    "HOLE a file that is not a summary (a stranger's)": lambda tmp: (
        (tmp / "notes.txt").write_text("keep me"),
        tmp / "notes.txt",
    )[1],
    "a symbolic link to a new file": lambda tmp: ((tmp / "link").symlink_to(tmp / "new"), tmp / "link")[1],
    "a new file through a folder link into an artifact folder": lambda tmp: (
        (tmp / "out").symlink_to(tmp / "drop" / "bin"),
        tmp / "out" / "vsa.intoto.jsonl",
    )[1],
    "the policy's key, named only in the policy": _vsa_at("policy-key.pub"),
}


@pytest.mark.parametrize("target", VSA_OVER_INPUTS, ids=list(VSA_OVER_INPUTS))
def test_the_summary_never_overwrites_an_input(
    tmp_path: Path, signer: LocalSigner, key_files: dict[str, tuple[Path, Path]], target: str
) -> None:
    from slsa_provenance.errors import InputError

    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    _write("app", APP)(tmp_path)
    _write("sbom.json", b"{}")(tmp_path)
    _write("vsa.key", key_files["ed25519"][0].read_bytes())(tmp_path)
    (tmp_path / "trusted.pub").write_bytes(public_key_pem(signer.public_key()))
    (tmp_path / "policy-key.pub").write_bytes(public_key_pem(signer.public_key()))
    (tmp_path / "policy.yml").write_text(
        "trustedKeys: [trusted.pub, policy-key.pub]\nallowUnconfirmed: false\n"
    )
    gate(tmp_path, signer, statement(), artifacts=[folder])  # writes the provenance
    vsa = VSA_OVER_INPUTS[target](tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match=r"^--vsa ") as refused:
        gate(
            tmp_path,
            signer,
            statement(),
            artifacts=[folder, tmp_path / "app"],
            sbom=tmp_path / "sbom.json",
            policy=tmp_path / "policy.yml",
            vsa=vsa,
            vsa_signer=f"file:{tmp_path / 'vsa.key'}",
        )
    assert refused.value.exit_code == 2 and refused.value.remedy
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_only_an_earlier_summary_is_removed_and_a_new_one_lands_whole(
    tmp_path: Path, signer: LocalSigner, key_files: dict[str, tuple[Path, Path]]
) -> None:
    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    vsa = tmp_path / "out" / "vsa.intoto.jsonl"
    options = {"artifacts": [folder], "vsa": vsa, "vsa_signer": f"file:{key_files['ed25519'][0]}"}
    assert gate(tmp_path, signer, statement(), **options).passed and vsa.is_file()
    earlier = vsa.read_bytes()
    _write("bin/app", b"tampered")(folder)
    assert not gate(tmp_path, signer, statement(), **options).passed
    assert not vsa.exists(), "the earlier summary would stand for this failed run"
    _write("bin/app", APP)(folder)
    vsa.write_bytes(earlier)
    assert gate(tmp_path, signer, statement(), **options).passed
    assert [p.name for p in vsa.parent.iterdir()] == ["vsa.intoto.jsonl"]  # no temporary left


def _provenance_file(tmp_path: Path, signer: LocalSigner, document: Statement, keyid: str = "") -> Path:
    signed = envelope(signer, canonical_json(document))
    if keyid:
        signed["signatures"][0]["keyid"] = keyid  # not signed: anyone may write anything there
    (tmp_path / "trusted.pub").write_bytes(public_key_pem(signer.public_key()))
    path = tmp_path / "verified.intoto.jsonl"
    path.write_text(json.dumps(signed))
    return path


def test_hole_an_abbreviated_flag_is_refused_not_completed(tmp_path: Path, signer: LocalSigner) -> None:
    """`--allow` was taken as --allow-unconfirmed: a typo widened the gate."""
    provenance = _provenance_file(tmp_path, signer, statement())
    _write("app", APP)(tmp_path)
    base = (
        "verify",
        "--provenance",
        provenance,
        "--key",
        tmp_path / "trusted.pub",
        "--artifact",
        tmp_path / "app",
    )
    assert run_cli(*base).returncode == 0
    for abbreviated in (["--allow"], ["--prov", provenance], ["--artifac", tmp_path / "app"]):
        result = run_cli(*base, *abbreviated)
        assert result.returncode == 2 and f"unrecognized option {abbreviated[0]}:" in result.stderr, result


VSO = "##vso[task.setvariable variable=DEPLOY_APPROVED]yes"


def test_hole_names_printed_by_the_cli_cannot_become_logging_commands(
    tmp_path: Path, signer: LocalSigner
) -> None:
    folder = tmp_path / "drop"
    _write(f"bin/x{VSO}", APP)(folder)
    provenance = _provenance_file(tmp_path, signer, statement(**{f"bin/x{VSO}": APP_SHA}))
    key = tmp_path / "trusted.pub"
    runs = {
        "a file name": run_cli("verify", "--provenance", provenance, "--key", key, "--artifact", folder),
        "a missing artifact's name": run_cli(
            "verify", "--provenance", provenance, "--key", key, "--artifact", tmp_path / VSO
        ),
        "an unknown flag": run_cli("verify", f"--{VSO}"),
        "a key file's name": run_cli(
            "verify", "--provenance", provenance, "--key", tmp_path / VSO, "--digest", "x"
        ),
    }
    assert runs["a file name"].returncode == 0, runs["a file name"]
    assert "PASSED: bin/x##vso\u200b[task.setvariable" in runs["a file name"].stdout
    for what, result in runs.items():
        lines = (result.stdout + result.stderr).splitlines()
        assert lines and not any("##vso[" in line for line in lines), (what, lines)


def test_hole_the_key_id_output_is_the_trusted_keys_never_the_envelopes(
    tmp_path: Path, signer: LocalSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    """The envelope's keyid is not signed: the step output and the CLI named whatever it said."""
    from slsa_provenance import step
    from slsa_provenance.signing.keys import fingerprint

    forged = "https://prod.vault.azure.net/keys/release-signing/0123456789abcdef"
    provenance = _provenance_file(tmp_path, signer, statement(), keyid=forged)
    _write("app", APP)(tmp_path)
    step.main(
        step_env(
            tmp_path / "job",
            command="verify",
            provenanceFile=str(provenance),
            trustedKeys=str(tmp_path / "trusted.pub"),
            artifacts=str(tmp_path / "app"),
        )
    )
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]" in out, out
    trusted = fingerprint(signer.public_key())
    assert f"##vso[task.setvariable variable=keyId]{trusted}\n" in out
    assert forged not in out


# A policy file's text, and the start of the problem the loader names (exit 2, nothing verified).
POLICY_ATTACKS = {
    "HOLE level 3.0 (a float JSON Schema takes for 3)": (
        f"trustedKeys: [k.pub]\nbuilders: [{{id: '{BUILDER}', level: 3.0, keys: [k.pub]}}]\n",
        "line 2: builders[0].level: 3.0 is not an integer 1 to 3",
    ),
    "HOLE level 3 without keys (any pipeline with a trusted key could claim it)": (
        f"trustedKeys: [k.pub]\nbuilders: [{{id: '{BUILDER}', level: 3}}]\n",
        "line 2: builders[0]: 'keys' is a required property",
    ),
    "HOLE a builder id without @REF": (
        "trustedKeys: [k.pub]\nbuilders: [{id: 'https://dev.azure.com/contoso/**', level: 2}]\n",
        "line 2: builders[0].id: 'https://dev.azure.com/contoso/**' has no @REF",
    ),
    "level true": (
        f"trustedKeys: [k.pub]\nbuilders: [{{id: '{BUILDER}', level: true}}]\n",
        "line 2: builders[0].level: True is not of type 'integer'",
    ),
}


@pytest.mark.parametrize("attack", POLICY_ATTACKS, ids=list(POLICY_ATTACKS))
def test_policy_attacks(tmp_path: Path, attack: str) -> None:
    from slsa_provenance.errors import InputError
    from slsa_provenance.gate.policy import load_policy

    text, problem = POLICY_ATTACKS[attack]
    (tmp_path / "policy.yml").write_text(text)
    with pytest.raises(InputError) as refused:
        load_policy(tmp_path / "policy.yml")
    assert problem in refused.value.message and refused.value.exit_code == 2, refused.value.message


def test_hole_build_type_cannot_widen_a_policy_without_one(tmp_path: Path, signer: LocalSigner) -> None:
    """A policy without buildType expects the Azure Pipelines one; --build-type replaced it."""
    from slsa_provenance.errors import InputError

    (tmp_path / "policy.yml").write_text("trustedKeys: [trusted.pub]\n")
    document = statement()
    document["predicate"]["buildDefinition"]["buildType"] = "https://evil.example/buildtype"
    with pytest.raises(InputError, match="contradicts the buildType"):
        gate(
            tmp_path,
            signer,
            document,
            digests=[f"sha256:{APP_SHA}"],
            policy=tmp_path / "policy.yml",
            build_type="https://evil.example/buildtype",
        )


def _policy_digest(tmp_path: Path, signer: LocalSigner, key: Path, **options: Any) -> str:
    from slsa_provenance.gate.vsa import PREDICATE_TYPE

    shutil.copy(key, tmp_path / "trusted.pub")
    vsa = tmp_path / "vsa.intoto.jsonl"
    provenance = tmp_path / "verified.intoto.jsonl"
    provenance.write_bytes(dsse.Envelope.from_json(signed_json(signer, statement())).to_json())
    options = {"provenance": provenance, "digests": [f"sha256:{APP_SHA}"], "vsa": vsa, **options}
    assert verify_gate(GateOptions(vsa_signer=f"file:{key.with_suffix('.key')}", **options)).passed
    payload = json.loads(dsse.Envelope.from_json(vsa.read_bytes()).payload)
    assert payload["predicateType"] == PREDICATE_TYPE
    return str(payload["predicate"]["policy"]["digest"]["sha256"])


def test_hole_the_summary_policy_digest_covers_the_trusted_keys(
    tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """The same policy text naming keys/trusted.pub, or the same flags, with another key in that
    file gave the same policy digest: the summary could not tell which keys decided the verdict."""
    digests = {}
    for name in ("ecdsa-p256", "ed25519"):
        private, public = key_files[name]
        signer = LocalSigner.from_file(str(private))
        (tmp_path / "policy.yml").write_text("trustedKeys: [trusted.pub]\n")
        with_policy = _policy_digest(tmp_path, signer, public, policy=tmp_path / "policy.yml")
        flags_only = _policy_digest(tmp_path, signer, public, keys=[str(tmp_path / "trusted.pub")])
        digests[name] = (with_policy, flags_only)
    assert digests["ecdsa-p256"][0] != digests["ed25519"][0]
    assert digests["ecdsa-p256"][1] != digests["ed25519"][1]


# Images, against the real registry (tests/registry.py): which attestations count for which image.
def _registry_stack(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """The Azure stack and the real registry (test_registry's fixtures), asked for by name."""
    return request.getfixturevalue("acr"), request.getfixturevalue("registry")


def _attach_by_hand(server: Any, repo: str, digest: str, bundle: bytes, *, typed: bool = True) -> None:
    """What a writer with push rights (or a mirroring tool) leaves: the bundle, its referrer manifest
    for `digest`, and the `sha256-<hex>` tag index; `typed=False` drops the entry's artifactType as
    skopeo copy --all does."""
    from registry import OCI_INDEX, OCI_MANIFEST
    from slsa_provenance.registry.attach import index_entry, referrer_manifest
    from slsa_provenance.registry.reference import Descriptor

    server.push_blob(repo, b"{}")
    layer = server.push_blob(repo, bundle)
    size = len(server.get(repo, f"manifests/{digest}").content)
    referrer = referrer_manifest(
        Descriptor(OCI_MANIFEST, digest, size),
        Descriptor("application/vnd.dev.sigstore.bundle.v0.3+json", layer["digest"], layer["size"]),
        "2026-12-03T12:00:00Z",
    )
    referrer_digest = server.put_manifest(repo, "attestation", referrer, OCI_MANIFEST)
    entry = index_entry(Descriptor(OCI_MANIFEST, referrer_digest, len(referrer)), "2026-12-03T12:00:00Z")
    if not typed:
        del entry["artifactType"]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    server.put_manifest(repo, f"sha256-{digest.removeprefix('sha256:')}", index, OCI_INDEX)


def test_hole_a_drop_file_holding_the_manifest_bytes_does_not_attest_the_image(
    request: pytest.FixtureRequest, key_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    azure, server = _registry_stack(request)
    from test_registry import generate, repository, verify

    private, public = key_files["ecdsa-p256"]
    repo = repository()
    digest = server.push_image(repo)
    _write("manifest.json", server.get(repo, f"manifests/{digest}").content)(tmp_path / "drop")
    code, _, err = generate(azure, private, tmp_path / "out", "--drop", str(tmp_path / "drop"))
    assert code == 0, err
    _attach_by_hand(server, repo, digest, (tmp_path / "out" / "provenance.sigstore.json").read_bytes())
    code, out, err = verify(azure, public, f"{server.host}/{repo}@{digest}")
    assert code == 1, out + err
    assert f"(9) subject: no subject is named '{server.host}/{repo}'" in out, out


def test_hole_another_repositorys_attestation_does_not_count(
    request: pytest.FixtureRequest, key_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """The same manifest pushed to a second repository, the first one's bundle attached there."""
    azure, server = _registry_stack(request)
    from test_registry import attach_new_image, repository, verify

    private, public = key_files["ecdsa-p256"]
    repo, digest, (code, _, err) = attach_new_image(azure, server, private, tmp_path)
    assert code == 0, err
    other = repository()
    manifest = server.get(repo, f"manifests/{digest}").content
    for blob in [json.loads(manifest)["config"], *json.loads(manifest)["layers"]]:
        server.push_blob(other, server.get(repo, f"blobs/{blob['digest']}").content)
    assert server.put_manifest(other, "v1", manifest, json.loads(manifest)["mediaType"]) == digest
    _attach_by_hand(server, other, digest, (tmp_path / "out" / "provenance.sigstore.json").read_bytes())
    code, out, err = verify(azure, public, f"{server.host}/{other}@{digest}")
    assert code == 1 and f"(9) subject: no subject is named '{server.host}/{other}'" in out, out + err
    code, out, err = verify(azure, public, f"{server.host}/{repo}@{digest}")
    assert code == 0, out + err


def test_hole_a_mirrored_tag_index_without_artifact_type_is_still_read(
    request: pytest.FixtureRequest, key_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """skopeo copy --all rewrites the sha256-<hex> index without the entries' artifactType; the
    gate skipped every such entry and found no attestation."""
    azure, server = _registry_stack(request)
    from test_registry import generate, repository, verify

    private, public = key_files["ecdsa-p256"]
    repo = repository()
    digest = server.push_image(repo)
    image = f"{server.host}/{repo}@{digest}"
    code, _, err = generate(azure, private, tmp_path / "out", "--image", image)
    assert code == 0, err
    bundle = (tmp_path / "out" / "provenance.sigstore.json").read_bytes()
    _attach_by_hand(server, repo, digest, bundle, typed=False)
    code, out, err = verify(azure, public, image)
    assert code == 0, out + err
    assert f"PASSED: {image} (referrer sha256:" in out


@pytest.mark.skipif(
    shutil.which("skopeo") is None, reason="skopeo is not installed (.ci/run installs Debian's)"
)
def test_a_skopeo_mirror_s_attestation_is_found_and_held_to_the_name_it_was_signed_for(
    request: pytest.FixtureRequest, key_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """Real skopeo (copy --all of the image and of its sha256-<hex> tag index, as a mirror is made)
    drops the index entry's artifactType. The gate still finds the attestation in the mirror, and
    refuses it there by name: the provenance was signed for the original repository."""
    import subprocess

    azure, server = _registry_stack(request)
    from test_registry import generate, repository, verify

    private, public = key_files["ecdsa-p256"]
    original, mirror = repository(), repository()
    digest = server.push_image(original)
    code, _, err = generate(
        azure, private, tmp_path / "out", "--image", f"{server.host}/{original}@{digest}", "--attach"
    )
    assert code == 0, err
    server.tokens.logins["mirroring"] = "mirror-password"
    certificates = (
        tmp_path / "certs"
    )  # skopeo's --cert-dir for the registry, SSL_CERT_FILE for its token service
    certificates.mkdir()
    shutil.copy(request.getfixturevalue("certificate_authority").ca_pem, certificates / "ca.crt")
    tag = "sha256-" + digest.removeprefix("sha256:")
    for reference in (f"@{digest}", f":{tag}"):
        copied = subprocess.run(
            [
                "skopeo",
                "copy",
                "--all",
                "--src-creds",
                "mirroring:mirror-password",
                "--dest-creds",
                "mirroring:mirror-password",
                "--src-cert-dir",
                str(certificates),
                "--dest-cert-dir",
                str(certificates),
                f"docker://{server.host}/{original}{reference}",
                f"docker://{server.host}/{mirror}{reference}",
            ],
            env={**os.environ, "SSL_CERT_FILE": str(certificates / "ca.crt")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert copied.returncode == 0, copied.stderr
    entries = server.get(mirror, f"manifests/{tag}").json()["manifests"]
    assert len(entries) == 1 and "artifactType" not in entries[0]  # what the gate must read past
    code, out, err = verify(azure, public, f"{server.host}/{mirror}@{digest}")
    assert code == 1, out + err
    assert (
        f"FAILED: {server.host}/{mirror}@{digest}: referrer {entries[0]['digest']}: (9) subject: no subject is "
        f"named '{server.host}/{mirror}'"
    ) in out.splitlines()


def test_a_tag_is_verified_as_the_digest_it_resolved_to(
    request: pytest.FixtureRequest, key_files: dict[str, tuple[Path, Path]], tmp_path: Path, capsys: Any
) -> None:
    """The step's verifiedImages output and the CLI's line name the digest verified, not the tag."""
    azure, server = _registry_stack(request)
    from slsa_provenance import step
    from test_registry import generate, repository, verify

    private, public = key_files["ecdsa-p256"]
    repo = repository()
    digest = server.push_image(repo, "release")
    code, _, err = generate(
        azure, private, tmp_path / "out", "--image", f"{server.host}/{repo}:release", "--attach"
    )
    assert code == 0, err
    code, out, err = verify(azure, public, f"{server.host}/{repo}:release")
    assert code == 0 and f"verified image: {server.host}/{repo}@{digest}\n" in err, out + err
    inputs = {"verifyImages": f"{server.host}/{repo}:release", "trustedKeys": str(public)}
    step.main({**step_env(tmp_path / "job", command="verify", **inputs), **azure.env})
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]" in out, out
    assert f"##vso[task.setvariable variable=verifiedImages]{server.host}/{repo}@{digest}\n" in out


def test_a_large_earlier_summary_is_still_known_as_one(
    tmp_path: Path, signer: LocalSigner, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """A summary of 100,000 subjects is megabytes: it must still be recognised, and replaced."""
    from slsa_provenance.gate.vsa import PREDICATE_TYPE

    _write("app", APP)(tmp_path)
    large = {"predicateType": PREDICATE_TYPE, "subject": [{"name": f"f{i}"} for i in range(60_000)]}
    vsa = tmp_path / "vsa.intoto.jsonl"
    vsa.write_bytes(dsse.sign(canonical_json(large), dsse.PAYLOAD_TYPE, signer).to_json())
    assert vsa.stat().st_size > 1 << 20
    options = {"digests": [f"sha256:{APP_SHA}"], "vsa": vsa, "vsa_signer": f"file:{key_files['ed25519'][0]}"}
    assert gate(tmp_path, signer, statement(), **options).passed
    assert len(vsa.read_bytes()) < 1 << 20


def test_hole_a_deleted_folder_named_like_a_registry_is_still_missed(
    tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """`cdn.example.com/app.js` reads as an image name; with its whole folder deleted the gate took
    it for an image subject and passed. Only the images generate records are images: it is missing."""
    from spdx import write_sbom

    from conftest import OUTPUT, generate_cli

    private, public = key_files["ecdsa-p256"]
    drop = tmp_path / "drop"
    _write("bin/app", APP)(drop)
    _write("cdn.example.com/app.js", b"security()\n")(drop)
    write_sbom(drop, "drop")
    assert generate_cli(drop, private).returncode == 0
    shutil.rmtree(drop / "cdn.example.com")
    (drop / OUTPUT).rename(tmp_path / "provenance.intoto.jsonl")
    result = verify_gate(
        GateOptions(
            provenance=tmp_path / "provenance.intoto.jsonl",
            keys=[str(public)],
            artifacts=[drop],
            allow_unconfirmed=True,
        )
    )
    assert not result.passed, result.lines()
    assert any(
        line.startswith("FAILED: cdn.example.com/app.js: (9) subject: cdn.example.com/app.js is missing")
        for line in result.lines()
    ), result.lines()


def test_hole_an_unrecorded_manifest_json_is_not_shipped_unchecked(
    tmp_path: Path, signer: LocalSigner
) -> None:
    """`_manifest/manifest.json` (and a sidecar written to match it) passed whatever it held: the
    provenance records no digest for it, so a deployment shipped a file nobody vouched for."""
    folder = tmp_path / "drop"
    evil = b'{"Outputs": []}<script>evil()</script>'
    _write("bin/app", APP)(folder)
    _write("_manifest/manifest.json", evil)(folder)
    _write("_manifest/manifest.json.sha256", hashlib.sha256(evil).hexdigest().encode())(folder)
    result = gate(tmp_path, signer, statement(), artifacts=[folder])
    assert not result.passed, result.lines()
    assert "FAILED: _manifest/manifest.json: (9) subject: _manifest/ may hold only" in "\n".join(
        result.lines()
    )


def test_hole_the_tab_never_shows_a_failed_signature_as_passed(
    tmp_path: Path, signer: LocalSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed by an untrusted key, with a folder whose sbom-tool sidecar was refused (check 10): the
    Provenance tab's summary took that refusal for the check that stopped verification and showed
    (1)-(8) as passed, the signature included."""
    from slsa_provenance import run_summary
    from slsa_provenance.azure.agent import AgentRun

    folder = tmp_path / "drop"
    _write("bin/app", APP)(folder)
    _write(f"{SBOM_NAMES[0]}.sha256", b"0" * 64)(folder)  # its SBOM is not there: refused by name
    stranger = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "stranger.pub").write_bytes(public_key_pem(stranger.public_key()))
    provenance = tmp_path / "verified.intoto.jsonl"
    provenance.write_bytes(dsse.Envelope.from_json(signed_json(signer, statement())).to_json())
    options = GateOptions(provenance=provenance, keys=[str(tmp_path / "stranger.pub")], artifacts=[folder])
    result = verify_gate(options)
    assert not result.passed
    run = AgentRun.from_environment({"AGENT_TEMPDIRECTORY": str(tmp_path)})
    run_summary.attach_verify(run, options, result)
    path = capsys.readouterr().out.strip().rsplit("]", 1)[1]
    statuses = {c["number"]: c["status"] for c in json.loads(Path(path).read_text())["checks"]}
    assert statuses[1] == "passed" and statuses[2] == "failed", statuses
    assert all(statuses[n] == "not reached" for n in range(3, 12)), statuses


@pytest.mark.parametrize(
    ("ref", "glob"),
    [
        ("refs/tags/../heads/evil", "refs/tags/*/**"),
        ("refs/tags/../heads/evil", "refs/tags/?*/heads/*"),
        ("refs/tags/../heads/evil", "refs/tags/[.][.]/heads/*"),
    ],
)
def test_hole_no_wildcard_matches_a_dot_dot_segment(signer: LocalSigner, ref: str, glob: str) -> None:
    """`**` was kept from `..` segments, but `*`, `?` and classes matched one: `refs/tags/*/**`
    reached `refs/tags/../heads/evil`, a branch, where only tags were meant."""
    error = first_error(signed_json(signer, statement(ref=ref)), signer, Expectations(source_ref=glob))
    assert error.startswith("(7) ref: workflow.ref: got"), error
    policy = Expectations(refs=(glob,))
    assert first_error(signed_json(signer, statement(ref=ref)), signer, policy).startswith("(7) ref"), glob


def test_hole_a_pull_request_ref_flag_cannot_widen_a_policy(tmp_path: Path, signer: LocalSigner) -> None:
    """A policy without refs accepts any ref but a pull request's; `--source-ref refs/pull/**` turned
    that into accepting a pull-request build (exit 0): a flag widened the reviewed policy."""
    from slsa_provenance.errors import InputError

    (tmp_path / "app").write_bytes(APP)

    def verify(policy: str, source_ref: str) -> GateResult:
        (tmp_path / "policy.yml").write_text(f"trustedKeys: [trusted.pub]\n{policy}")
        options = {
            "policy": tmp_path / "policy.yml",
            "source_ref": source_ref,
            "artifacts": [tmp_path / "app"],
        }
        return gate(tmp_path, signer, _pull_request(), keys=[], **options)

    with pytest.raises(InputError, match=r"^accepting pull-request builds .* would widen policy"):
        verify("", "refs/pull/**")
    passed = verify("refs: ['refs/pull/**']\n", "refs/pull/7/*")
    assert passed.passed, passed.lines()


def test_hole_an_option_given_twice_is_refused_not_replaced(tmp_path: Path, signer: LocalSigner) -> None:
    """argparse kept the last of `--policy strict.yml ... --policy loose.yml` (or of --source-ref):
    arguments a template appends replaced the reviewed ones, and a branch build passed (exit 0)."""
    provenance = _provenance_file(tmp_path, signer, statement())
    _write("app", APP)(tmp_path)
    (tmp_path / "strict.yml").write_text("trustedKeys: [trusted.pub]\nrefs: ['refs/tags/v*']\n")
    (tmp_path / "loose.yml").write_text("trustedKeys: [trusted.pub]\n")
    base = ("verify", "--provenance", provenance, "--artifact", tmp_path / "app")
    assert run_cli(*base, "--policy", tmp_path / "strict.yml").returncode == 1
    for name, twice in (
        ("--policy", ["--policy", tmp_path / "strict.yml", "--policy", tmp_path / "loose.yml"]),
        ("--source-ref", ["--policy", tmp_path / "strict.yml", "--source-ref", "x", "--source-ref=refs/**"]),
    ):
        result = run_cli(*base, *twice)
        assert result.returncode == 2 and f"option {name} is given twice" in result.stderr, result


def test_hole_a_summary_never_lands_in_an_artifact_folder_by_another_name(
    tmp_path: Path, signer: LocalSigner, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """The folder compared by its resolved path only: another name of the same folder (a bind mount
    here; `DROP/` for `drop/` on a case-insensitive macOS volume) let the summary land inside it."""
    import subprocess

    from slsa_provenance.errors import InputError

    folder, alias = tmp_path / "drop", tmp_path / "alias"
    _write("bin/app", APP)(folder)
    alias.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(alias)], capture_output=True).returncode:
        pytest.skip("needs a bind mount (root) for a second name of a folder")
    try:
        with pytest.raises(InputError, match=r"^--vsa .* is inside the artifact"):
            options = {
                "vsa": alias / "bin" / "vsa.intoto.jsonl",
                "vsa_signer": f"file:{key_files['ed25519'][0]}",
            }
            gate(tmp_path, signer, statement(), artifacts=[folder], **options)
        assert sorted(p.name for p in (folder / "bin").iterdir()) == ["app"]
    finally:
        subprocess.run(["umount", str(alias)], check=True)


@pytest.mark.parametrize(
    "name",
    [b"\\ud800", b"\\udcff", b"\\udc00\\ud800", b"\\ud83d\\\\\\ude00", b'\\ud83d\\"\\ude00', b"\xed\xa0\x80"],
    ids=[
        "a lone high surrogate escape",
        "a lone low one",
        "a pair reversed",
        "a pair split by an escaped backslash",
        "a pair split by an escaped quote",
        "a surrogate encoded as bytes",
    ],
)
def test_hole_a_lone_surrogate_is_ambiguous_json(signer: LocalSigner, name: bytes) -> None:
    """Python keeps a lone surrogate (`\\udcff` even names a Linux file of the byte 0xff), Go and
    others read U+FFFD or refuse: a subject that verifiers read differently passed strict parsing."""
    make = _payload_variant(lambda payload: payload.replace(b'"bin/app"', b'"bin/app' + name + b'"'))
    error = first_error(make(signer), signer)
    assert error.startswith("(3) statement: the payload is ambiguous JSON"), error
    pair = _payload_variant(lambda payload: payload.replace(b'"bin/app"', b'"bin/\\ud83d\\ude00"'))
    assert first_error(pair(signer), signer) == ""  # a pair is one character, read alike by all


def test_hole_the_tab_gives_an_image_gate_its_lowest_level(
    tmp_path: Path, signer: LocalSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two images passed, one earning level 3 and one level 2: the summary attestation says level 2
    (the lowest), the Provenance tab's summary said 3, the first image's."""
    from slsa_provenance import run_summary
    from slsa_provenance.azure.agent import AgentRun
    from slsa_provenance.gate.checks import Report
    from slsa_provenance.gate.images import Attestation, ImageReport
    from slsa_provenance.registry.reference import Descriptor, Image, ImageReference

    def passed(repository: str, level: int) -> ImageReport:
        image = Image(ImageReference("myacr.azurecr.io", repository), Descriptor("", "sha256:" + "a" * 64, 1))
        report = Report("sha256:" + "b" * 64, [], level, statement())
        return ImageReport(image, [Attestation("referrer sha256:c", keyid=report.keyid, report=report)])

    result = GateResult(None, [passed("team/api", 3), passed("team/web", 2)])
    options = GateOptions(images=["myacr.azurecr.io/team/api:1", "myacr.azurecr.io/team/web:1"])
    run_summary.attach_verify(
        AgentRun.from_environment({"AGENT_TEMPDIRECTORY": str(tmp_path)}), options, result
    )
    path = capsys.readouterr().out.strip().rsplit("]", 1)[1]
    summary = json.loads(Path(path).read_text())
    assert (summary["verdict"], summary["level"]) == ("PASSED", 2), summary["level"]


def test_hole_a_folder_without_its_sbom_passes_a_policy_that_requires_one(
    tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """requireSbom asked only that the provenance record an SBOM: a drop whose SBOM was deleted on
    the way to the deployment passed, and shipped without it. A folder must now hold the SBOM."""
    from spdx import write_sbom

    from conftest import OUTPUT, generate_cli

    private, public = key_files["ecdsa-p256"]
    drop = tmp_path / "drop"
    _write("bin/app", APP)(drop)
    write_sbom(drop, "drop")
    assert generate_cli(drop, private).returncode == 0
    (drop / OUTPUT).rename(tmp_path / "provenance.intoto.jsonl")
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"trustedKeys": [str(public)], "requireSbom": True, "allowUnconfirmed": True})
    )

    def verdict() -> GateResult:
        options = GateOptions(
            provenance=tmp_path / "provenance.intoto.jsonl", artifacts=[drop], policy=policy
        )
        return verify_gate(options)

    assert verdict().passed, verdict().lines()
    for sbom in (drop / "_manifest").rglob("manifest.spdx.json*"):
        sbom.unlink()
    result = verdict()
    assert not result.passed, result.lines()
    assert any(
        line.startswith("FAILED: _manifest/spdx_2.2/manifest.spdx.json: (10) sbom: ") and "is missing" in line
        for line in result.lines()
    ), result.lines()


def test_images_verified_by_two_trusted_keys_name_both_in_key_id(
    request: pytest.FixtureRequest, key_files: dict[str, tuple[Path, Path]], tmp_path: Path, capsys: Any
) -> None:
    """keyId names every trusted key that verified the images, not the first image's alone."""
    azure, server = _registry_stack(request)
    from slsa_provenance import step
    from slsa_provenance.signing.keys import fingerprint, load_public_key
    from test_registry import generate, repository

    images, fingerprints = [], []
    for key_type in ("ecdsa-p256", "ecdsa-p384"):
        private, public = key_files[key_type]
        repo = repository()
        image = f"{server.host}/{repo}@{server.push_image(repo)}"
        code, _, err = generate(azure, private, tmp_path / key_type, "--image", image, "--attach")
        assert code == 0, err
        images.append(image)
        fingerprints.append(fingerprint(load_public_key(public.read_bytes(), str(public))))
    inputs = {
        "verifyImages": "\n".join(images),
        "trustedKeys": "\n".join(str(key_files[k][1]) for k in ("ecdsa-p384", "ecdsa-p256")),
    }
    step.main({**step_env(tmp_path / "job", command="verify", **inputs), **azure.env})
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]all 2 images verified" in out, out
    assert len(set(fingerprints)) == 2
    key_id = next(line for line in out.splitlines() if "variable=keyId]" in line)
    assert key_id == f"##vso[task.setvariable variable=keyId]{'%0A'.join(sorted(fingerprints))}"
