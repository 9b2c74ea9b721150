"""The drop's files, selected by glob and hashed with SHA-256 in parallel.

    >>> subjects = collect(Path("drop"), ["bin/**", "*.zip"])   # doctest: +SKIP
    >>> subjects[0]
    Subject(name='bin/app.exe', sha256='9f86d0...', size=1048576)

Names are relative to the drop, `/`-separated, sorted. `_manifest/` at the top of the drop is
never a subject. A symbolic link that leaves the drop, a broken link, and anything that is not a
regular file (FIFO, socket, device) are refused rather than skipped: the drop is published whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance import Subject
from slsa_provenance.verify import Artifact

MANIFEST_DIR = "_manifest"
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_CHUNK = 1 << 20
_buffers = threading.local()


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[Progress], None]


def collect(
    drop: Path,
    patterns: Sequence[str] = (),
    *,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Subject]:
    """Select and hash the drop's files. Raises InputError for an unusable drop or file."""
    return hash_files(select_files(drop, patterns), workers=workers, on_progress=on_progress)


def select_files(drop: Path, patterns: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """(name, path) of every regular file below `drop` matching any pattern (all when none)."""
    if not drop.exists():
        raise InputError(f"drop folder {drop} does not exist", "pass --drop with the build's output")
    if not drop.is_dir():
        raise InputError(f"drop {drop} is not a folder", "pass --drop with the folder to attest")
    found: list[tuple[str, Path]] = []
    _walk(os.path.realpath(drop), drop, "", found)
    if not found:
        raise InputError(
            f"drop folder {drop} has no files outside {MANIFEST_DIR}/",
            "run this step after the build has written its artifacts",
        )
    if not patterns:
        return sorted(found)
    selected: list[tuple[str, Path]] = []
    for pattern in patterns:
        regex = glob_regex(pattern)
        matched = [item for item in found if regex.match(item[0])]
        if not matched:
            raise InputError(
                f"no file in {drop} matches --subject {pattern!r}",
                "check the pattern; '**' crosses folders, a pattern without '/' matches at any depth",
            )
        selected.extend(matched)
    return sorted(set(selected))


def _walk(drop_real: str, folder: Path, prefix: str, found: list[tuple[str, Path]]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(
            f"cannot list folder {folder}: {exc.strerror}", "make it readable by the agent's user"
        ) from exc
    for entry in entries:
        name = f"{prefix}{entry.name}"
        _check_utf8(name)
        path = Path(entry.path)
        if entry.is_symlink():
            target = os.path.realpath(path)
            if os.path.commonpath([drop_real, target]) != drop_real:
                raise InputError(
                    f"{name} is a symbolic link to {target}, outside the drop",
                    "copy the file into the drop instead of linking to it",
                )
            if os.path.isdir(target):
                continue  # its files are subjects under their own names
            if not os.path.isfile(target):
                raise InputError(
                    f"{name} is a broken link or links to something that is not a regular file",
                    "remove it from the drop",
                )
            found.append((name, path))
        elif entry.is_dir(follow_symlinks=False):
            if not (prefix == "" and entry.name == MANIFEST_DIR):
                _walk(drop_real, path, f"{name}/", found)
        elif entry.is_file(follow_symlinks=False):
            found.append((name, path))
        else:
            raise InputError(
                f"{name} is not a regular file (a FIFO, socket or device)",
                "remove it from the drop",
            )


def _check_utf8(name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"file name {name!r} is not valid UTF-8", "rename the file; provenance names are UTF-8"
        ) from exc


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: `*` and `?` stay within a folder, `**` crosses folders, `[a-z]` classes.

    A pattern without `/` matches at any depth (`*.dll` is `**/*.dll`).
    """
    pattern = pattern.strip().removeprefix("./").lstrip("/")
    if "/" not in pattern:
        pattern = f"**/{pattern}"
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body[0] in "!^"
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def hash_files(
    files: Sequence[tuple[str, Path]],
    *,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Subject]:
    """Hash (name, path) pairs on every core; the result is sorted by name."""
    sizes = [_size(name, path) for name, path in files]
    total = sum(sizes)
    workers = workers or os.cpu_count() or 1
    done_files = done_bytes = 0
    subjects: list[Subject] = []
    last_report = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[Subject]] = set()
        queue = iter(files)
        while True:
            while len(pending) < workers * 4 and (item := next(queue, None)) is not None:
                pending.add(pool.submit(_hash_one, *item))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                subject = future.result()
                subjects.append(subject)
                done_files += 1
                done_bytes += subject.size
            if on_progress and time.monotonic() - last_report >= 2:
                last_report = time.monotonic()
                on_progress(Progress(done_files, len(files), done_bytes, total))
    if on_progress:
        on_progress(Progress(done_files, len(files), done_bytes, total))
    return sorted(subjects, key=lambda s: s.name)


def _size(name: str, path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}", "check the drop") from exc


def _hash_one(name: str, path: Path) -> Subject:
    digest, size = sha256_file(path, name)
    return Subject(name=name, sha256=digest, size=size)


def sha256_file(path: Path, name: str = "") -> tuple[str, int]:
    """Stream a file through SHA-256 in 1 MiB chunks. Returns (hex digest, bytes read)."""
    name = name or str(path)
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb", buffering=0) as stream:
            before = os.fstat(stream.fileno())
            while count := stream.readinto(buffer):
                hasher.update(view[:count])
                size += count
            after = os.fstat(stream.fileno())
    except OSError as exc:
        raise InputError(
            f"cannot read {name}: {exc.strerror}",
            "make the file readable by the agent's user, or leave it out with --subject",
        ) from exc
    if size != after.st_size or before.st_mtime_ns != after.st_mtime_ns:
        raise Error(
            f"{name} changed while it was being hashed",
            "run this step after every step that writes to the drop has finished",
        )
    return hasher.hexdigest(), size


def artifact_digests(paths: Sequence[Path], digests: Sequence[str]) -> list[Artifact]:
    """What a gate checks: files (named by their file name), folders (every file, by relative
    name) and `sha256:HEX` digests. Raises InputError when there is nothing, or something unusable."""
    if not paths and not digests:
        raise InputError("no artifact to verify", "pass --artifact PATH or --digest sha256:HEX")
    artifacts = []
    for path in paths:
        if path.is_dir():
            artifacts += [Artifact(s.name, s.sha256) for s in collect(path)]
        elif path.exists():
            artifacts.append(Artifact(path.name, sha256_file(path)[0]))
        else:
            raise InputError(f"artifact {path} does not exist", "pass the file that will be deployed")
    for digest in digests:
        match = _DIGEST.match(digest.strip())
        if not match:
            raise InputError(f"--digest {digest!r} is not sha256:<64 hex>", "pass sha256:HEX")
        artifacts.append(Artifact(digest.strip(), match.group(1).lower()))
    return artifacts
