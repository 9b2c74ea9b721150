"""All-or-nothing writes (files.py): private temporaries beside their targets, then renames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slsa_provenance.files import _private_file, write_files


def test_a_temporary_is_private_from_its_creation(tmp_path: Path) -> None:
    """Mode 0600 when it is made, whatever the umask: the content of a private key is never
    readable by others, not even staged."""
    before = os.umask(0)
    try:
        handle, path = _private_file(tmp_path / "signing.key")
    finally:
        os.umask(before)
    try:
        assert stat.S_IMODE(os.fstat(handle).st_mode) == 0o600
    finally:
        os.close(handle)
    prefix, _, suffix = Path(path).name.rpartition(".")
    assert (Path(path).parent, prefix, len(suffix)) == (tmp_path, ".signing.key", 8)  # as mkstemp's


def test_files_land_whole_with_their_modes(tmp_path: Path) -> None:
    public, private = tmp_path / "out" / "a.json", tmp_path / "out" / "b.key"
    staged: list[str] = []
    write_files(
        {public: b"{}", private: (b"sec", b"ret")},
        private=frozenset({private}),
        before_rename=lambda: staged.extend(sorted(p.name for p in public.parent.iterdir())),
    )
    assert [name.rpartition(".")[0] for name in staged] == [".a.json", ".b.key"]  # nothing in place yet
    assert sorted(p.name for p in public.parent.iterdir()) == ["a.json", "b.key"]
    assert (public.read_bytes(), private.read_bytes()) == (b"{}", b"secret")
    assert (stat.S_IMODE(public.stat().st_mode), stat.S_IMODE(private.stat().st_mode)) == (0o644, 0o600)


def test_a_taken_temporary_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name already there (a file, or a link planted by someone else) is skipped, not opened."""
    target = tmp_path / "provenance.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"untouched")
    (tmp_path / f".provenance.json.{'00' * 4}").symlink_to(elsewhere)
    (tmp_path / f".provenance.json.{'01' * 4}").write_bytes(b"someone's")
    draws = iter([b"\x00" * 4, b"\x01" * 4, b"\x02" * 4])
    monkeypatch.setattr(os, "urandom", lambda size: next(draws))

    write_files({target: b"new"})

    assert next(draws, None) is None  # the two taken names were tried, then the third
    assert target.read_bytes() == b"new"
    assert elsewhere.read_bytes() == b"untouched"
    assert (tmp_path / f".provenance.json.{'01' * 4}").read_bytes() == b"someone's"
