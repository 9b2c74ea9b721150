"""Start the bundled slsa_provenance with the dependencies built for this interpreter and platform.

    $ python3 -I launch.py task
    $ python3 -I launch.py --target     # what index.js asks each candidate: "linux-x86_64-cp312 3.12.1"

The task folder ships two xz payloads for this agent: `lib/common.tar.xz` (pure Python, every
platform, the package itself included) and `lib/<platform>.tar.xz` (compiled packages for every
shipped Python version); `lib/index.json` lists the folders each `platform-machine-cpXY` needs.
Each payload is unpacked once into a cache (Agent.ToolsDirectory/slsa-provenance, else the task
folder's cache/), named by the archive's digest: the archive is checked against its manifest before
unpacking, written to a temporary folder and renamed into place, so two jobs unpacking at once both
end with one whole copy. Every run checks the files it puts on sys.path against the manifest's
digests; a changed, missing or added file makes it unpack the payload again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIB = HERE / "lib"
MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
REINSTALL = "reinstall the extension (SLSA Provenance for Azure Pipelines) on the organization or server"


class LaunchError(Exception):
    """A problem with the task's own files: one sentence with what to do."""


def target() -> str:
    machine = platform.machine().lower()
    machine = MACHINES.get(machine, machine)
    if sys.platform == "darwin" and machine == "aarch64":
        machine = "arm64"
    return f"{sys.platform}-{machine}-cp{sys.version_info[0]}{sys.version_info[1]}"


def cache_root() -> Path:
    tools = os.environ.get("AGENT_TOOLSDIRECTORY", "")
    candidates = [Path(tools) / "slsa-provenance"] if tools else []
    for folder in [*candidates, HERE / "cache"]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    raise LaunchError(
        f"no writable folder to unpack the task's dependencies into ({', '.join(map(str, candidates))}"
        f"{', ' if candidates else ''}{HERE / 'cache'}); give the agent's user write access to one of them"
    )


def digest(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def changed(folder: Path, files: dict[str, str], roots: list[str]) -> str | None:
    """Why the files under folder's roots ("" for all of it) differ from the manifest's, or None.
    Python's own bytecode in __pycache__ is the one thing allowed beside the manifest's files."""
    for root in roots:
        for directory, _, names in os.walk(folder / root):
            for name in names:
                relative = (Path(directory) / name).relative_to(folder).as_posix()
                if relative in files:
                    continue
                parent, _, pyc = f"/{relative}".rpartition("/__pycache__/")
                source = f"{parent}/{pyc.split('.')[0]}.py".lstrip("/")
                if not (pyc.endswith(".pyc") and source in files):
                    return f"{relative} is not part of the payload"
    for relative, expected in files.items():
        path = folder / relative
        if not path.is_file():
            return f"{relative} is missing"
        if digest(path) != expected:
            return f"{relative} was changed"
    return None


def unpack(archive: Path, files: dict[str, str], destination: Path) -> None:
    """Write exactly the manifest's files from archive into destination, each checked by its digest."""
    written = set()
    try:
        import lzma  # noqa: F401  (some self-built Pythons lack it; tarfile would only say "xz")
    except ImportError:
        raise LaunchError(
            f"this Python ({sys.executable}) was built without the lzma module the task's payloads need; "
            "add UsePythonVersion@0 before the step, or install a Python built with liblzma"
        ) from None
    with tarfile.open(archive, "r|xz") as tar:
        for member in tar:
            stream = tar.extractfile(member) if member.isfile() else None
            if stream is None or member.name not in files or member.name in written:
                raise LaunchError(f"{archive.name} holds {member.name!r}, which its manifest does not list")
            data = stream.read()
            if hashlib.sha256(data).hexdigest() != files[member.name]:
                raise LaunchError(f"{archive.name}: {member.name} does not match its manifest; {REINSTALL}")
            path = destination / member.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.add(member.name)
    if written != set(files):
        raise LaunchError(f"{archive.name} lacks {sorted(set(files) - written)[0]}; {REINSTALL}")


def ensure(name: str, roots: list[str] | None = None) -> Path:
    """The folder holding payload NAME, unpacked and checked (only under roots, when given)."""
    manifest = json.loads((LIB / f"{name}.json").read_text(encoding="utf-8"))
    files: dict[str, str] = manifest["files"]
    checked = roots if roots is not None else [""]
    selected = files if roots is None else {f: h for f, h in files.items() if f.split("/")[0] in roots}
    root = cache_root()
    folder = root / f"{name}-{manifest['sha256'][:16]}"
    if folder.is_dir():
        reason = changed(folder, selected, checked)
        if reason is None:
            return folder
        print(
            f"##vso[task.logissue type=warning]the cached {folder} differs from the task's payload "
            f"({reason}); unpacking it again"
        )
        stale = root / f".stale-{uuid.uuid4().hex}"
        try:
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:  # in use by another job (Windows): this run unpacks a private copy
            folder = root / f"{folder.name}-{uuid.uuid4().hex[:8]}"
    archive = LIB / manifest["archive"]
    if digest(archive) != manifest["sha256"]:
        raise LaunchError(f"{archive} does not match the digest its manifest records; {REINSTALL}")
    temporary = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        unpack(archive, files, temporary)
        temporary.rename(folder)
    except OSError:
        if changed(folder, selected, checked) is not None:  # not another job's whole copy either
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def main() -> int:
    if sys.argv[1:] == ["--target"]:
        print(target(), platform.python_version())
        return 0
    index = json.loads((LIB / "index.json").read_text(encoding="utf-8"))
    folders = index.get(target())
    try:
        if folders is None:
            supported = ", ".join(sorted(index))
            raise LaunchError(
                f"SlsaProvenance@1 ships no dependencies for {target()}; supported: {supported}"
            )
        compiled = ensure(target().rsplit("-", 1)[0], folders)
        common = ensure("common")
    except (LaunchError, OSError) as error:
        message = str(error).replace("\r", " ").replace("\n", " ")
        print(f"##vso[task.logissue type=error]{message}")
        print(f"##vso[task.complete result=Failed]{message}")
        return 0
    sys.path[:0] = [str(compiled / folder) for folder in folders] + [str(common)]
    from slsa_provenance.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
