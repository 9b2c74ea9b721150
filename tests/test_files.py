"""All-or-nothing writes (files.py): private temporaries beside their targets, then renames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slsa_provenance.files import write_files


def test_temporaries_are_private_from_the_start_and_renamed_into_place(tmp_path: Path) -> None:
    public, private = tmp_path / "out" / "a.json", tmp_path / "out" / "b.key"
    seen: dict[str, int] = {}

    def look() -> None:
        for path in (tmp_path / "out").iterdir():
            seen[path.name] = stat.S_IMODE(path.stat().st_mode)

    write_files({public: b"{}", private: (b"sec", b"ret")}, private=frozenset({private}), before_rename=look)

    staged = sorted(seen)
    assert [name.rsplit(".", 1)[0] for name in staged] == [".a.json", ".b.key"]
    assert all(len(name.rsplit(".", 1)[1]) == 12 for name in staged)  # 6 random bytes, hex
    assert seen[staged[1]] == 0o600  # the key was never readable by others, not even staged
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
    (tmp_path / f".provenance.json.{'00' * 6}").symlink_to(elsewhere)
    (tmp_path / f".provenance.json.{'01' * 6}").write_bytes(b"someone's")
    draws = iter([b"\x00" * 6, b"\x01" * 6, b"\x02" * 6])
    monkeypatch.setattr(os, "urandom", lambda size: next(draws))

    write_files({target: b"new"})

    assert target.read_bytes() == b"new"
    assert elsewhere.read_bytes() == b"untouched"
    assert (tmp_path / f".provenance.json.{'01' * 6}").read_bytes() == b"someone's"
