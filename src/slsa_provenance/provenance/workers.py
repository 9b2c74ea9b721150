"""Jobs run on every core: forked processes on Linux, threads elsewhere (`hashing.py`'s engine).

    >>> workers = Processes(run, count=2)   # doctest: +SKIP
    >>> workers.send([(0, KIND, 0, 500), (1, KIND, 500, 1000)])   # run(kind, start, stop) -> str
    >>> workers.receive()                   # (job number, what run returned), in finishing order
    (1, '')
    >>> workers.stop()

A job is four numbers; what `run` returns comes back as text, what it raises comes back raised by
`receive`. Forked workers take jobs from one pipe, in the order sent, and answer through a pipe of
their own, which a thread of the parent reads. Unlike multiprocessing's pool there is nothing to
import and nothing between the workers and the pipes: the parent spends almost no time while they
work (the pool's threads took 0.06 to 0.09 s of CPU from 2 busy cores on 30,000 files; see
docs/performance.md).
"""

from __future__ import annotations

import os
import signal
import struct
import threading
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import NoReturn

from slsa_provenance.errors import Error

Job = tuple[int, int, int, int]
"""(number, kind, start, stop): what `run(kind, start, stop)` is given."""
Run = Callable[[int, int, int], str]

_JOB = struct.Struct("<4q")
_JOBS_PER_WRITE = 4096 // _JOB.size  # a pipe writes up to 4096 bytes at once, never split between readers
_ANSWER = struct.Struct("<q?q")  # job number, failed, length of what follows
_GONE = (-1, "")


class _Workers:
    def __init__(self) -> None:
        self._answers: SimpleQueue[tuple[int, str | BaseException]] = SimpleQueue()

    def receive(self) -> tuple[int, str]:
        """The next finished job and what it returned. Raises what the job raised, and Error when
        a worker stopped without finishing its job."""
        number, answer = self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        if (number, answer) == _GONE:
            raise Error(
                "a hashing worker stopped before it finished (killed by the system, out of memory?)",
                "run the step again; if it stops again, give the agent more memory",
            )
        return number, answer


class Threads(_Workers):
    """`count` threads of this process (where forking is not possible or not worth it)."""

    def __init__(self, run: Run, count: int) -> None:
        super().__init__()
        self._jobs: SimpleQueue[Job | None] = SimpleQueue()
        self._count = count
        for _ in range(count):
            threading.Thread(target=self._serve, args=(run,), daemon=True).start()

    def send(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._jobs.put(job)

    def stop(self) -> None:
        """The threads end after their current job; `receive` then raises."""
        for _ in range(self._count):
            self._jobs.put(None)
        self._answers.put(_GONE)

    def _serve(self, run: Run) -> None:
        while (job := self._jobs.get()) is not None:
            number, kind, start, stop = job
            try:
                self._answers.put((number, run(kind, start, stop)))
            except BaseException as error:  # handed to receive(), which raises it
                self._answers.put((number, error))


class Processes(_Workers):
    """`count` forked copies of this process (Linux). What they need must exist before: they
    inherit it, so a job is four numbers."""

    def __init__(self, run: Run, count: int) -> None:
        super().__init__()
        self._stopping = threading.Lock()
        self._pids: list[int] = []
        answers: list[int] = []
        jobs_in, self._jobs_out = os.pipe()
        try:
            for _ in range(count):
                answers_in, answers_out = os.pipe()
                answers.append(answers_in)
                try:
                    pid = os.fork()
                except OSError:
                    os.close(answers_out)
                    raise
                if pid == 0:
                    os.close(self._jobs_out)
                    for descriptor in answers:
                        os.close(descriptor)
                    _serve(run, jobs_in, answers_out)
                os.close(answers_out)
                self._pids.append(pid)
        except BaseException:
            self.stop()
            for descriptor in answers:
                os.close(descriptor)
            raise
        finally:
            os.close(jobs_in)
        for descriptor in answers:  # threads only after every fork: a child has the forking thread alone
            threading.Thread(target=self._relay, args=(descriptor,), daemon=True).start()

    def send(self, jobs: Sequence[Job]) -> None:
        """Raises OSError once `stop` has run (in another thread, say)."""
        with self._stopping:  # a copy of the pipe's end: stop() may close it meanwhile, and its number
            descriptor = os.dup(self._jobs_out)  # be given to another file this process opens
        try:
            for first in range(0, len(jobs), _JOBS_PER_WRITE):
                chunk = jobs[first : first + _JOBS_PER_WRITE]
                _write(descriptor, b"".join(_JOB.pack(*job) for job in chunk))
        finally:
            os.close(descriptor)

    def stop(self) -> None:
        """Kills the workers, finished or not, and waits for them. Any thread, any number of times."""
        with self._stopping:
            if self._jobs_out >= 0:
                os.close(self._jobs_out)
                self._jobs_out = -1
            pids, self._pids = self._pids, []
            for pid in pids:  # all at once: each takes the kernel milliseconds to tear down
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for pid in pids:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:  # reaped by the system: this process ignores SIGCHLD
                    pass

    def _relay(self, descriptor: int) -> None:
        """One worker's answers, onto the queue `receive` reads, until its pipe closes."""
        try:
            while head := _read(descriptor, _ANSWER.size):
                number, failed, length = _ANSWER.unpack(head)
                body = _read(descriptor, length)
                if len(body) != length:  # the worker stopped in the middle of its answer
                    break
                self._answers.put((number, _unpickled(body) if failed else body.decode()))
        finally:
            os.close(descriptor)
            self._answers.put(_GONE)


def _serve(run: Run, jobs: int, answers: int) -> NoReturn:
    """A forked worker: jobs until the parent closes the pipe, then exit (never return to the
    parent's code, whatever happens)."""
    try:
        while job := _read(jobs, _JOB.size):
            number, kind, start, stop = _JOB.unpack(job)
            try:
                body, failed = run(kind, start, stop).encode(), False
            except BaseException as error:  # sent to the parent, which raises it
                body, failed = _pickled(error), True
            _write(answers, _ANSWER.pack(number, failed, len(body)) + body)
    finally:
        os._exit(0)


def _pickled(error: BaseException) -> bytes:
    import pickle  # here: most runs raise nothing, and importing it takes milliseconds before the hashing

    try:
        return pickle.dumps(error)
    except Exception:  # an error that cannot cross: its text does
        return pickle.dumps(Error(f"hashing failed: {error!r}", "report this as a bug"))


def _unpickled(body: bytes) -> BaseException:
    import pickle

    error: BaseException = pickle.loads(body)  # noqa: S301 (our own fork's, through a pipe only it and we hold)
    return error


def _read(descriptor: int, size: int) -> bytes:
    """Exactly `size` bytes, or b"" at the end of the pipe."""
    data = b""
    while len(data) < size:
        more = os.read(descriptor, size - len(data))
        if not more:
            return b""
        data += more
    return data


def _write(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]
