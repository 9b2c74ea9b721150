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
digests; a changed, missing or added file, an unlisted folder or a symbolic link makes it warn and
unpack the payload again.

Jobs of other pipelines may share the cache (self-hosted agents with one tools folder, one user), so
nothing in it is trusted beyond the manifest: the folders go on sys.path after the standard library
(index.js starts Python with -I -S: no site-packages either), and their modules are compiled on
every run from the bytes read, once those match the manifest, since a `.pyc` beside them (an
unchecked hash-based one above all) would run without its source being read. No bytecode is
written into the cache either. Compiled extension modules load only if the manifest lists them;
the system loads them by path, so their bytes are checked with the rest, before the import.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import uuid
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import CodeType, ModuleType

HERE = Path(__file__).resolve().parent
LIB = HERE / "lib"
MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
REINSTALL = "reinstall the extension (SLSA Provenance for Azure Pipelines) on the organization or server"


class LaunchError(Exception):
    """A problem with the task's own files: one sentence with what to do."""


def issue(kind: str, message: str) -> None:
    """A ##vso issue (and, for an error, the step's failure) whose message cannot break out of its line
    or become a command of its own, whatever the file names in it hold."""
    for raw, encoded in (("%", "%AZP25"), ("\r", "%0D"), ("\n", "%0A")):
        message = message.replace(raw, encoded)
    message = message.replace("##vso[", "##vso\u200b[").replace("##[", "##\u200b[")
    print(f"##vso[task.logissue type={kind}]{message}")
    if kind == "error":
        print(f"##vso[task.complete result=Failed]{message}")


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
    """Why the tree under folder's roots ("" for all of it) differs from the manifest's files, or None:
    a symbolic link, a file or folder the manifest does not list, a missing or changed file."""
    folders = {parent.as_posix() for name in files for parent in Path(name).parents}
    for root in roots:
        if (folder / root).is_symlink():
            return f"{root or folder.name} is a symbolic link"
        for directory, subfolders, names in os.walk(folder / root):
            for name in subfolders + names:
                path = Path(directory) / name
                relative = path.relative_to(folder).as_posix()
                if path.is_symlink():
                    return f"{relative} is a symbolic link"
                if relative not in (folders if name in subfolders else files):
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


def ensure(name: str, roots: list[str] | None = None) -> tuple[Path, dict[str, str]]:
    """The folder holding payload NAME, unpacked and checked (only under roots, when given), and the
    manifest's digest of each file checked there, by its full path."""
    manifest = json.loads((LIB / f"{name}.json").read_text(encoding="utf-8"))
    files: dict[str, str] = manifest["files"]
    checked = roots if roots is not None else [""]
    selected = files if roots is None else {f: h for f, h in files.items() if f.split("/")[0] in roots}
    root = cache_root()
    folder = root / f"{name}-{manifest['sha256'][:16]}"
    if folder.is_dir() or folder.is_symlink():
        reason = changed(folder, selected, checked)
        if reason is None:
            return folder, {str(folder / name): digest for name, digest in selected.items()}
        issue(
            "warning", f"the cached {folder} differs from the task's payload ({reason}); unpacking it again"
        )
        stale = root / f".stale-{uuid.uuid4().hex}"
        try:
            folder.rename(stale)
            stale.unlink() if stale.is_symlink() else shutil.rmtree(stale, ignore_errors=True)
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
    return folder, {str(folder / name): digest for name, digest in selected.items()}


# The manifest's digest of every file checked in the cache, by full path: what the loaders may load.
LISTED: dict[str, str] = {}


class CheckedSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the source it has read, once those bytes are the manifest's: no bytecode is read from
    beside it or written there, and a file swapped after the cache was checked is refused."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        if hashlib.sha256(source).hexdigest() != LISTED.get(path):
            raise ImportError(f"{path} changed after the task's cache was checked; run the step again")
        return self.source_to_code(source, path)


class ListedExtensionLoader(importlib.machinery.ExtensionFileLoader):
    """Loads a compiled module only if the manifest lists it (a file added after the check is refused;
    the system loads it by path, so its bytes were checked with the rest, before the import)."""

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        if self.path not in LISTED:
            raise ImportError(f"{self.path} is not part of the task's payload")
        return super().create_module(spec)


def import_from(folders: list[Path], digests: dict[str, str]) -> None:
    """Put folders on sys.path after the standard library, their modules loaded by the loaders above
    against digests (the manifest's, by full path)."""
    LISTED.clear()
    LISTED.update(digests)
    roots = tuple(str(folder) for folder in folders)
    finder = importlib.machinery.FileFinder.path_hook(
        (ListedExtensionLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (CheckedSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
    )

    def in_cache(entry: str) -> importlib.abc.PathEntryFinder:
        if entry in roots or entry.startswith(tuple(root + os.sep for root in roots)):
            return finder(entry)
        raise ImportError("not one of the task's folders")

    sys.path_hooks.insert(0, in_cache)
    sys.path_importer_cache.clear()
    sys.path.extend(roots)


def main() -> int:
    if sys.argv[1:] == ["--target"]:
        print(target(), platform.python_version())
        return 0
    index = json.loads((LIB / "index.json").read_text(encoding="utf-8"))
    folders = index.get(target())
    try:
        if not (sys.flags.isolated and sys.flags.no_site):
            raise LaunchError(f"start {HERE / 'launch.py'} as index.js does: python -I -S launch.py task")
        if folders is None:
            supported = ", ".join(sorted(index))
            raise LaunchError(
                f"SlsaProvenance@1 ships no dependencies for {target()}; supported: {supported}"
            )
        compiled, compiled_digests = ensure(target().rsplit("-", 1)[0], folders)
        common, common_digests = ensure("common")
    except (LaunchError, OSError) as error:
        issue("error", str(error))
        return 0
    import_from([compiled / folder for folder in folders] + [common], compiled_digests | common_digests)
    from slsa_provenance.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    # One short run that makes few reference cycles: collections would only cost time (10 ms of
    # the imports alone; more for the objects of a large drop). The process's end frees everything.
    gc.disable()
    code = main()
    gc.freeze()  # the process ends: a last collection over every object it made would only cost time
    sys.exit(code)
