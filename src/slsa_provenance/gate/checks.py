"""Verification for deployment gates: numbered checks, each failing with got/expected.

    >>> verified = verify_provenance(envelope, [public_key], Expectations(builder_id=ID))  # doctest: +SKIP

`envelope` is a DSSE envelope or a Sigstore bundle v0.3 holding one.
    >>> [r.line() for r in check_artifacts(verified.statement, [Artifact("app.zip", digest)])]
    ['PASSED: app.zip']

Checks, in order (DESIGN §6): (1) envelope parses, payloadType; (2) a signature verifies with a
trusted key; (3) Statement and predicate types; (4) buildType; (5) builder.id; (6) source
repository; (7) ref (a pull-request build only when a ref expected names refs/pull/); (8) commit;
(9) every artifact is a subject (a folder's files by their relative names); (10) the SBOM's digest
is the recorded byproduct; (11) the run context was confirmed by the server. An expectation left
as None is not checked; (1)-(4), (9) and (11) always are. Ref and builder globs follow `globs`: `*`
within a segment, `**` across.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slsa_provenance import globs, untrusted
from slsa_provenance.errors import InputError, VerificationError
from slsa_provenance.provenance.statement import BUILD_TYPE, PREDICATE_TYPE, SPDX_MEDIA_TYPE, STATEMENT_TYPE
from slsa_provenance.signing import bundle, dsse
from slsa_provenance.signing.keys import PublicKey, fingerprint


@dataclass(frozen=True)
class Builder:
    id: str
    """runDetails.builder.id, exact or a glob: PATH@REF, the two parts matched apart."""
    level: int
    """The SLSA Build level its provenance earns."""
    keys: tuple[str, ...] | None = None
    """Fingerprints of the keys that may sign for it, sorted (None: any trusted key)."""


@dataclass(frozen=True)
class Expectations:
    builder_id: str | None = None
    source_uri: str | None = None
    source_ref: str | None = None
    """An exact ref or a glob such as `refs/tags/v*`."""
    commit: str | None = None
    sbom_sha256: str | None = None
    build_type: str = BUILD_TYPE
    allow_unconfirmed: bool = False
    """Accept provenance whose run context the server did not confirm (it could claim any branch)."""
    builders: tuple[Builder, ...] | None = None
    """A policy's builders: builder.id matches one, which gives the level (None: any, level 2)."""
    repositories: tuple[str, ...] | None = None
    refs: tuple[str, ...] | None = None
    """A policy's refs, exact or globs: workflow.ref matches one."""
    require_sbom: bool = False


BY_DIGEST = "digest"
BY_NAME = "name"
BYPRODUCT = "byproduct"


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    match: str = BY_DIGEST
    """BY_DIGEST: any subject with this digest (a file whose name is not in the provenance's terms);
    BY_NAME: the subject of this name (a folder's file, by its relative path); BYPRODUCT: the
    byproduct of this name (the SBOM in a folder's `_manifest/`)."""
    refused: str = ""
    """Why the gate refuses it before any digest is compared (a folder symlink, a stray file)."""
    folder: str = ""
    """The folder (--artifact DIR) it was found in: every file subject must be found there too."""


@dataclass(frozen=True)
class ArtifactResult:
    artifact: Artifact
    error: str = ""
    subject: str = ""

    @property
    def passed(self) -> bool:
        return not self.error

    def line(self) -> str:
        """One line, whatever the names hold (a file named `x\nPASSED: y` cannot print a verdict)."""
        if self.error:
            return _one_line(f"FAILED: {self.artifact.name}: {self.error}")
        alias = f" (subject {self.subject})" if self.subject != self.artifact.name else ""
        return _one_line(f"PASSED: {self.artifact.name}{alias}")


def _one_line(text: str) -> str:
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode()


MAX_ENVELOPE = 256 << 20


@dataclass(frozen=True)
class Report:
    keyid: str
    """The fingerprint of the trusted key that verified (never the envelope's unsigned keyid);
    empty when checks (1)-(8) failed."""
    results: list[ArtifactResult]
    level: int = 0
    """The SLSA Build level the verified provenance earns; 0 when it did not verify."""
    statement: dict[str, Any] = field(default_factory=dict)
    """The verified Statement; empty when checks (1)-(8) failed."""
    failure: str = ""
    """The message of the check among (1)-(8), (10), (11) that stopped verification; empty when it
    verified (an artifact refused by name, even by check (10), is never that check)."""

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)


def run_checks(
    envelope_json: bytes, keys: Sequence[PublicKey], expected: Expectations, artifacts: Sequence[Artifact]
) -> Report:
    """All checks; a failure of (1)-(8) fails every artifact with that check's message."""
    try:
        verified = verify_provenance(envelope_json, keys, expected)
    except VerificationError as exc:
        results = [ArtifactResult(a, error=a.refused or exc.message) for a in artifacts]
        return Report("", results, failure=exc.message)
    results = check_artifacts(verified.statement, artifacts, require_sbom=expected.require_sbom)
    return Report(verified.keyid, results, verified.level, verified.statement)


@dataclass(frozen=True)
class VerifiedStatement:
    keyid: str
    """The trusted key's fingerprint (`sha256:` SPKI hex): what an output may name."""
    statement: dict[str, Any]
    level: int = 0


def verify_provenance(
    envelope_json: bytes, keys: Sequence[PublicKey], expected: Expectations
) -> VerifiedStatement:
    """Checks (1) to (8), (10) and (11). Raises VerificationError naming the first check that fails."""
    try:
        envelope = dsse.Envelope.from_json(bundle.envelope_json(envelope_json))
    except InputError as exc:
        raise VerificationError("(1) envelope", exc.message) from exc
    _expect("(1) envelope", "payloadType", envelope.payload_type, dsse.PAYLOAD_TYPE)
    verified = dsse.verify(envelope, keys)
    statement = _parse_statement(envelope.payload)
    _expect("(3) statement", "_type", statement.get("_type"), STATEMENT_TYPE)
    _expect("(3) statement", "predicateType", statement.get("predicateType"), PREDICATE_TYPE)
    _check_unique_subjects(statement)
    _expect(
        "(4) buildType",
        "buildType",
        _get(statement, "(4) buildType", BUILD_PATH),
        expected.build_type,
    )
    key = fingerprint(verified.key)
    level = _check_builder(statement, expected, key)
    _check_source(statement, expected)
    if expected.commit is not None:
        commit = _get(statement, "(8) commit", COMMIT_PATH)
        _expect("(8) commit", "gitCommit", commit, expected.commit.lower())
    _check_sbom(statement, expected)
    confirmed = _check_confirmed(statement, expected)
    return VerifiedStatement(keyid=key, statement=statement, level=level if confirmed else 1)


BUILD_PATH = "predicate.buildDefinition.buildType"
BUILDER_PATH = "predicate.runDetails.builder.id"
REPOSITORY_PATH = "predicate.buildDefinition.externalParameters.workflow.repository"
REF_PATH = "predicate.buildDefinition.externalParameters.workflow.ref"
SOURCE_PATH = "predicate.buildDefinition.resolvedDependencies.0.uri"
COMMIT_PATH = "predicate.buildDefinition.resolvedDependencies.0.digest.gitCommit"
AZURE_PIPELINES_PATH = "predicate.buildDefinition.internalParameters.azurePipelines"
PULL_REFS = "refs/pull/"


def _internal(statement: dict[str, Any]) -> dict[str, Any]:
    """internalParameters.azurePipelines, or {} when it is not there."""
    value: Any = statement
    for part in AZURE_PIPELINES_PATH.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _check_confirmed(statement: dict[str, Any], expected: Expectations) -> bool:
    """Check (11): the run context was confirmed with the Azure DevOps REST API. Unconfirmed, a step
    could have claimed any branch, commit or repository; refused unless explicitly allowed."""
    value = _internal(statement).get("serverConfirmed")
    if value is True:
        return True
    if not expected.allow_unconfirmed:
        raise VerificationError(
            "(11) confirmation",
            f"serverConfirmed: got {json.dumps(value)}, expected true (the run's claims were not confirmed "
            "by the server: generate with confirmWithServer on; to accept such provenance anyway, say "
            "allowUnconfirmed: true in the policy, or pass --allow-unconfirmed when there is none)",
        )
    return False


def _check_builder(statement: dict[str, Any], expected: Expectations, key: str) -> int:
    """Check (5); the level the builder earns. `key` is the fingerprint of the key that verified:
    a policy's builder applies only when its id matches and, if it lists keys, `key` is one of them
    (any pipeline that may use a key can write any builder.id into what it signs)."""
    if expected.builder_id is None and expected.builders is None:
        return 2
    builder = _get(statement, "(5) builder.id", BUILDER_PATH)
    if expected.builder_id is not None and builder != expected.builder_id:
        raise VerificationError("(5) builder.id", f"got {builder!r}, expected {expected.builder_id!r}")
    if expected.builders is None:
        return 2
    ref = _get(statement, "(5) builder.id", REF_PATH)
    if not builder.endswith(f"@{ref}"):
        raise VerificationError(
            "(5) builder.id", f"got {builder!r}, expected it to end with @ and workflow.ref {ref!r}"
        )
    path = builder.removesuffix(f"@{ref}")
    matching = [b for b in expected.builders if _builder_matches(b.id, path, ref)]
    applying = [b for b in matching if b.keys is None or key in b.keys]
    if applying:
        return max(b.level for b in applying)
    if matching:
        raise VerificationError(
            "(5) builder.id",
            f"got {builder!r}, signed by key {key}, which is not among the keys the policy binds to "
            f"builder {matching[0].id!r}",
        )
    ids = [b.id for b in expected.builders]
    raise VerificationError("(5) builder.id", f"got {builder!r}, expected one of {ids!r}")


def _builder_matches(glob: str, path: str, ref: str) -> bool:
    """PATH@REF globs matched as two parts, split at the glob's last `@`, so that a branch named
    `feature/x@refs/heads/main` cannot pass for `...@refs/heads/main`."""
    path_glob, at, ref_glob = glob.rpartition("@")
    return bool(at) and globs.matches(path_glob, path) and globs.matches(ref_glob, ref)


def _check_source(statement: dict[str, Any], expected: Expectations) -> None:
    repository = _get(statement, "(6) source", REPOSITORY_PATH)
    ref = _get(statement, "(7) ref", REF_PATH)
    if expected.source_uri is not None:
        _expect(
            "(6) source",
            "workflow.repository",
            repository,
            expected.source_uri.removeprefix("git+"),
        )
    allowed = [r.removeprefix("git+") for r in expected.repositories or ()]
    if expected.repositories is not None and repository not in allowed:
        raise VerificationError(
            "(6) source", f"workflow.repository: got {repository!r}, expected one of {allowed!r}"
        )
    if expected.source_uri is not None or expected.repositories is not None:
        _expect(
            "(6) source",
            "resolvedDependencies[0].uri",
            _get(statement, "(6) source", SOURCE_PATH),
            f"git+{repository}@{ref}",
        )
    if expected.source_ref is not None and not globs.matches(expected.source_ref, ref):
        raise VerificationError("(7) ref", f"workflow.ref: got {ref!r}, expected {expected.source_ref!r}")
    if expected.refs is not None and not any(globs.matches(glob, ref) for glob in expected.refs):
        raise VerificationError(
            "(7) ref", f"workflow.ref: got {ref!r}, expected one of {list(expected.refs)!r}"
        )
    _check_not_pull_request(statement, ref, expected)


def _check_not_pull_request(statement: dict[str, Any], ref: str, expected: Expectations) -> None:
    """Check (7) for a pull-request build (code not reviewed yet, attested only by an explicit
    --allow-pull-request): refused unless a ref expected names refs/pull/, as generate refuses it."""
    reason = _internal(statement).get("reason")
    if not ref.startswith(PULL_REFS) and str(reason).lower() != "pullrequest":
        return
    wanted = [expected.source_ref] if expected.source_ref is not None else []
    if any(glob.startswith(PULL_REFS) for glob in [*wanted, *(expected.refs or ())]):
        return
    raise VerificationError(
        "(7) ref",
        f"workflow.ref: got {ref!r} from a pull-request build (reason {reason!r}), expected a branch or "
        f"tag (accept pull-request builds only with a ref under {PULL_REFS})",
    )


def _check_unique_subjects(statement: dict[str, Any]) -> None:
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerificationError("(3) statement", "subject is missing or empty")
    names = [s.get("name") if isinstance(s, dict) else None for s in subjects]
    unnamed = next((i for i, name in enumerate(names) if not isinstance(name, str) or not name), None)
    if unnamed is not None:  # a number or null would otherwise be compared as its text
        raise VerificationError("(3) statement", f"subject[{unnamed}].name is not a non-empty string")
    if len(set(names)) == len(names):
        return
    seen: set[object] = set()
    for name in names:
        if name in seen:
            raise VerificationError("(3) statement", f"subject {name!r} appears more than once")
        seen.add(name)


def _check_sbom(statement: dict[str, Any], expected: Expectations) -> None:
    """Check (10): the SBOM given is the recorded byproduct; with `require_sbom`, one is recorded."""
    if expected.sbom_sha256 is None and not expected.require_sbom:
        return
    byproducts = _byproducts(statement)
    recorded = (
        [
            str(b.get("digest", {}).get("sha256"))
            for b in byproducts
            if isinstance(b, dict) and b.get("mediaType") == SPDX_MEDIA_TYPE
        ]
        if isinstance(byproducts, list)
        else []
    )
    if expected.require_sbom and not recorded:
        raise VerificationError("(10) sbom", "no SBOM byproduct is recorded, and the policy requires one")
    sha256 = expected.sbom_sha256
    if sha256 is not None and sha256 not in recorded:
        raise VerificationError(
            "(10) sbom", f"byproducts sha256: got {sha256}, expected one of {recorded or 'none recorded'}"
        )


def check_artifacts(
    statement: dict[str, Any], artifacts: Sequence[Artifact], *, require_sbom: bool = False
) -> list[ArtifactResult]:
    """Check (9): a folder's file is the subject of its name, with its digest; any other artifact's
    digest is a subject's; an SBOM shipped in a folder's `_manifest/` is the recorded byproduct, and
    with `require_sbom` a folder must ship the SBOM the provenance records."""
    subjects = _entries(statement.get("subject"))
    by_name = dict(subjects)
    by_digest = {sha256: name for name, sha256 in reversed(subjects)}  # the first subject of a digest
    byproducts = dict(_entries(_byproducts(statement)))
    results = [
        ArtifactResult(artifact, error=artifact.refused)
        if artifact.refused
        else _check_artifact(artifact, by_digest, by_name, byproducts)
        for artifact in artifacts
    ]
    images = _image_subjects(statement)
    for folder in dict.fromkeys(a.folder for a in artifacts if a.folder):
        found = {a.name for a in artifacts if a.folder == folder}
        files = {n: s for n, s in by_name.items() if n not in images}
        results += _missing(files, found, folder, BY_NAME, "(9) subject", "the provenance names it")
        if require_sbom:
            why = "the policy requires an SBOM, and the provenance records this one"
            results += _missing(byproducts, found, folder, BYPRODUCT, "(10) sbom", why)
    return results


def _missing(
    expected: dict[str, str], found: set[str], folder: str, match: str, check: str, why: str
) -> list[ArtifactResult]:
    """A FAILED result for each expected name the folder does not hold."""
    return [
        ArtifactResult(
            Artifact(name, sha256, match, folder=folder),
            error=f"{check}: {name} is missing from {folder} ({why}: a deployment of this folder would "
            "lack it)",
        )
        for name, sha256 in expected.items()
        if name not in found
    ]


def _image_subjects(statement: dict[str, Any]) -> frozenset[str]:
    """The subjects generate recorded as images (signed, in internalParameters): every other
    subject is a file a folder must hold. Anything but a list of names records none."""
    names: Any = statement
    for key in ("predicate", "buildDefinition", "internalParameters", "images"):
        names = names.get(key) if isinstance(names, dict) else None
    if not isinstance(names, list):
        return frozenset()
    return frozenset(n for n in names if isinstance(n, str))


def _check_artifact(
    artifact: Artifact, by_digest: dict[str, str], by_name: dict[str, str], byproducts: dict[str, str]
) -> ArtifactResult:
    name, sha256 = artifact.name, artifact.sha256
    if artifact.match == BY_DIGEST and sha256 in by_digest:
        return ArtifactResult(artifact, subject=by_digest[sha256])
    named = byproducts if artifact.match == BYPRODUCT else by_name
    what = "byproduct" if artifact.match == BYPRODUCT else "subject"
    if named.get(name) == sha256:
        return ArtifactResult(artifact, subject=name)
    if name in named:
        error = f"(9) {what}: {name} sha256 got {sha256}, expected {named[name]}"
    elif artifact.match == BY_DIGEST:
        error = f"(9) subject: sha256 {sha256} is not a subject of the provenance"
    else:
        error = f"(9) {what}: no {what} is named {name!r}"
        if artifact.match == BY_NAME and by_digest.get(sha256, "").endswith(f"/{name}"):
            error += f" (the file of that digest is {by_digest[sha256]!r}: pass the drop's top folder)"
    return ArtifactResult(artifact, error=error)


def _entries(items: object) -> list[tuple[str, str]]:
    """(name, lower-case sha256) of each well-formed subject or byproduct."""
    return [
        (str(item.get("name", "")), str(item["digest"].get("sha256", "")).lower())
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and isinstance(item.get("digest"), dict)
    ]


def _byproducts(statement: dict[str, Any]) -> object:
    predicate = statement.get("predicate")
    run_details = predicate.get("runDetails") if isinstance(predicate, dict) else None
    return run_details.get("byproducts") if isinstance(run_details, dict) else None


def _parse_statement(payload: bytes) -> dict[str, Any]:
    if json.detect_encoding(payload) != "utf-8":  # a BOM, or UTF-16/32: in-toto Statements are UTF-8
        raise VerificationError("(3) statement", "the payload is not UTF-8 JSON without a byte order mark")
    try:
        statement = untrusted.loads(payload, strict=True)
    except untrusted.AmbiguousError as exc:
        raise VerificationError("(3) statement", f"the payload is ambiguous JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise VerificationError("(3) statement", "the payload is not JSON") from exc
    if not isinstance(statement, dict):
        raise VerificationError("(3) statement", "the payload is not a JSON object")
    return statement


def _get(statement: dict[str, Any], check: str, path: str) -> str:
    value: Any = statement
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise VerificationError(check, f"{path} is missing")
    if not isinstance(value, str):
        raise VerificationError(check, f"{path} is not a string")
    return value


def _expect(check: str, field: str, got: object, expected: str) -> None:
    if got != expected:
        raise VerificationError(check, f"{field}: got {got!r}, expected {expected!r}")
