"""The hashing engine: the AVX-512 lanes against hashlib, and the pool's two rounds end to end."""

from __future__ import annotations

import hashlib
import os
import random
from array import array
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance import hashing
from slsa_provenance.provenance.hashing import Hashing
from slsa_provenance.provenance.subjects import collect, select_files

try:
    from slsa_provenance.provenance import _sha256x16
except ImportError:  # built without a C compiler: hashlib does all the work
    _sha256x16 = None  # type: ignore[assignment]

lanes = pytest.mark.skipif(
    _sha256x16 is None or not _sha256x16.SUPPORTED,
    reason="the AVX-512 module is not built here or this CPU has no AVX-512F/BW",
)

FIPS_180_EXAMPLES = [  # FIPS 180-2, appendix B
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


def expected(messages: list[bytes]) -> bytes:
    return b"".join(hashlib.sha256(m).digest() for m in messages)


@lanes
def test_the_lanes_give_the_fips_examples() -> None:
    digests = _sha256x16.digest_many([m for m, _ in FIPS_180_EXAMPLES])
    assert [digests[i : i + 32].hex() for i in range(0, 96, 32)] == [d for _, d in FIPS_180_EXAMPLES]


@lanes
def test_the_lanes_agree_with_hashlib_at_every_padding_boundary() -> None:
    data = os.urandom(400)
    messages = [data[:length] for length in range(400)]  # one and two padding blocks, 0 to 6 whole blocks
    random.Random(1).shuffle(messages)
    assert _sha256x16.digest_many(messages) == expected(messages)


@lanes
@given(st.lists(st.binary(max_size=3000), max_size=70))
def test_the_lanes_agree_with_hashlib(messages: list[bytes]) -> None:
    assert _sha256x16.digest_many(messages) == expected(messages)


@lanes
def test_the_lanes_take_memoryviews_and_keep_the_list_order() -> None:
    arena = memoryview(bytearray(os.urandom(1 << 20)))
    sizes = [random.Random(2).randint(0, 65536) for _ in range(100)]
    views = [arena[i * 1000 : i * 1000 + size] for i, size in enumerate(sizes)]
    assert _sha256x16.digest_many(views) == expected([bytes(v) for v in views])


@lanes
def test_the_lanes_refuse_what_is_not_a_list_of_buffers() -> None:
    with pytest.raises(TypeError, match="list"):
        _sha256x16.digest_many((b"a",))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _sha256x16.digest_many([b"a", "text"])  # type: ignore[list-item]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )


@pytest.mark.skipif(
    not {"avx512f", "avx512bw"} <= cpu_flags(), reason="this CPU has no AVX-512F/BW: hashlib hashes alone"
)
def test_the_engine_uses_the_lanes_where_the_cpu_has_them() -> None:
    """Fails on a machine that could run the module but did not build it (a missing C compiler)."""
    assert _sha256x16 is not None and _sha256x16.SUPPORTED and hashing._NATIVE is _sha256x16


def small_drop(folder: Path, files: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    contents = {}
    for index in range(files):
        name = f"d{index % 7}/f{index}.bin"
        contents[name] = rng.randbytes(rng.randint(0, 40_000))
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(contents[name])
    return contents


@pytest.mark.parametrize("lanes_on", [True, False], ids=["lanes", "hashlib"])
def test_forked_workers_hash_every_file_of_a_large_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lanes_on: bool
) -> None:
    # without the module: the path other platforms take
    monkeypatch.setattr(hashing, "_NATIVE", hashing._NATIVE if lanes_on else None)
    contents = small_drop(tmp_path, 700, seed=3)  # enough files for the process pool
    (tmp_path / "big.iso").write_bytes(os.urandom(9 << 20))  # a large file: a task of its own
    (tmp_path / "mid.bin").write_bytes(os.urandom(3 << 20))  # streamed inside a run of names
    contents["big.iso"] = (tmp_path / "big.iso").read_bytes()
    contents["mid.bin"] = (tmp_path / "mid.bin").read_bytes()
    subjects = collect(tmp_path, workers=2)
    assert [s.name for s in subjects] == sorted(contents)
    assert {s.name: s.sha256 for s in subjects} == {
        name: hashlib.sha256(data).hexdigest() for name, data in contents.items()
    }
    assert {s.name: s.size for s in subjects} == {name: len(data) for name, data in contents.items()}


def test_threads_and_processes_agree(tmp_path: Path) -> None:
    small_drop(tmp_path, 600, seed=4)
    names = select_files(tmp_path)
    with Hashing(tmp_path, names, workers=1) as one_thread, Hashing(tmp_path, names, workers=2) as forked:
        assert one_thread.result() == forked.result()


def test_an_error_in_a_worker_stops_the_others(tmp_path: Path) -> None:
    small_drop(tmp_path, 600, seed=5)
    names = select_files(tmp_path)
    os.unlink(tmp_path / names[-1])
    with pytest.raises(InputError, match=f"cannot read {names[-1]}: No such file or directory"):
        with Hashing(tmp_path, names, workers=2) as forked:
            forked.result()


@lanes
def test_the_native_loops_refuse_a_file_that_is_not_as_listed(tmp_path: Path) -> None:
    paths = []
    for index, size in enumerate([1000, 300_000, 5 << 20, 0]):  # one chunk, several, many, none
        (tmp_path / f"f{index}").write_bytes(os.urandom(size))
        paths.append(str(tmp_path / f"f{index}"))
    sizes, mtimes, count = _sha256x16.stat_files(paths)
    assert count == 4 and array("q", sizes).tolist() == [1000, 300_000, 5 << 20, 0]
    arena = hashing._arena()[: hashing._NATIVE_ARENA]

    def digest_files() -> tuple[bytes, list[int]]:
        digests, refused = _sha256x16.digest_files(paths, array("q", sizes), array("q", mtimes), arena)
        return digests, list(refused)

    assert digest_files() == (expected([Path(p).read_bytes() for p in paths]), [0, 0, 0, 0])
    Path(paths[1]).write_bytes(os.urandom(300_001))  # grown
    with open(paths[2], "r+b") as stream:  # rewritten in place: same size, new mtime
        stream.seek(4 << 20)
        stream.write(b"x")
    listed = array("q", mtimes)[2]
    os.utime(paths[2], ns=(listed, listed + 1_000_000))  # the clock may not have ticked since the listing
    digests, refused = digest_files()
    assert refused == [0, 1, 1, 0] and digests[:32] == expected([Path(paths[0]).read_bytes()])
    os.unlink(paths[1])
    os.mkfifo(paths[1])
    assert _sha256x16.stat_files(paths)[2] == 1
    assert digest_files()[1][1] == 1
    os.unlink(paths[1])
    assert _sha256x16.stat_files(paths)[2] == 1 and digest_files()[1][1] == 1
    os.mkdir(paths[1])  # opens, then fails to read: the file is refused and closed
    descriptors = len(os.listdir("/proc/self/fd"))
    assert digest_files()[1][1] == 1
    assert len(os.listdir("/proc/self/fd")) == descriptors


@pytest.mark.parametrize("lanes_on", [True, False], ids=["lanes", "hashlib"])
def test_a_file_changed_or_swapped_after_the_survey_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lanes_on: bool
) -> None:
    monkeypatch.setattr(hashing, "_NATIVE", hashing._NATIVE if lanes_on else None)
    small_drop(tmp_path, 40, seed=6)
    names = select_files(tmp_path)
    files = hashing._Files(str(tmp_path), names)
    files.survey(0, len(names))
    run = hashing._Task(0, len(names), False, sum(files.sizes))
    (tmp_path / names[7]).write_bytes(b"a different length")
    with pytest.raises(Error, match=f"{names[7]} changed while it was being hashed"):
        files.digest(run)
    (tmp_path / names[7]).unlink()
    os.mkfifo(tmp_path / names[7])
    with pytest.raises(InputError, match=f"{names[7]} is not a regular file"):
        files.digest(run)


def test_progress_rises_while_the_workers_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_PROGRESS_EVERY", 0.001)  # every 2 s in use: too slow for a test
    small_drop(tmp_path, 2000, seed=7)
    seen: list[hashing.Progress] = []
    subjects = collect(tmp_path, workers=2, on_progress=seen.append)
    total = sum(s.size for s in subjects)
    assert seen[-1] == hashing.Progress(2000, 2000, total, total)
    done = [p.files_done for p in seen]
    assert done == sorted(done) and len(set(done)) > 2  # it rose in steps, never back
    assert all(p.bytes_done <= p.bytes_total for p in seen if p.bytes_total)
