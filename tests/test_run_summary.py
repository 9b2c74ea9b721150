"""The step's attachment for the Provenance tab: one per run of the step, valid against its schema,
saying what generate attested and what each numbered check of a gate got and expected."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agent import AgentJob
from conftest import COMMIT, PIPELINE_ENV
from slsa_provenance import run_summary, step

SCHEMA = Path(run_summary.__file__).parent / "schemas" / "run-summary.schema.json"
ATTACHMENT = re.compile(r"^##vso\[task\.addattachment type=slsa-provenance;name=([^\]]+)\](.+)$", re.M)


@cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def attached(stdout: str) -> tuple[str, dict[str, Any]]:
    """The one attachment the step announced, validated against the shipped schema."""
    found = ATTACHMENT.findall(stdout)
    assert len(found) == 1, stdout
    name, path = found[0]
    summary = json.loads(Path(path).read_text(encoding="utf-8"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(summary)]
    assert errors == []
    assert not list(Path(path).parent.glob(f".{Path(path).name}.*")), "a temporary file was left behind"
    return name, summary


def step_env(tmp_path: Path, **given: str) -> dict[str, str]:
    """What the agent hands the step of a job in `tmp_path` (tests/agent.py): every task.json input, set
    or at its default, formed as the agent forms it; upper-case names are the job's variables."""
    job = AgentJob(
        tmp_path,
        variables={
            "AGENT_TEMPDIRECTORY": str(tmp_path),
            "SYSTEM_TASKINSTANCEID": "ce30c491-54d2-5ab2-f73d-c2aceaff5b23",
            "SYSTEM_TASKDISPLAYNAME": "Attest the drop",
            **{k: v for k, v in given.items() if k.isupper()},
        },
    )
    return job.environment({k: v for k, v in given.items() if not k.isupper()})


def generate_env(tmp_path: Path, drop: Path, key: Path, **variables: str) -> dict[str, str]:
    """A generate step signing with a local key, without server confirmation."""
    return step_env(
        tmp_path,
        command="generate",
        dropFolder=str(drop),
        signingMethod="localKey",
        localKeyFile=str(key),
        confirmWithServer="false",
        pipelineFile="ci/azure-pipelines.yml",
        **variables,
    )


def generate(
    tmp_path: Path, drop: Path, key: Path, capsys: pytest.CaptureFixture[str], **variables: str
) -> dict[str, Any]:
    assert step.main(generate_env(tmp_path, drop, key, **variables)) == 0
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]" in out, out
    name, summary = attached(out)
    assert name == "generate-ce30c491-54d2-5ab2-f73d-c2aceaff5b23-2.json"
    return summary


def verify(
    tmp_path: Path, drop: Path, public: Path, ref: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    env = step_env(
        tmp_path,
        command="verify",
        SYSTEM_TASKDISPLAYNAME="Verify the drop before deploying",
        provenanceFile=str(drop / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl"),
        artifacts=str(drop),
        trustedKeys=str(public),
        expectedRef=ref,
        allowUnconfirmed="true",
    )
    assert step.main(env) == 0
    out = capsys.readouterr().out
    _, summary = attached(out)
    verdict = "Succeeded" if summary["verdict"] == "PASSED" else "Failed"
    assert f"##vso[task.complete result={verdict}]" in out
    return summary


def test_generate_attaches_what_it_attested(
    tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    summary = generate(tmp_path, drop, key_files["ecdsa-p256"][0], capsys)
    envelope = drop / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl"
    assert summary["command"] == "generate"
    assert summary["step"] == {"displayName": "Attest the drop", "jobName": "Build", "attempt": "2"}
    assert summary["statement"]["path"] == str(envelope)
    assert [s["name"] for s in summary["subjects"]["listed"]] == [
        "README.txt",
        "bin/app.dll",
        "bin/app.exe",
        "lib/plugins/auth.so",
        "web.tar.gz",
    ]
    assert summary["subjects"]["total"] == 5
    assert summary["source"] == {
        "repository": PIPELINE_ENV["BUILD_REPOSITORY_URI"],
        "ref": "refs/heads/main",
        "commit": COMMIT,
        "provider": "TfsGit",
        "confirmedByServer": False,
    }
    assert summary["builder"]["id"].endswith("/web/web/ci/azure-pipelines.yml@refs/heads/main")
    assert summary["signer"]["kind"] == "localKey" and summary["signer"]["keyId"].startswith("sha256:")
    assert [s["name"] for s in summary["sboms"]] == ["_manifest/spdx_2.2/manifest.spdx.json"]
    assert summary["level"] == 1  # not confirmed by the server


def test_a_huge_drop_lists_the_first_subjects_and_counts_them_all(
    tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(run_summary, "MAX_LISTED", 2)
    summary = generate(tmp_path, drop, key_files["ed25519"][0], capsys)
    assert summary["subjects"]["total"] == 5
    assert [s["name"] for s in summary["subjects"]["listed"]] == ["README.txt", "bin/app.dll"]


def test_a_gate_attaches_every_check_with_the_one_that_failed(
    tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    generate(tmp_path / "g", drop, private, capsys)
    summary = verify(tmp_path / "v", drop, public, "refs/tags/v*", capsys)
    assert summary["verdict"] == "FAILED" and summary["level"] == 0
    statuses = {c["number"]: c["status"] for c in summary["checks"]}
    assert statuses == {
        **dict.fromkeys([1, 2, 3, 4], "passed"),
        **dict.fromkeys([5, 6], "not checked"),
        7: "failed",
        **dict.fromkeys([8, 9, 10, 11], "not reached"),
    }
    ref = next(c for c in summary["checks"] if c["number"] == 7)
    assert (ref["got"], ref["expected"]) == ("refs/heads/main", "refs/tags/v*")
    assert summary["artifacts"]["failed"] == summary["artifacts"]["total"] == 6


def test_a_passing_gate_records_what_each_check_compared(
    tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    generated = generate(tmp_path / "g", drop, private, capsys)
    summary = verify(tmp_path / "v", drop, public, "refs/heads/*", capsys)
    assert summary["verdict"] == "PASSED" and summary["vsa"] is None
    checks = {c["number"]: c for c in summary["checks"]}
    assert checks[2]["got"] == generated["signer"]["keyId"]
    assert (checks[7]["got"], checks[7]["expected"], checks[7]["status"]) == (
        "refs/heads/main",
        "refs/heads/*",
        "passed",
    )
    assert checks[8]["status"] == "not checked" and checks[8]["got"] == COMMIT
    assert checks[9]["got"] == "6 of 6 artifacts are subjects"
    assert summary["source"] == generated["source"] and summary["builder"] == generated["builder"]


def test_a_refused_sidecar_fails_check_10_not_check_9(
    tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """The gate refuses a `.sha256` sidecar that does not match its SBOM by check (10); the tab
    showed that under (9) "artifacts are subjects" while (10) read "not checked"."""
    private, public = key_files["ecdsa-p256"]
    generate(tmp_path / "g", drop, private, capsys)
    (drop / "_manifest" / "spdx_2.2" / "manifest.spdx.json.sha256").write_text("a" * 64)
    summary = verify(tmp_path / "v", drop, public, "refs/heads/*", capsys)
    checks = {c["number"]: c for c in summary["checks"]}
    assert summary["verdict"] == "FAILED"
    assert (checks[9]["status"], checks[9]["got"]) == ("passed", "6 of 6 artifacts are subjects")
    assert checks[10]["status"] == "failed"
    assert checks[10]["detail"].startswith(
        "_manifest/spdx_2.2/manifest.spdx.json.sha256 does not match _manifest/spdx_2.2/manifest.spdx.json"
    )
    assert checks[10]["expected"] == "a" * 64 and len(checks[10]["got"]) == 64
    assert summary["artifacts"]["failed"] == 1


def test_a_summary_that_cannot_be_written_is_a_warning(
    tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    env = generate_env(
        tmp_path / "job", drop, key_files["ed25519"][0], AGENT_TEMPDIRECTORY=str(tmp_path / "missing")
    )
    (tmp_path / "missing").write_text("a file where the temp folder should be")
    assert step.main(env) == 0
    out = capsys.readouterr().out
    assert "##vso[task.logissue type=warning]cannot write the Provenance tab's summary" in out
    assert "##vso[task.addattachment" not in out
    assert "##vso[task.complete result=Succeeded]" in out
