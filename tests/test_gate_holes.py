"""The adversarial review of the gate (issue 13): each way it passed what it must refuse, or generate
wrote or recorded the wrong thing, reproduced, and now refused with a named check."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent import AgentJob, Endpoint
from conftest import COMMIT, OUTPUT, PIPELINE_ENV, AzureStack, run_cli, statement_of
from conftest import generate_cli as generate
from slsa_provenance import step, untrusted
from slsa_provenance.errors import InputError, VerificationError
from slsa_provenance.gate.artifacts import folder_artifacts
from slsa_provenance.gate.checks import Expectations, verify_provenance
from slsa_provenance.provenance import hashing
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.statement import Subject, build_statement, canonical_json
from slsa_provenance.provenance.subjects import collect
from slsa_provenance.signing import dsse
from slsa_provenance.signing.local import LocalSigner
from test_run_summary import step_env

pytestmark = pytest.mark.integration


def verify(provenance: Path, key: Path, *extra: str | Path):  # type: ignore[no-untyped-def]
    return run_cli("verify", "--provenance", provenance, "--key", key, *extra)


# 1. HIGH: files under DIR/_manifest/, and a folder symlink into it, were never checked.
def test_a_folder_link_and_a_stray_manifest_file_fail_by_name(drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    (drop / "_manifest" / "static").mkdir(parents=True)
    (drop / "_manifest" / "static" / "app.js").write_text("evil()\n")
    (drop / "static").symlink_to("_manifest/static")
    assert generate(drop, private).returncode == 0
    result = verify(drop / OUTPUT, public, "--artifact", drop, "--allow-unconfirmed")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert (
        "FAILED: _manifest/static/app.js: (9) subject: _manifest/ may hold only the SBOM and provenance files"
        in lines
    )
    assert (
        "FAILED: static: (9) subject: static is a symbolic link to a folder: a copy that follows links "
        "would ship files unchecked"
    ) in lines
    assert "PASSED: bin/app.exe" in lines


# 2. MEDIUM: a folder's files matched by digest only, so they could be swapped among subjects.
def test_files_swapped_among_subjects_fail(drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    (drop / "empty-a.txt").write_bytes(b"")
    assert generate(drop, private, "--sbom-check", "off").returncode == 0
    shutil.copy(drop / "bin" / "app.dll", drop / "bin" / "app.exe")
    (drop / "empty-b.txt").write_bytes(b"")  # the empty subject used to vouch for every empty file
    result = verify(drop / OUTPUT, public, "--artifact", drop, "--allow-unconfirmed")
    assert result.returncode == 1
    dll = hashlib.sha256((drop / "bin" / "app.dll").read_bytes()).hexdigest()
    exe = statement_of(drop / OUTPUT)["subject"][2]  # type: ignore[index]
    assert exe["name"] == "bin/app.exe"
    assert (
        f"FAILED: bin/app.exe: (9) subject: bin/app.exe sha256 got {dll}, expected {exe['digest']['sha256']}"
        in (result.stdout.splitlines())
    )
    assert "FAILED: empty-b.txt: (9) subject: no subject is named 'empty-b.txt'" in result.stdout
    assert "PASSED: empty-a.txt" in result.stdout


def test_a_subfolder_of_the_drop_is_named_in_the_failure(drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    assert generate(drop, private).returncode == 0
    result = verify(drop / OUTPUT, public, "--artifact", drop / "bin", "--allow-unconfirmed")
    assert result.returncode == 1
    assert (
        "FAILED: app.exe: (9) subject: no subject is named 'app.exe' (the file of that digest is "
        "'bin/app.exe': pass the drop's top folder)"
    ) in result.stdout.splitlines()


# 3. MEDIUM: unconfirmed provenance passed pinned checks.
def test_unconfirmed_provenance_is_refused_unless_allowed(drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    assert generate(drop, private, "--no-server-confirmation").returncode == 0
    pinned = ("--artifact", drop, "--source-ref", "refs/heads/main", "--commit", COMMIT)
    refused = verify(drop / OUTPUT, public, *pinned)
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[0] == (
        "FAILED: README.txt: (11) confirmation: serverConfirmed: got false, expected true (the run's "
        "claims were not confirmed by the server: generate with confirmWithServer on; to accept such "
        "provenance anyway, say allowUnconfirmed: true in the policy, or pass --allow-unconfirmed when "
        "there is none)"
    )
    allowed = verify(drop / OUTPUT, public, *pinned, "--allow-unconfirmed")
    assert allowed.returncode == 0, allowed.stdout


@pytest.mark.parametrize("tf_build", ["True", "False"])
def test_the_step_fails_when_it_cannot_confirm(
    drop: Path, key_files, tmp_path: Path, capsys: pytest.CaptureFixture[str], tf_build: str
) -> None:  # type: ignore[no-untyped-def]
    """The collection does not answer (its SystemVssConnection leads nowhere): the run cannot be
    confirmed, so the step fails and writes nothing, also when a step has set TF_BUILD to False."""
    nowhere = Endpoint("SystemVssConnection", "https://127.0.0.1:9/", "OAuth", {"AccessToken": "job-token"})
    job = AgentJob(
        tmp_path / "job",
        variables={"AGENT_TEMPDIRECTORY": str(tmp_path), "SLSA_HTTP_RETRIES": "0"},
        endpoints=[nowhere],
    )
    inputs = {
        "dropFolder": str(drop),
        "signingMethod": "localKey",
        "localKeyFile": str(key_files["ed25519"][0]),
    }
    env = {**job.environment({"command": "generate", **inputs}), "TF_BUILD": tf_build}
    assert step.main(env) == 0
    out = capsys.readouterr().out
    complete = [line for line in out.splitlines() if line.startswith("##vso[task.complete")]
    assert complete == [
        "##vso[task.complete result=Failed]cannot reach Azure DevOps at https://127.0.0.1:9/ for build 836: "
        "HTTPSConnection(host='127.0.0.1', port=9): Failed to establish a new connection: [Errno 111] "
        "Connection refused: check the agent's network access and proxy settings; disable server "
        "confirmation only if the server cannot be reached by design"
    ]
    assert not (drop / "_manifest" / "slsa_1.0").exists()


def test_the_step_confirms_even_when_tf_build_is_overwritten(
    azure: AzureStack, drop: Path, key_files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    inputs = {
        "dropFolder": str(drop),
        "signingMethod": "localKey",
        "localKeyFile": str(key_files["ed25519"][0]),
    }
    env = {
        **step_env(tmp_path / "job", command="generate", **inputs),  # every input, as the agent hands them
        **azure.env,
        "TF_BUILD": "False",  # an earlier step's `##vso[task.setvariable variable=TF_BUILD]False`
    }
    step.main(env)
    assert "##vso[task.complete result=Succeeded]" in capsys.readouterr().out
    statement: Any = statement_of(drop / OUTPUT)
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"][
        "serverConfirmed"
    ]
    assert azure.ado.requests


# 4. LOW: the native hasher trusted st_size; a file that under-reports it got a truncated digest.
PROC = Path("/proc/sys/kernel/random")


@pytest.mark.skipif(not (PROC / "boot_id").exists(), reason="no procfs here")
def test_a_file_holding_more_than_its_listed_size_is_refused() -> None:
    with pytest.raises(InputError, match=r"holds more than the 0 bytes its file system lists"):
        collect(PROC)
    native = hashing._NATIVE
    if native is None:
        pytest.skip("the AVX-512 module is not in use here: the Python reader alone is tested above")
    paths = [str(p) for p in sorted(PROC.iterdir())]
    sizes, mtimes, count = native.stat_files(paths)
    assert count == len(paths) and set(array("q", sizes)) == {0}
    arena = hashing._arena()[: hashing._NATIVE_ARENA]
    _, refused = native.digest_files(paths, array("q", sizes), array("q", mtimes), arena)
    assert list(refused) == [1] * len(paths)  # was [0, ...] with the empty message's digest


# 5. LOW: fnmatch's `*` crossed `/`.
@pytest.fixture(scope="module")
def signer(key_files: dict[str, tuple[Path, Path]]) -> LocalSigner:
    return LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))


def signed(signer: LocalSigner, ref: str) -> bytes:
    context = replace(
        RunContext.from_variables(PIPELINE_ENV),
        source_branch=ref,
        pipeline_file="azure-pipelines.yml",
        server_confirmed=True,
    )
    statement = build_statement(context, [Subject("app", "0" * 64)])
    return dsse.sign(canonical_json(copy.deepcopy(statement)), dsse.PAYLOAD_TYPE, signer).to_json()


def test_a_ref_glob_star_stays_within_one_segment(signer: LocalSigner) -> None:
    envelope = signed(signer, "refs/heads/release/1.0/attacker-feature")
    with pytest.raises(VerificationError, match=r"^\(7\) ref: workflow.ref: got 'refs/heads/release/1.0/"):
        verify_provenance(envelope, [signer.public_key()], Expectations(source_ref="refs/heads/release/*"))
    verify_provenance(envelope, [signer.public_key()], Expectations(source_ref="refs/heads/release/**"))
    release = signed(signer, "refs/heads/release/1.0")
    verify_provenance(release, [signer.public_key()], Expectations(source_ref="refs/heads/release/*"))


# 6. LOW: a symlinked <drop>/_manifest/slsa_1.0 made generate write outside the drop.
@pytest.mark.parametrize("link", ["_manifest/slsa_1.0", "_manifest"])
def test_generate_refuses_a_linked_output_folder(drop: Path, key_files, tmp_path: Path, link: str) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "provenance.intoto.jsonl").write_text("precious\n")
    if link == "_manifest":
        shutil.move(drop / "_manifest", outside / "_manifest")
        (outside / "_manifest" / "slsa_1.0").mkdir()
        (drop / "_manifest").symlink_to(outside / "_manifest")
        target = outside / "_manifest" / "slsa_1.0"
    else:
        (drop / "_manifest" / "slsa_1.0").symlink_to(outside)
        target = outside
    before = sorted(os.listdir(target))
    result = generate(drop, key_files["ecdsa-p256"][0])
    assert result.returncode == 2
    assert f"error: {drop / link} is a symbolic link: the provenance would be written wherever it points" in (
        result.stderr
    )
    assert sorted(os.listdir(target)) == before
    assert (outside / "provenance.intoto.jsonl").read_text() == "precious\n"


# Also: the nesting guard read raw bytes, so UTF-16 JSON slipped past it to a RecursionError.
def test_the_nesting_guard_reads_utf16_json() -> None:
    hidden = '["\u2200",' + "[" * 100_000 + "]" * 100_000 + ',"x"]'  # U+2200's UTF-16 has a quote byte
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32"):
        with pytest.raises(ValueError, match="JSON nested deeper than 64 levels"):
            untrusted.loads(hidden.encode(encoding))
    assert untrusted.loads('{"a": ["\u2200"]}'.encode("utf-16")) == {"a": ["\u2200"]}


# Also: the gate hashes with hashlib only, so a fault in the fast path cannot make both sides agree.
class _FaultyLanes:
    """The AVX-512 module with a fault that its start-up probes do not reach: every file's digest
    comes out as zeros."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def stat_files(self, paths: list[str]) -> Any:
        return self.real.stat_files(paths)

    def digest_files(self, paths: list[str], sizes: Any, mtimes: Any, arena: Any) -> tuple[bytes, bytes]:
        return bytes(32 * len(paths)), bytes(len(paths))


def test_the_gate_never_uses_the_fast_path(drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_NATIVE", _FaultyLanes(hashing._NATIVE))
    assert {s.sha256 for s in collect(drop, workers=1)} == {"0" * 64}  # generate would record the fault
    gated = {a.name: a.sha256 for a in folder_artifacts(drop)}
    assert gated["bin/app.exe"] == hashlib.sha256((drop / "bin" / "app.exe").read_bytes()).hexdigest()
    assert "0" * 64 not in gated.values()
