"""The drop's files, selected by glob and hashed with SHA-256 on every core (`hashing.py`).

    >>> subjects = collect(Path("drop"), ["bin/**", "*.zip"])   # doctest: +SKIP
    >>> subjects[0]
    Subject(name='bin/app.exe', sha256='9f86d0...', size=1048576)

Names are relative to the drop, `/`-separated, sorted. `_manifest/` at the top of the drop is
never a subject. A symbolic link that leaves the drop, a broken link, and anything that is not a
regular file (FIFO, socket, device) are refused rather than skipped: the drop is published whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path

from slsa_provenance import globs
from slsa_provenance.errors import InputError
from slsa_provenance.provenance.hashing import Hashing, ProgressCallback
from slsa_provenance.provenance.statement import Subject

MANIFEST_DIR = "_manifest"


def collect(
    drop: Path,
    patterns: Sequence[str] = (),
    *,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Subject]:
    """Select and hash the drop's files. Raises InputError for an unusable drop or file."""
    with start_hashing(drop, patterns, workers=workers) as hashing:
        return hashing.result(on_progress)


def start_hashing(drop: Path, patterns: Sequence[str] = (), *, workers: int | None = None) -> Hashing:
    """Select the drop's files and start hashing them in the background (see `Hashing`)."""
    return Hashing(drop, select_files(drop, patterns), workers=workers)


def select_files(drop: Path, patterns: Sequence[str] = ()) -> list[str]:
    """Names (relative to `drop`, `/`-separated, sorted) of every regular file below it that
    matches any pattern (all when none)."""
    if not drop.exists():
        raise InputError(f"drop folder {drop} does not exist", "pass --drop with the build's output")
    if not drop.is_dir():
        raise InputError(f"drop {drop} is not a folder", "pass --drop with the folder to attest")
    found: list[str] = []
    _walk(os.path.realpath(drop), str(drop), "", found)
    try:
        "\n".join(found).encode("utf-8")  # every file's name at once; one by one to name a bad one
    except UnicodeEncodeError:
        for name in found:
            _utf8(name)
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
        entries = sorted(os.scandir(folder), key=attrgetter("name"))
    except OSError as exc:
        raise InputError(
            f"cannot list folder {folder}: {exc.strerror}", "make it readable by the agent's user"
        ) from exc
    for entry in entries:
        if entry.is_file(follow_symlinks=False):  # most entries: checked first
            found.append(prefix + entry.name)
            continue
        name = _utf8(prefix + entry.name)
        if entry.is_dir(follow_symlinks=False):
            if not (prefix == "" and entry.name == MANIFEST_DIR):
                _walk(drop_real, entry.path, f"{name}/", found)
        elif entry.is_symlink():
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
        else:
            raise InputError(
                f"{name} is not a regular file (a FIFO, socket or device)",
                "remove it from the drop",
            )


def _utf8(name: str) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"file name {name!r} is not valid UTF-8", "rename the file; provenance names are UTF-8"
        ) from exc
    return name


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A subject pattern compiled (see `globs`); one without `/` matches at any depth (`*.dll` is
    `**/*.dll`)."""
    pattern = pattern.strip().removeprefix("./").lstrip("/")
    return globs.glob_regex(pattern if "/" in pattern else f"**/{pattern}")
