"""SHA-256 of a drop's files on every core, in the background, and of a single file.

    >>> with Hashing(Path("drop"), ["bin/app.exe", "web.zip"]) as hashing:   # doctest: +SKIP
    ...     signer = load_signer()              # the workers hash meanwhile
    ...     subjects = hashing.result()
    >>> subjects[0]
    Subject(name='bin/app.exe', sha256='9f86d0...', size=1048576)

Two rounds over the same workers. First every file is stat'ed, into memory shared with the workers: its size
orders the work, and its size and modification time are what it must still have when it is read (a
file that changes, grows, or is swapped for a FIFO or device is refused, and never read past its
listed size). Then the files are hashed: files of 8 MiB or more first, largest first, one per task,
so that a huge file never starts last; the rest in name order, in runs of up to 256 files or 64 MiB.
A run is hashed 32 files at a time with AVX-512 where the CPU has it (`_sha256x16.c`), else one by
one with hashlib.

On Linux the workers are forked processes that inherit the list of names, so a task is a few
numbers and per-file Python work runs without a shared GIL; elsewhere threads (reads and hashlib
release the GIL, and starting processes there is slow); see `workers.py`. A thread of the caller
hands out the tasks once the survey is done and makes each task's Subjects as it finishes,
so that `result()` has little left to do.
"""

from __future__ import annotations

import gc
import hashlib
import mmap
import os
import stat
import sys
import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from pathlib import Path
from types import ModuleType, TracebackType
from typing import NamedTuple

from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance.statement import Subject
from slsa_provenance.provenance.workers import Job, Processes, Threads

_READ = 1 << 20
_BIG = 8 << 20
_BATCH_FILES = 256
_BATCH_BYTES = 64 << 20
_SURVEY_FILES = 2048
_PROCESSES_FROM = 2 * _BATCH_FILES
_UNHASHED = Subject("", "")
_NATIVE_ARENA = 32 * ((128 << 10) + 256)  # 32 lanes x (128 KiB + 256), as in _sha256x16.c
_PROGRESS_EVERY = 2.0
_SURVEY, _RUN, _LARGE = 0, 1, 2  # the kinds of job: stat files, hash a run of them, hash a large one
# While the caller works (imports, validation), the threads here wait for the GIL to pass on the
# survey's answers and hand out the tasks: 5 ms a time at Python's default interval, 0.5 ms at this one.
_SWITCH_INTERVAL = 0.0005
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
    digest = _sha256(str(path), name, listed.st_size, listed.st_mtime_ns, memoryview(bytearray(_READ)))
    return digest.hex(), listed.st_size


class Hashing:
    """Hashes the named files of `root` from construction on; `result()` waits for the Subjects.

    Use it as a context manager: leaving the block early (an error elsewhere) stops the workers.
    Construction only starts the workers: the caller works while they stat the files and hash them,
    and `result()` raises what went wrong (InputError for a file that cannot be read).
    `native=False` hashes with hashlib only.
    """

    def __init__(
        self, root: Path, names: list[str], *, workers: int | None = None, native: bool = True
    ) -> None:
        self._names = names
        self._subjects = [_UNHASHED] * len(names)
        self._sizes = memoryview(array("q"))
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._error: BaseException | None = None
        self._files_done = self._bytes_done = self._bytes_total = 0
        files = _Files(str(root), names, native)
        count = max(1, min(workers or os.cpu_count() or 1, len(names)))
        if sys.platform == "linux" and count > 1 and len(names) >= _PROCESSES_FROM:
            gc.freeze()  # the workers' collections then skip the objects they inherit, and never copy them
            try:
                self._workers: Processes | Threads = Processes(files.run, count)
            finally:
                gc.unfreeze()
        else:
            self._workers = Threads(files.run, count)
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL)
        step = max(_SURVEY_FILES, -(-len(names) // (2 * count)))
        surveys = [(i, _SURVEY, i, min(i + step, len(names))) for i in range(0, len(names), step)]
        threading.Thread(target=self._coordinate, args=(files, surveys), daemon=True).start()

    def __enter__(self) -> Hashing:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._workers.stop()
        sys.setswitchinterval(self._switch_interval)

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
        return list(self._subjects)

    def _progress(self) -> Progress:
        return Progress(self._files_done, len(self._names), self._bytes_done, self._bytes_total)

    def _coordinate(self, files: _Files, surveys: list[Job]) -> None:
        """In a thread of its own while the caller works: the survey, then the hashing tasks, each
        task's Subjects made as it finishes."""
        try:
            self._workers.send(surveys)
            for _ in surveys:
                self._workers.receive()
            self._sizes = files.sizes
            tasks = self._tasks()
            self._workers.send(
                [(i, _LARGE if t.large else _RUN, t.start, t.stop) for i, t in enumerate(tasks)]
            )
            self._bytes_total = sum(task.bytes for task in tasks)
            for _ in tasks:
                number, hexes = self._workers.receive()
                self._done(tasks[number], hexes)
        except BaseException as error:  # raised by result(): this thread must not die silently
            with self._lock:
                self._error = error
        self._finished.set()
        # Done: they end now, not when the caller leaves the block, and once result() has its
        # answer (their teardown need not delay it).
        self._workers.stop()

    def _tasks(self) -> list[_Task]:
        """Large files first, largest first; then the others in runs of names, cut by count and bytes."""
        sizes = self._sizes.tolist()  # while this runs, the workers wait: plain ints are quickest
        if max(sizes, default=0) < _BIG:  # most drops
            tasks, ends = [], list(accumulate(sizes))
        else:
            large = sorted((i for i, size in enumerate(sizes) if size >= _BIG), key=lambda i: -sizes[i])
            tasks = [_Task(index, index + 1, True, sizes[index]) for index in large]
            ends = list(accumulate(size if size < _BIG else 0 for size in sizes))
        start = 0
        while start < len(sizes):
            before = ends[start - 1] if start else 0
            stop = min(start + _BATCH_FILES, bisect_right(ends, before + _BATCH_BYTES, lo=start + 1))
            tasks.append(_Task(start, stop, False, ends[stop - 1] - before))
            start = stop
        return tasks

    def _done(self, task: _Task, hexes: str) -> None:
        """The task's Subjects in their places, while the others hash."""
        split = [hexes[offset : offset + 64] for offset in range(0, len(hexes), 64)]
        if not task.large and len(split) == task.stop - task.start:  # no large file inside
            names, sizes = self._names[task.start : task.stop], self._sizes[task.start : task.stop]
            # tuple.__new__ makes each without a call of Python code: a quarter faster than Subject()
            self._subjects[task.start : task.stop] = map(
                tuple.__new__, repeat(Subject), zip(names, split, sizes, strict=True)
            )
        else:
            for index, digest in zip(task.indices(self._sizes), split, strict=True):
                self._subjects[index] = Subject(self._names[index], digest, self._sizes[index])
        with self._lock:
            self._files_done += len(split)
            self._bytes_done += task.bytes


class _Task(NamedTuple):
    """The files in [start, stop) of one kind: large (hashed alone) or not (a run, hashed 32 at a time)."""

    start: int
    stop: int
    large: bool
    bytes: int

    def indices(self, sizes: memoryview) -> list[int]:
        return [i for i in range(self.start, self.stop) if (sizes[i] >= _BIG) == self.large]


class _Files:
    """What a worker needs: the drop, its names, and their sizes and mtimes, in memory shared with
    every worker (a survey writes them, the hashing reads them). Forked workers inherit it."""

    def __init__(self, root: str, names: list[str], native: bool = True) -> None:
        self.root = root
        self.names = names
        self.native = native
        """False: hashlib only, never the AVX-512 module (a deployment gate's choice)."""
        listing = memoryview(mmap.mmap(-1, 16 * max(len(names), 1))).cast("q")
        self.sizes, self.mtimes = listing[: len(names)], listing[len(names) : 2 * len(names)]

    def survey(self, start: int, stop: int) -> None:
        names = self.names[start:stop]
        paths = [f"{self.root}/{name}" for name in names]
        done = 0
        while done < len(paths):
            if _NATIVE is not None and self.native:
                sizes, mtimes, count = _NATIVE.stat_files(paths[done:])
                self.sizes[start + done : start + done + count] = memoryview(sizes).cast("q")
                self.mtimes[start + done : start + done + count] = memoryview(mtimes).cast("q")
                done += count
                if done == len(paths):
                    break
            listed = _stat(paths[done], names[done])  # names what stopped the native loop, if it ran
            self.sizes[start + done], self.mtimes[start + done] = listed.st_size, listed.st_mtime_ns
            done += 1

    def run(self, kind: int, start: int, stop: int) -> str:
        """A job, in a worker: stat the files in [start, stop), or hash them (their digests)."""
        if kind == _SURVEY:
            self.survey(start, stop)
            return ""
        return self.digest(_Task(start, stop, kind == _LARGE, 0))

    def digest(self, task: _Task) -> str:
        """The task's hex digests, concatenated. A run of files goes to the native module, 32 at a
        time, in one call; a large file alone, every file without the module, and a file the native
        loop found not as listed (read again, to name the problem) stream through hashlib."""
        sizes, mtimes = self.sizes[task.start : task.stop], self.mtimes[task.start : task.stop]
        indices: Sequence[int] = range(task.start, task.stop)
        if not task.large and max(sizes) >= _BIG:  # a run with a large file in it, hashed on its own
            indices = [index for index in indices if self.sizes[index] < _BIG]
            sizes = memoryview(array("q", (self.sizes[index] for index in indices)))
            mtimes = memoryview(array("q", (self.mtimes[index] for index in indices)))
        joined: bytes
        refused: bytes
        joined, refused = b"", b"\x01" * len(indices)
        if _NATIVE is not None and self.native and not task.large:
            joined, refused = _NATIVE.digest_files(
                [f"{self.root}/{self.names[index]}" for index in indices],
                sizes,
                mtimes,
                _arena()[:_NATIVE_ARENA],
            )
            if 1 not in refused:  # most runs
                return joined.hex()
        stream = _arena()[_NATIVE_ARENA:]
        return b"".join(
            _sha256(
                f"{self.root}/{self.names[index]}",
                self.names[index],
                self.sizes[index],
                self.mtimes[index],
                stream,
            )
            if refused[position]
            else joined[32 * position : 32 * position + 32]
            for position, index in enumerate(indices)
        ).hex()


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


def _sha256(path: str, name: str, size: int, mtime_ns: int, buffer: memoryview) -> bytes:
    """The digest of a file listed with `size` and `mtime_ns`, streamed through `buffer`. Always
    asks for one byte past the listed size and never reads more: growth, or content that the file
    system under-reports (procfs, FUSE), is seen, and a device put in its place cannot keep it
    reading. Raises when it is not the regular file that was listed any more."""
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
        while done <= size:
            window = buffer[: size + 1 - done]
            count = _read_into(descriptor, window)
            if not count:
                break
            hasher.update(window[:count])
            done += count
            if done == size and count < len(window):  # a short read ending at the listed end: the end
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
    if done > size and after.st_size == size:
        raise InputError(
            f"{name} holds more than the {size} bytes its file system lists (procfs, FUSE, stale "
            "network attributes)",
            "copy the file to a local disk first, or leave it out with --subject",
        )
    if done != size or after.st_size != size or after.st_mtime_ns != mtime_ns:
        raise Error(
            f"{name} changed while it was being hashed",
            "run this step after every step that writes to the drop has finished",
        )
    return hasher.digest()


def _read_into(descriptor: int, window: memoryview) -> int:
    if hasattr(os, "readv"):
        return os.readv(descriptor, [window])
    data = os.read(descriptor, len(window))  # Windows: no readv
    window[: len(data)] = data
    return len(data)


_ARENAS = threading.local()


def _arena() -> memoryview:
    """This worker's reusable memory: the native lanes' chunks, then hashlib's. Reused, it stays
    mapped and in the cache; a fresh buffer per file costs page faults and cache misses."""
    arena: memoryview | None = getattr(_ARENAS, "view", None)
    if arena is None:
        arena = _ARENAS.view = memoryview(bytearray(_NATIVE_ARENA + _READ))
    return arena


def _native() -> ModuleType | None:
    """The AVX-512 module when it is here, runs on this CPU, and gives hashlib's digests for
    messages whose padding takes every path (one block, two blocks, an empty message)."""
    try:
        from slsa_provenance.provenance import _sha256x16
    except ImportError:
        return None
    probes = [bytes(range(256)) * 5]
    probes += [probes[0][:length] for length in (0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000)]
    expected = b"".join(hashlib.sha256(p).digest() for p in probes)
    return _sha256x16 if _sha256x16.SUPPORTED and _sha256x16.digest_many(probes) == expected else None


_NATIVE = _native()
