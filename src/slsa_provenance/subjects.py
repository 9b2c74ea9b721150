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
import multiprocessing
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance import Subject
from slsa_provenance.verify import Artifact

MANIFEST_DIR = "_manifest"
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_CHUNK = 1 << 20
_BATCH_FILES = 256
_BATCH_BYTES = 4 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


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
    return hash_files(drop, select_files(drop, patterns), workers=workers, on_progress=on_progress)


def select_files(drop: Path, patterns: Sequence[str] = ()) -> list[str]:
    """Names (relative to `drop`, `/`-separated, sorted) of every regular file below it that
    matches any pattern (all when none)."""
    if not drop.exists():
        raise InputError(f"drop folder {drop} does not exist", "pass --drop with the build's output")
    if not drop.is_dir():
        raise InputError(f"drop {drop} is not a folder", "pass --drop with the folder to attest")
    found: list[str] = []
    _walk(os.path.realpath(drop), str(drop), "", found)
    if not found:
        raise InputError(
            f"drop folder {drop} has no files outside {MANIFEST_DIR}/",
            "run this step after the build has written its artifacts",
        )
    if not patterns:
        return sorted(found)
    selected: list[str] = []
    for pattern in patterns:
        regex = glob_regex(pattern)
        matched = [name for name in found if regex.match(name)]
        if not matched:
            raise InputError(
                f"no file in {drop} matches --subject {pattern!r}",
                "check the pattern; '**' crosses folders, a pattern without '/' matches at any depth",
            )
        selected.extend(matched)
    return sorted(set(selected))


def _walk(drop_real: str, folder: str, prefix: str, found: list[str]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(
            f"cannot list folder {folder}: {exc.strerror}", "make it readable by the agent's user"
        ) from exc
    for entry in entries:
        name = f"{prefix}{entry.name}"
        _check_utf8(name)
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
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
            found.append(name)
        elif entry.is_dir(follow_symlinks=False):
            if not (prefix == "" and entry.name == MANIFEST_DIR):
                _walk(drop_real, entry.path, f"{name}/", found)
        elif entry.is_file(follow_symlinks=False):
            found.append(name)
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
    drop: Path,
    names: Sequence[str],
    *,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Subject]:
    """Hash the named files of `drop` on every core; the result is sorted by name.

    Files go out in batches, largest first, so that a huge file starts early instead of finishing
    last. On Linux the batches go to forked processes (per-file Python work then runs without a
    shared GIL); elsewhere to threads (hashlib and reads release the GIL, process start is slow).
    """
    root = str(drop)
    sized = sorted(((_size(root, name), name) for name in names), key=lambda item: -item[0])
    total = sum(size for size, _ in sized)
    workers = max(1, min(workers or os.cpu_count() or 1, len(sized)))
    subjects: list[Subject] = []
    with _executor(workers, len(sized)) as pool:
        pending = {pool.submit(_hash_batch, root, batch) for batch in _batches(sized)}
        while pending:
            finished, pending = wait(pending, timeout=2, return_when=FIRST_EXCEPTION)
            for future in finished:
                subjects.extend(Subject(name, digest, size) for name, digest, size in future.result())
            if on_progress and pending:
                on_progress(Progress(len(subjects), len(sized), sum(s.size for s in subjects), total))
    if on_progress:
        on_progress(Progress(len(sized), len(sized), total, total))
    return sorted(subjects, key=lambda s: s.name)


def _executor(workers: int, files: int) -> Executor:
    if sys.platform == "linux" and workers > 1 and files >= 2 * _BATCH_FILES:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def _batches(sized: list[tuple[int, str]]) -> list[list[str]]:
    batches: list[list[str]] = []
    budget = 0
    for size, name in sized:
        if not batches or len(batches[-1]) >= _BATCH_FILES or budget + size > _BATCH_BYTES:
            batches.append([])
            budget = 0
        batches[-1].append(name)
        budget += size
    return batches


def _hash_batch(root: str, batch: list[str]) -> list[tuple[str, str, int]]:
    return [(name, *sha256_file(os.path.join(root, name), name)) for name in batch]


def _size(root: str, name: str) -> int:
    try:
        return os.stat(os.path.join(root, name)).st_size
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}", "check the drop") from exc


def sha256_file(path: str | Path, name: str = "") -> tuple[str, int]:
    """Stream a file through SHA-256, 1 MiB at a time. Returns (hex digest, bytes read).

    Raises InputError when the file cannot be read or is not a regular file (checked on the open
    descriptor, so a file swapped for a FIFO cannot hang the step), and Error when it changed
    while it was read.
    """
    name = name or str(path)
    hasher = hashlib.sha256()
    size = 0
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise InputError(
            f"cannot read {name}: {exc.strerror}",
            "make the file readable by the agent's user, or leave it out with --subject",
        ) from exc
    try:
        before = os.fstat(descriptor)
        if not stat.S_ISREG(before.st_mode):
            raise InputError(
                f"{name} is not a regular file (a FIFO, socket or device)", "remove it from the drop"
            )
        wanted = min(_CHUNK, before.st_size + 1)  # a small file in one read, its EOF seen by a short read
        while chunk := os.read(descriptor, wanted):
            hasher.update(chunk)
            size += len(chunk)
            if len(chunk) < wanted:
                break
            wanted = _CHUNK
        after = os.fstat(descriptor)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}", "check the drop's storage") from exc
    finally:
        os.close(descriptor)
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
