"""Run the CLI as another user (uid 65534) from wherever the clone is.

    command, env = unprivileged_cli(sys.executable, REPO / "src")

That user needs to reach the interpreter, the package and its dependencies. A clone under a private
folder (mode 0700: a home folder, `mktemp -d`, pytest's own temporary folders) hides the virtual
environment and the sources from it; then they are copied, once per session, to a world-readable
temporary folder and run by the base interpreter. When even that cannot run, the test is skipped and
says why.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_copies: dict[tuple[str, Path], tuple[str, str]] = {}


def as_nobody(command: list[str]) -> list[str]:
    return [*AS_NOBODY, *command] if os.geteuid() == 0 else command


def _runs(python: str, path: str) -> bool:
    """Whether uid 65534 can import the package from `path` (not from an install elsewhere)."""
    code = "import sys, cryptography, jsonschema, slsa_provenance.cli as c; sys.exit(not c.__file__.startswith(sys.argv[1]))"
    probe = as_nobody([python, "-c", code, path.split(os.pathsep)[0]])
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": path}
    return subprocess.run(probe, env=env, capture_output=True, timeout=60, check=False).returncode == 0


def _world_readable_copy(sources: Path) -> tuple[str, str]:
    root = Path(tempfile.mkdtemp(prefix="slsa-world-readable-"))
    atexit.register(shutil.rmtree, root, True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(sysconfig.get_paths()["purelib"], root / "site", ignore=skip, symlinks=True)
    shutil.copytree(sources / "slsa_provenance", root / "src" / "slsa_provenance", ignore=skip)
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    return os.path.realpath(sys._base_executable), os.pathsep.join([str(root / "src"), str(root / "site")])


def unprivileged_cli(python: str, sources: Path) -> tuple[list[str], str]:
    """The command prefix running `python -m slsa_provenance` as uid 65534, and its PYTHONPATH."""
    if (python, sources) not in _copies:
        if _runs(python, str(sources)):
            _copies[python, sources] = (python, str(sources))
        else:
            _copies[python, sources] = _world_readable_copy(sources)
    interpreter, path = _copies[python, sources]
    if not _runs(interpreter, path):
        pytest.skip(
            f"uid 65534 can run neither {python} with {sources} nor a world-readable copy with {interpreter} "
            "(a parent folder is private): run from a clone in a world-readable folder"
        )
    return as_nobody([interpreter, "-m", "slsa_provenance"]), path
