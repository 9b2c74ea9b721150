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
from typing import TYPE_CHECKING

from slsa_provenance.errors import InputError
from slsa_provenance.hashing import Hashing, ProgressCallback, sha256_file
from slsa_provenance.provenance import Subject

if TYPE_CHECKING:
    from slsa_provenance.verify import Artifact

MANIFEST_DIR = "_manifest"
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


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
    """Compile a glob: `*` and `?` stay within a folder, `**` crosses folders, `[a-z]` classes.

    A pattern without `/` matches at any depth (`*.dll` is `**/*.dll`).
    """
    pattern = pattern.strip().removeprefix("./").lstrip("/")
    if "/" not in pattern:
        pattern = f"**/{pattern}"
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body[0] in "!^"
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def artifact_digests(paths: Sequence[Path], digests: Sequence[str]) -> list[Artifact]:
    """What a gate checks: files (named by their file name), folders (every file, by relative
    name) and `sha256:HEX` digests. Raises InputError when there is nothing, or something unusable."""
    if not paths and not digests:
        raise InputError("no artifact to verify", "pass --artifact PATH or --digest sha256:HEX")
    from slsa_provenance.verify import Artifact

    artifacts = []
    for path in paths:
        if path.is_dir():
            artifacts += [Artifact(s.name, s.sha256) for s in collect(path)]
        elif path.exists():
            artifacts.append(Artifact(path.name, sha256_file(path)[0]))
        else:
            raise InputError(f"artifact {path} does not exist", "pass the file that will be deployed")
    for digest in digests:
        match = _DIGEST.match(digest.strip())
        if not match:
            raise InputError(f"--digest {digest!r} is not sha256:<64 hex>", "pass sha256:HEX")
        artifacts.append(Artifact(digest.strip(), match.group(1).lower()))
    return artifacts
