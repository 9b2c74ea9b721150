"""The tests that run the CLI as uid 65534 work from a clone under a private (0700) folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from unprivileged import unprivileged_cli


def test_the_cli_runs_as_another_user_from_a_private_clone(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    clone = tmp_path / "private" / "clone"
    shutil.copytree(REPO / "src" / "slsa_provenance", clone / "src" / "slsa_provenance")
    (tmp_path / "private").chmod(0o700)  # as under a home folder or mktemp -d
    command, path = unprivileged_cli(sys.executable, clone / "src")
    assert str(tmp_path / "private") not in path  # a world-readable copy
    run = subprocess.run(
        [*command, "--version"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("slsa-provenance ")
