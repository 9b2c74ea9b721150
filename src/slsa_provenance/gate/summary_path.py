"""Where a gate writes its Verification Summary: never over an input, never into what it verifies.

    >>> clear_summary_path(Path("vsa.jsonl"), {"provenance": [Path("p.intoto.jsonl")]})  # doctest: +SKIP

`--vsa PATH` naming an input (the provenance, a key, the policy, the SBOM, an artifact file or any
path inside an artifact folder) is refused before anything is read, so that no run can destroy it.
A file already at PATH is removed only when it is a summary (a DSSE envelope carrying a VSA), so
that a failed run leaves no earlier verdict behind; anything else there is refused. The summary
itself is written atomically (`files.write_files`), and only when every check passed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from slsa_provenance import untrusted
from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.gate.checks import MAX_ENVELOPE
from slsa_provenance.gate.vsa import PREDICATE_TYPE
from slsa_provenance.signing.bundle import envelope_json
from slsa_provenance.signing.dsse import Envelope

_REMEDY = "name a new file for the summary, outside the artifacts verified"


def clear_summary_path(path: Path, inputs: Mapping[str, Sequence[Path]]) -> None:
    """Refuse a path that is an input (`inputs`: what each is, and its paths) or lies inside an
    input folder; remove an earlier summary there. Raises InputError."""
    if path.is_symlink():
        raise InputError(f"--vsa {path} is a symbolic link", _REMEDY)
    if path.is_dir():
        raise InputError(f"--vsa {path} is a folder", "name the file the summary is written to")
    target = path.resolve()
    for what, paths in inputs.items():
        for given in paths:
            if _same(target, given) or (given.is_dir() and _inside(target, given)):
                where = "is" if _same(target, given) else "is inside"
                raise InputError(f"--vsa {path} {where} the {what} {given}: it would be overwritten", _REMEDY)
    if not path.exists():
        return
    if not _is_summary(path):
        raise InputError(f"--vsa {path} exists and is not a verification summary", _REMEDY)
    try:
        path.unlink()
    except OSError as error:
        raise InputError(
            f"cannot remove the earlier summary at {path}: {error.strerror}",
            "make the file writable or choose another --vsa path",
        ) from error


def _same(target: Path, given: Path) -> bool:
    """The same path, or the same file by another name (a hard link)."""
    if target == given.resolve():
        return True
    try:
        return os.path.samefile(target, given)
    except OSError:  # one of them does not exist
        return False


def _inside(target: Path, folder: Path) -> bool:
    """`target` lies below `folder`, by path or by another name of it (a case-insensitive volume's
    `DROP/` for `drop/`, a bind mount): every existing folder above `target` is compared as a file."""
    if target.is_relative_to(folder.resolve()):
        return True
    return any(_same(parent, folder) for parent in target.parents if parent.is_dir())


def _is_summary(path: Path) -> bool:
    try:
        envelope = Envelope.from_json(envelope_json(read_limited(path, "summary", MAX_ENVELOPE)))
        statement = untrusted.loads(envelope.payload, strict=True)
    except (InputError, ValueError, RecursionError):
        return False
    return isinstance(statement, dict) and statement.get("predicateType") == PREDICATE_TYPE
