"""All-or-nothing writes: every file lands complete, or none of them does.

    >>> write_files({Path("out/a.json"): b"{}", Path("out/b.json"): b"[]"})   # doctest: +SKIP

Each file is written to a private temporary file beside its target (mode 0600 from the start),
flushed to disk, then renamed into place; on any failure the temporaries, and folders this call
created, are removed.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from slsa_provenance.errors import Error, InputError


def write_files(
    contents: Mapping[Path, bytes | Sequence[bytes]],
    private: frozenset[Path] = frozenset(),
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Write every file or none (each given whole or as parts); `private` ones get mode 0600,
    the others 0644. `before_rename` runs once every file is on disk, before any is renamed into
    place: if it raises, nothing is written (so a step that fails there has left no outputs).

    Raises Error naming the path and the system's reason, or what `before_rename` raises.
    """
    created: list[Path] = []
    staged: list[tuple[str, Path]] = []
    try:
        try:
            writes = []
            try:
                for target, data in contents.items():
                    _make_parents(target.parent, created)
                    handle, temporary = _private_file(target)
                    staged.append((temporary, target))
                    parts = [data] if isinstance(data, bytes) else data
                    mode = 0o600 if target in private else 0o644
                    writes.append(partial(_fill, handle, temporary, parts, mode))
            except BaseException:
                for write in writes:
                    os.close(write.args[0])
                raise
            _at_once(writes)
        except OSError as exc:
            raise _cannot_write(exc, contents) from exc
        if before_rename is not None:
            before_rename()
        try:
            for temporary, target in staged:
                os.replace(temporary, target)
        except OSError as exc:
            raise _cannot_write(exc, contents) from exc
    except BaseException:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        for folder in reversed(created):
            folder.rmdir()
        raise


def _private_file(target: Path) -> tuple[int, str]:
    """A new file beside `target`, named `.NAME.<8 random hex digits>`, open for writing, mode 0600:
    what tempfile.mkstemp does (names as long), without importing tempfile (6 ms, spent when the
    run is almost done)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = str(target.parent / f".{target.name}.{os.urandom(4).hex()}")
        try:
            return os.open(path, flags, 0o600), path  # not inherited by child processes (PEP 446)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(target.parent))


def _fill(handle: int, path: str, parts: Sequence[bytes], mode: int) -> None:
    with os.fdopen(handle, "wb") as stream:
        for part in parts:
            stream.write(part)
        stream.flush()
        if hasattr(os, "fchmod"):  # the file itself, not whatever its name leads to by now
            os.fchmod(stream.fileno(), mode)
        os.fsync(stream.fileno())
    if not hasattr(os, "fchmod"):  # Windows: only the read-only bit
        os.chmod(path, mode)


def _at_once(writes: Sequence[Callable[[], None]]) -> None:
    """Every write, each but the first in a thread of its own (writing and syncing let go of the
    GIL: two large files take about the time of one); raises the first error once all are done."""
    errors: list[BaseException] = []

    def run(write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as error:  # raised below, in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(write,)) for write in writes[1:]]
    for thread in threads:
        thread.start()
    for write in writes[:1]:
        run(write)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _cannot_write(exc: OSError, contents: Mapping[Path, object]) -> Error:
    where = exc.filename or next(iter(contents))
    return Error(
        f"cannot write {where}: {exc.strerror}",
        "choose an output folder the agent can write to, with free space",
    )


def _make_parents(folder: Path, created: list[Path]) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


def read_limited(path: Path, what: str, limit: int) -> bytes:
    """Read a whole file of at most `limit` bytes. Raises InputError naming `what`."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{what} file {path} is {size} bytes", f"expected at most {limit} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror}", "check the path") from exc
