"""The hashing engine's workers: forked processes and threads, one contract (workers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance.workers import Processes, Threads

forking = pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")


MEETING: list[Path] = []  # set before the workers start: forked ones inherit it


def echo(kind: int, start: int, stop: int) -> str:
    if kind == 3:  # wait until another worker has taken a job of this kind: both are then reading
        with MEETING[0].open("a") as meeting:
            meeting.write(f"{os.getpid()}.{threading.get_ident()}\n")
        deadline = time.monotonic() + 10
        while len(set(MEETING[0].read_text().split())) < 2:
            assert time.monotonic() < deadline, "the other worker never took a job"
            time.sleep(0.001)
    if kind == 1:
        raise InputError(f"cannot read f{start}: No such file or directory", "make the file readable")
    if kind == 2:
        return "x" * stop  # longer than a pipe holds
    return f"{os.getpid()}:{start}-{stop}"


def answers(workers: Processes | Threads, count: int) -> dict[int, str]:
    received = dict(workers.receive() for _ in range(count))
    assert len(received) == count
    return received


@pytest.mark.parametrize("kind", [Processes, Threads], ids=["processes", "threads"])
def test_every_job_is_done_once_whatever_the_order(
    kind: type[Processes] | type[Threads], tmp_path: Path
) -> None:
    """1,000 jobs, eight pipe writes of them, taken by two readers at once: none lost, none twice.
    The first two meet, so both readers are known to be reading (one could take all otherwise)."""
    MEETING[:] = [tmp_path / "meeting"]
    workers = kind(echo, 2)
    try:
        workers.send([(n, 3 if n < 2 else 0, n, n + 1) for n in range(1000)])
        received = answers(workers, 1000)
    finally:
        workers.stop()
    assert {n: text.split(":")[1] for n, text in received.items()} == {n: f"{n}-{n + 1}" for n in range(1000)}
    if kind is Processes:
        assert len({text.split(":")[0] for text in received.values()} - {str(os.getpid())}) == 2


@pytest.mark.parametrize("kind", [Processes, Threads], ids=["processes", "threads"])
def test_what_a_job_raises_is_raised_with_its_remedy(kind: type[Processes] | type[Threads]) -> None:
    workers = kind(echo, 2)
    outcomes: dict[int, str] = {}
    errors: list[InputError] = []
    try:
        workers.send([(0, 0, 0, 1), (1, 1, 7, 8), (2, 2, 0, 300_000)])
        for _ in range(3):  # a failed job does not stop the others
            try:
                number, text = workers.receive()
                outcomes[number] = text
            except InputError as error:
                errors.append(error)
    finally:
        workers.stop()
    assert [e.diagnostics() for e in errors] == [
        "cannot read f7: No such file or directory: make the file readable"
    ]
    assert sorted(outcomes) == [0, 2] and outcomes[2] == "x" * 300_000


class UnpicklableError(Exception):
    def __init__(self) -> None:
        super().__init__("a lock inside")
        self.lock = threading.Lock()


def raise_unpicklable(kind: int, start: int, stop: int) -> str:
    raise UnpicklableError


@forking
def test_an_error_that_cannot_cross_arrives_as_its_text() -> None:
    workers = Processes(raise_unpicklable, 1)
    try:
        workers.send([(0, 0, 0, 1)])
        with pytest.raises(Error, match=r"hashing failed: UnpicklableError\('a lock inside'\)"):
            workers.receive()
    finally:
        workers.stop()


def exit_at_once(kind: int, start: int, stop: int) -> str:
    os._exit(3)  # as the kernel's OOM killer would: no answer, no goodbye


@forking
def test_a_worker_that_dies_is_an_error_not_a_wait() -> None:
    workers = Processes(exit_at_once, 2)
    try:
        workers.send([(0, 0, 0, 1)])
        with pytest.raises(Error, match="a hashing worker stopped before it finished"):
            workers.receive()
    finally:
        workers.stop()


def sleep_long(kind: int, start: int, stop: int) -> str:
    time.sleep(60)
    return ""


@forking
def test_stop_ends_busy_workers_at_once_and_leaves_no_child() -> None:
    workers = Processes(sleep_long, 2)
    workers.send([(0, 0, 0, 1), (1, 0, 1, 2)])
    pids = list(workers._pids)
    started = time.monotonic()
    workers.stop()
    assert time.monotonic() - started < 5
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already: no zombie
    with pytest.raises(Error, match="stopped before it finished"):
        workers.receive()


@forking
def test_stop_works_where_children_are_reaped_by_the_system() -> None:
    """A parent that ignores SIGCHLD (inherited across exec) has no child to wait for: stop() must
    neither raise nor leave the workers running."""
    code = (
        "import signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN);"
        "sys.path[:0] = sys.argv[1:];"
        "from test_workers import Processes, echo;"
        "workers = Processes(echo, 2); workers.send([(0, 0, 0, 1), (1, 0, 1, 2)]);"
        "[workers.receive() for _ in range(2)]; workers.stop(); workers.stop(); print('stopped')"
    )
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", code, tests], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "stopped\n", "")


def test_stopped_threads_release_a_waiting_receiver() -> None:
    workers = Threads(echo, 2)
    workers.stop()
    with pytest.raises(Error, match="stopped before it finished"):
        workers.receive()


@forking
def test_sending_after_stop_raises_and_writes_nowhere(tmp_path: Path) -> None:
    workers = Processes(echo, 1)
    workers.stop()
    with open(tmp_path / "opened-after-stop", "wb"):  # may well be given the pipe's old number
        with pytest.raises(OSError):
            workers.send([(0, 0, 0, 1)])
    assert (tmp_path / "opened-after-stop").read_bytes() == b""
