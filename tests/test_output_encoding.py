"""Output is UTF-8 whatever the console code page, and the step's result agrees with what it wrote.

Windows gives a piped stdout the ANSI code page; PYTHONIOENCODING=cp1252:strict gives this process's
children the same strict cp1252 streams on any system."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import OUTPUT, PIPELINE_ENV, REPO, run_cli
from test_run_summary import generate_env

NAME = "app-中文.txt"
CP1252 = {"PYTHONIOENCODING": "cp1252:strict"}


def step(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`slsa-provenance task` (what launch.py runs) in a child process, output kept as bytes."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "SYSTEMROOT") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "slsa_provenance", "task"],
        env={**base, **PIPELINE_ENV, "PYTHONPATH": str(REPO / "src"), **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def generate_inputs(drop: Path, key: Path, tmp_path: Path, **inputs: str) -> dict[str, str]:
    """Every task.json input, as the agent hands them (tests/agent.py); the new file is not in the
    drop's SBOM, so its check warns."""
    return generate_env(tmp_path / "job", drop, key, sbomCheck="warn", **inputs)


def test_a_file_name_cp1252_cannot_encode_is_printed_and_the_step_succeeds(
    drop: Path, tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    (drop / NAME).write_text("hello")
    result = step({**generate_inputs(drop, key_files["ecdsa-p256"][0], tmp_path), **CP1252})
    stdout = result.stdout.decode("utf-8")
    assert f"  {NAME}\n" in stdout, stdout + result.stderr.decode("utf-8", "replace")
    assert stdout.splitlines()[-1].startswith("##vso[task.complete result=Succeeded]")
    assert (drop / OUTPUT).is_file()


def test_verify_prints_the_name_in_utf8(
    drop: Path, key_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    private, public = key_files["ecdsa-p256"]
    (drop / NAME).write_text("hello")
    assert step(generate_inputs(drop, private, tmp_path)).returncode == 0
    verified = run_cli(
        "verify",
        "--provenance",
        drop / OUTPUT,
        "--key",
        public,
        "--artifact",
        drop / NAME,
        "--allow-unconfirmed",
        env=CP1252,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == f"PASSED: {NAME}\n"


def test_a_step_that_cannot_write_its_outputs_reports_failure_and_no_outputs(
    drop: Path, tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    inputs = generate_inputs(drop, key_files["ecdsa-p256"][0], tmp_path, outputFolder=str(blocker / "out"))
    lines = step(inputs).stdout.decode("utf-8").splitlines()
    assert lines[-1].startswith(f"##vso[task.complete result=Failed]cannot write {blocker / 'out'}")
    assert not [line for line in lines if "result=Succeeded" in line or "variable=provenancePath" in line]
    assert not (drop / "_manifest" / "slsa_1.0").exists()
