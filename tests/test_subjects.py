from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from slsa_provenance.errors import InputError
from slsa_provenance.provenance.hashing import Progress
from slsa_provenance.provenance.subjects import collect, glob_regex, select_files


def names(drop: Path, *patterns: str) -> list[str]:
    return select_files(drop, patterns)


def test_every_file_except_the_top_manifest_sorted_and_hashed(drop: Path) -> None:
    (drop / "docs" / "_manifest").mkdir(parents=True)
    (drop / "docs" / "_manifest" / "kept.txt").write_text("a nested _manifest is an artifact")
    subjects = collect(drop)
    assert [s.name for s in subjects] == [
        "README.txt",
        "bin/app.dll",
        "bin/app.exe",
        "docs/_manifest/kept.txt",
        "lib/plugins/auth.so",
        "web.tar.gz",
    ]
    for subject in subjects:
        data = (drop / subject.name).read_bytes()
        assert subject.sha256 == hashlib.sha256(data).hexdigest()
        assert subject.size == len(data)


def test_hashes_files_larger_than_the_read_buffer(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "empty.bin").write_bytes(b"")
    subjects = collect(tmp_path, workers=2)
    assert subjects[0].sha256 == hashlib.sha256(data).hexdigest()
    assert subjects[1].sha256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (("*.dll",), ["bin/app.dll"]),
        (("bin/**",), ["bin/app.dll", "bin/app.exe"]),
        (("**/auth.so", "README.txt"), ["README.txt", "lib/plugins/auth.so"]),
        (("lib/*/auth.so",), ["lib/plugins/auth.so"]),
        (("bin/app.[de]*",), ["bin/app.dll", "bin/app.exe"]),
        (("bin/app.[!d]*",), ["bin/app.exe"]),
        (("./web.tar.gz", "*.gz"), ["web.tar.gz"]),
        (("b?n/*.exe",), ["bin/app.exe"]),
    ],
)
def test_globs(drop: Path, patterns: tuple[str, ...], expected: list[str]) -> None:
    assert names(drop, *patterns) == expected


def test_star_does_not_cross_folders() -> None:
    assert glob_regex("lib/*.so").match("lib/plugins/auth.so") is None
    assert glob_regex("lib/**.so").match("lib/plugins/auth.so") is not None


def test_a_glob_matching_nothing_is_an_error(drop: Path) -> None:
    with pytest.raises(InputError, match=r"no file in .* matches --subject '\*.msi'"):
        select_files(drop, ["*.exe", "*.msi"])


def test_manifest_is_never_a_subject_even_when_asked(drop: Path) -> None:
    with pytest.raises(InputError, match="matches --subject"):
        select_files(drop, ["_manifest/**"])


def test_links_inside_the_drop(drop: Path) -> None:
    (drop / "current.exe").symlink_to("bin/app.exe")
    (drop / "binaries").symlink_to("bin", target_is_directory=True)
    subjects = {s.name: s.sha256 for s in collect(drop)}
    assert subjects["current.exe"] == subjects["bin/app.exe"]
    assert not any(name.startswith("binaries/") for name in subjects)


def test_a_link_leaving_the_drop_is_refused(drop: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    (drop / "bin" / "innocent.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(
        InputError, match=r"bin/innocent.txt is a symbolic link to .*secret.txt, outside the drop"
    ):
        collect(drop)


def test_a_folder_link_leaving_the_drop_is_refused(drop: Path, tmp_path: Path) -> None:
    (drop / "etc").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(InputError, match="etc is a symbolic link to /etc, outside the drop"):
        collect(drop)


def test_link_loops_and_broken_links_are_refused(drop: Path) -> None:
    (drop / "loop").symlink_to("loop")
    with pytest.raises(InputError, match="loop is a broken link"):
        collect(drop)


def test_a_fifo_is_refused_without_hanging(drop: Path) -> None:
    os.mkfifo(drop / "bin" / "pipe")
    with pytest.raises(InputError, match="bin/pipe is not a regular file"):
        collect(drop)


def test_missing_empty_and_file_drops(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        collect(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        collect(tmp_path / "file")
    (tmp_path / "empty" / "_manifest").mkdir(parents=True)
    (tmp_path / "empty" / "_manifest" / "x.json").write_text("{}")
    with pytest.raises(InputError, match="has no files outside _manifest/"):
        collect(tmp_path / "empty")


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.bin"), "wb") as stream:
        stream.write(b"x")
    with pytest.raises(InputError, match="is not valid UTF-8"):
        collect(tmp_path)


def test_progress_reports_the_totals(drop: Path) -> None:
    seen: list[Progress] = []
    subjects = collect(drop, on_progress=seen.append)
    total = sum(s.size for s in subjects)
    assert seen[-1] == Progress(len(subjects), len(subjects), total, total)
