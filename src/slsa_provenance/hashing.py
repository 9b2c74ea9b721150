"""SHA-256 of a drop's files on every core, in the background, and of a single file.

    >>> with Hashing(Path("drop"), ["bin/app.exe", "web.zip"]) as hashing:   # doctest: +SKIP
    ...     signer = load_signer()              # the workers hash meanwhile
    ...     subjects = hashing.result()
    >>> subjects[0]
    Subject(name='bin/app.exe', sha256='9f86d0...', size=1048576)

Two rounds over one pool. First every file is stat'ed: its size orders the work, and its size and
modification time are what it must still have when it is read (a file that changes, grows, or is
swapped for a FIFO or device is refused, and never read past its listed size). Then the files are
hashed: files of 8 MiB or more first, largest first, one per task, so that a huge file never starts
last; the rest in name order, in batches of up to 256 files or 4 MiB.

On Linux the pool is forked processes that inherit the list of names, so a task is a few numbers
and per-file Python work runs without a shared GIL; elsewhere threads (reads and hashlib release
the GIL, and starting processes there is slow).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import sys
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.pool import Pool, ThreadPool
from pathlib import Path
from types import TracebackType

from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance import Subject

_READ = 1 << 20
_BIG = 8 << 20
_BATCH_FILES = 256
_BATCH_BYTES = 4 << 20
_SURVEY_FILES = 2048
_PROCESSES_FROM = 2 * _BATCH_FILES
_PROGRESS_EVERY = 2.0
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[Progress], None]


def sha256_file(path: str | Path, name: str = "") -> tuple[str, int]:
    """(hex SHA-256, size) of one regular file. Raises InputError when it cannot be read or is not
    a regular file, and Error when it changed while it was read."""
    name = name or str(path)
    listed = _stat(str(path), name)
    return _sha256(str(path), name, listed.st_size, listed.st_mtime_ns).hex(), listed.st_size


class Hashing:
    """Hashes the named files of `root` from construction on; `result()` waits for the Subjects.

    Use it as a context manager: leaving the block early (an error elsewhere) stops the workers.
    Construction raises InputError when a file cannot be listed (the first round is awaited).
    """

    def __init__(self, root: Path, names: list[str], *, workers: int | None = None) -> None:
        self._names = names
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._results: list[tuple[array[int], str]] = []
        self._error: BaseException | None = None
        self._files_done = self._bytes_done = 0
        files = _Files(str(root), names)
        count = max(1, min(workers or os.cpu_count() or 1, len(names)))
        survey: Callable[[int, int], tuple[array[int], array[int]]]
        digest: Callable[[array[int], array[int], array[int]], str]
        if sys.platform == "linux" and count > 1 and len(names) >= _PROCESSES_FROM:
            self._pool: Pool = multiprocessing.get_context("fork").Pool(count, _inherit, (files,))
            survey, digest = _survey_inherited, _digest_inherited
        else:
            self._pool = ThreadPool(count)
            survey, digest = files.survey, files.digest
        try:
            self._sizes, mtimes = self._survey(survey)
            self._bytes_total = sum(self._sizes)
            self._submit(digest, mtimes)
        except BaseException:
            self._pool.terminate()
            raise

    def __enter__(self) -> Hashing:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._pool.terminate()
        self._pool.join()

    def result(self, on_progress: ProgressCallback | None = None) -> list[Subject]:
        """The Subjects in name order, after every file is hashed; progress every 2 seconds.
        Raises the first worker's error (InputError, Error) as soon as it happens."""
        while not self._finished.wait(_PROGRESS_EVERY):
            if on_progress:
                with self._lock:
                    on_progress(self._progress())
        if self._error:
            raise self._error
        if on_progress:
            on_progress(self._progress())
        digests = [""] * len(self._names)
        for indices, hexes in self._results:
            for position, index in enumerate(indices):
                digests[index] = hexes[64 * position : 64 * position + 64]
        return [Subject(*subject) for subject in zip(self._names, digests, self._sizes, strict=True)]

    def _progress(self) -> Progress:
        return Progress(self._files_done, len(self._names), self._bytes_done, self._bytes_total)

    def _survey(
        self, survey: Callable[[int, int], tuple[array[int], array[int]]]
    ) -> tuple[array[int], array[int]]:
        sizes, mtimes = array("q"), array("q")
        ranges = [
            (start, min(start + _SURVEY_FILES, len(self._names)))
            for start in range(0, len(self._names), _SURVEY_FILES)
        ]
        for part_sizes, part_mtimes in self._pool.starmap(survey, ranges, chunksize=1):
            sizes.extend(part_sizes)
            mtimes.extend(part_mtimes)
        return sizes, mtimes

    def _submit(
        self, digest: Callable[[array[int], array[int], array[int]], str], mtimes: array[int]
    ) -> None:
        tasks = [
            array("q", [index])
            for index in sorted(
                (i for i, size in enumerate(self._sizes) if size >= _BIG), key=lambda i: -self._sizes[i]
            )
        ]
        batch, budget = array("q"), 0
        for index, size in enumerate(self._sizes):
            if size >= _BIG:
                continue
            if batch and (len(batch) == _BATCH_FILES or budget + size > _BATCH_BYTES):
                tasks.append(batch)
                batch, budget = array("q"), 0
            batch.append(index)
            budget += size
        if batch:
            tasks.append(batch)
        if not tasks:
            self._finished.set()
        for task in tasks:
            self._pool.apply_async(
                digest,
                (task, array("q", (self._sizes[i] for i in task)), array("q", (mtimes[i] for i in task))),
                callback=partial(self._done, task),
                error_callback=self._failed,
            )

    def _done(self, task: array[int], hexes: str) -> None:
        with self._lock:
            self._results.append((task, hexes))
            self._files_done += len(task)
            self._bytes_done += sum(self._sizes[i] for i in task)
            if self._files_done == len(self._names):
                self._finished.set()

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._error = self._error or error
            self._finished.set()


class _Files:
    """What a worker needs: the drop and its names. Forked workers inherit it."""

    def __init__(self, root: str, names: list[str]) -> None:
        self.root = root
        self.names = names

    def survey(self, start: int, stop: int) -> tuple[array[int], array[int]]:
        sizes, mtimes = array("q"), array("q")
        for name in self.names[start:stop]:
            listed = _stat(f"{self.root}/{name}", name)
            sizes.append(listed.st_size)
            mtimes.append(listed.st_mtime_ns)
        return sizes, mtimes

    def digest(self, indices: array[int], sizes: array[int], mtimes: array[int]) -> str:
        """The hex digests of the files at `indices`, concatenated."""
        return b"".join(
            _sha256(f"{self.root}/{self.names[index]}", self.names[index], size, mtime)
            for index, size, mtime in zip(indices, sizes, mtimes, strict=True)
        ).hex()


_inherited = _Files("", [])  # replaced in each forked worker


def _inherit(files: _Files) -> None:
    global _inherited
    _inherited = files


def _survey_inherited(start: int, stop: int) -> tuple[array[int], array[int]]:
    return _inherited.survey(start, stop)


def _digest_inherited(indices: array[int], sizes: array[int], mtimes: array[int]) -> str:
    return _inherited.digest(indices, sizes, mtimes)


def _stat(path: str, name: str) -> os.stat_result:
    try:
        listed = os.stat(path)
    except OSError as exc:
        raise InputError(
            f"cannot read {name}: {exc.strerror}",
            "make the file readable by the agent's user, or leave it out with --subject",
        ) from exc
    if not stat.S_ISREG(listed.st_mode):
        raise InputError(
            f"{name} is not a regular file (a FIFO, socket or device)", "remove it from the drop"
        )
    return listed


def _sha256(path: str, name: str, size: int, mtime_ns: int) -> bytes:
    """The digest of a file listed with `size` and `mtime_ns`. It is read up to one byte past its
    listed size, so that growth is seen and nothing (a device put in its place) keeps it reading."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise InputError(
            f"cannot read {name}: {exc.strerror}",
            "make the file readable by the agent's user, or leave it out with --subject",
        ) from exc
    hasher = hashlib.sha256()
    done = 0
    try:
        while True:
            wanted = min(_READ, size + 1 - done)
            chunk = os.read(descriptor, wanted)
            hasher.update(chunk)
            done += len(chunk)
            if len(chunk) < wanted or done > size:
                break
        after = os.fstat(descriptor)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}", "check the drop's storage") from exc
    finally:
        os.close(descriptor)
    if not stat.S_ISREG(after.st_mode):
        raise InputError(
            f"{name} is not a regular file (a FIFO, socket or device)", "remove it from the drop"
        )
    if done != size or after.st_size != size or after.st_mtime_ns != mtime_ns:
        raise Error(
            f"{name} changed while it was being hashed",
            "run this step after every step that writes to the drop has finished",
        )
    return hasher.digest()
