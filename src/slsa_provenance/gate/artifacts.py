"""What a deployment gate checks: files, folders and digests, hashed with hashlib only.

    >>> [a.name for a in artifact_digests([Path("drop")], [])]   # doctest: +SKIP
    ['README.txt', '_manifest/spdx_2.2/manifest.spdx.json', 'bin/app.exe']

A folder's files are checked by their paths relative to it (the subject of that name must have that
digest). What a deployment that copies the folder would ship, and the provenance cannot vouch for,
is refused by name: a symbolic link to a folder or out of the folder, a link that is broken or not
to a regular file, and, in the folder's `_manifest/`, anything but the SBOM and provenance files
(the SBOM is checked against the recorded byproduct, the provenance files must hold the envelope
verified; the manifest task's `_manifest/manifest.json` is neither, and no signed digest vouches
for it). The gate never uses the generator's AVX-512 module: a fault there cannot make both sides
agree on a wrong digest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from operator import attrgetter
from pathlib import Path

from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.gate.checks import BY_NAME, BYPRODUCT, MAX_ENVELOPE, Artifact
from slsa_provenance.provenance.hashing import Hashing, sha256_file
from slsa_provenance.provenance.sbom import SBOM_NAMES, read_sidecar
from slsa_provenance.provenance.subjects import MANIFEST_DIR
from slsa_provenance.signing.bundle import envelope_json
from slsa_provenance.signing.dsse import Envelope

_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
SHIPPED_PROVENANCE = (
    f"{MANIFEST_DIR}/slsa_1.0/provenance.intoto.jsonl",
    f"{MANIFEST_DIR}/slsa_1.0/provenance.sigstore.json",
)
MANIFEST_FILES = frozenset(
    {
        *SBOM_NAMES,
        *(f"{name}.sha256" for name in SBOM_NAMES),
        *SHIPPED_PROVENANCE,
    }
)


def artifact_digests(paths: Sequence[Path], digests: Sequence[str]) -> list[Artifact]:
    """Files (named by their file name, matched by digest), folders (every file, by relative name)
    and `sha256:HEX` digests. Raises InputError when there is nothing, or something unusable."""
    if not paths and not digests:
        raise InputError("no artifact to verify", "pass --artifact PATH or --digest sha256:HEX")
    artifacts = []
    for path in paths:
        if path.is_dir():
            artifacts += folder_artifacts(path)
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


def folder_artifacts(folder: Path) -> list[Artifact]:
    """Every file below `folder`, by relative name, hashed on every core with hashlib."""
    names: list[str] = []
    refused: list[Artifact] = []
    _walk(str(folder), os.path.realpath(folder), "", names, refused)
    kept = [n for n in names if not n.startswith(f"{MANIFEST_DIR}/") or n in SBOM_NAMES]
    refused += [
        Artifact(n, "", refused=f"(9) subject: {MANIFEST_DIR}/ may hold only the SBOM and provenance files")
        for n in names
        if n.startswith(f"{MANIFEST_DIR}/") and n not in MANIFEST_FILES
    ]
    if not kept and not refused:
        raise InputError(f"artifact folder {folder} has no files", "pass the folder that will be deployed")
    with Hashing(folder, kept, native=False) as hashing:
        subjects = hashing.result()
    found = [
        Artifact(s.name, s.sha256, BYPRODUCT, folder=str(folder))
        if s.name in SBOM_NAMES
        else Artifact(s.name, s.sha256, BY_NAME, folder=str(folder))
        for s in subjects
    ]
    refused += _sidecars(folder, [n for n in names if n.endswith(".sha256") and n in MANIFEST_FILES])
    refused = [replace(a, folder=str(folder)) for a in refused]
    return sorted(found + refused, key=attrgetter("name"))


def _sidecars(folder: Path, names: list[str]) -> list[Artifact]:
    """sbom-tool's `.sha256` sidecars, each refused by name unless it holds the digest of the file
    it sits beside (a sidecar that vouches for another SBOM would mislead whoever reads it next)."""
    refused = []
    for name in names:
        described = name.removesuffix(".sha256")
        if not (folder / described).is_file():
            why = f"describes {described}, which is not there"
        else:
            try:
                claimed = read_sidecar(folder / name)
            except InputError as exc:
                claimed, why = "", exc.message
            digest = sha256_file(folder / described, described)[0]
            if claimed == digest:
                continue
            if claimed:
                why = f"does not match {described}: sha256 got {digest}, expected {claimed}"
        refused.append(Artifact(name, "", refused=f"(10) sbom: {name} {why}"))
    return refused


def _walk(folder: str, top: str, prefix: str, names: list[str], refused: list[Artifact]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=attrgetter("name"))
    except OSError as exc:
        raise InputError(f"cannot list folder {folder}: {exc.strerror}", "make it readable") from exc
    for entry in entries:
        name = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            _walk(entry.path, top, f"{name}/", names, refused)
        elif entry.is_file(follow_symlinks=True) and _leaves(entry, top):
            why = "is a symbolic link out of the folder: a copy that keeps links would ship what is there"
            refused.append(Artifact(name, "", refused=f"(9) subject: {name} {why}"))
        elif entry.is_file(follow_symlinks=True):
            names.append(name)
        elif entry.is_dir(follow_symlinks=True):
            why = "is a symbolic link to a folder: a copy that follows links would ship files unchecked"
            refused.append(Artifact(name, "", refused=f"(9) subject: {name} {why}"))
        else:
            why = "is a broken link, or not a regular file (a FIFO, socket or device)"
            refused.append(Artifact(name, "", refused=f"(9) subject: {name} {why}"))


def _leaves(entry: os.DirEntry[str], top: str) -> bool:
    """A link whose target is outside `top` (generate refuses those in a drop, too)."""
    return entry.is_symlink() and os.path.commonpath([top, os.path.realpath(entry.path)]) != top


def shipped_provenance(paths: Sequence[Path], verified: bytes) -> list[Artifact]:
    """The provenance files a folder ships in `_manifest/slsa_1.0/`, refused by name unless they hold
    the envelope verified: a deployment would otherwise carry provenance that nobody checked."""
    folders = [path for path in paths if path.is_dir()]
    expected = _envelope(verified) if folders else None
    if expected is None:
        return []  # no folder, or check (1) fails anyway
    refused = []
    for folder in folders:
        for name in SHIPPED_PROVENANCE:
            shipped = folder / name
            if shipped.is_file() and _envelope(read_limited(shipped, "provenance", MAX_ENVELOPE)) != expected:
                why = "holds another envelope than the provenance file verified"
                refused.append(Artifact(name, "", refused=f"(9) subject: {name} {why}", folder=str(folder)))
    return refused


def _envelope(data: bytes) -> Envelope | None:
    try:
        return Envelope.from_json(envelope_json(data))
    except InputError:
        return None
