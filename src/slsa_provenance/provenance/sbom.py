"""The SBOM that Microsoft's sbom-tool writes into `<drop>/_manifest/`, bound to the provenance.

    >>> sboms = find_sboms(Path("drop"))          # doctest: +SKIP
    >>> mismatches(sboms[0], subjects, every_file=True)
    ['bin/app.dll: sha256 got 5d41..., expected 7f83... (the SBOM)']

The SBOM is read, never changed. Its `.sha256` sidecar (64 lower-case hex digits; UTF-16LE in
sbom-tool before 1.1.7) must match it. Its file entries (SPDX 2.2 `files[]`, SPDX 3.0
`software_File`, `./`-relative names) are compared with the subjects.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slsa_provenance import untrusted
from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.provenance.statement import SPDX_MEDIA_TYPE, ResourceDescriptor, Subject

SBOM_NAMES = ("_manifest/spdx_2.2/manifest.spdx.json", "_manifest/spdx_3.0/manifest.spdx.json")
MODES = ("strict", "warn", "off")
MAX_REPORTED = 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Sbom:
    name: str
    path: Path
    sha256: str
    files: dict[str, str] = field(default_factory=dict)
    """File name (without `./`) to the SHA-256 the SBOM lists."""
    packages: tuple[ResourceDescriptor, ...] = ()
    """The packages it lists, as purl URIs with their checksums."""

    def byproduct(self) -> ResourceDescriptor:
        return ResourceDescriptor(name=self.name, digest={"sha256": self.sha256}, media_type=SPDX_MEDIA_TYPE)


def sbom_file(given: Path) -> Path:
    """`given`, when it is a file. Raises InputError for a folder or a missing file."""
    remedy = "pass the manifest.spdx.json file that sbom-tool wrote (in _manifest/spdx_2.2/)"
    if given.is_dir():
        raise InputError(f"SBOM {given} is a folder, not a file", remedy)
    if not given.is_file():
        raise InputError(f"SBOM {given} does not exist", remedy)
    return given


def find_sboms(drop: Path, given: Path | None = None, *, check_sidecar: bool = True) -> list[Sbom]:
    """The SBOM given, or every sbom-tool SBOM in the drop. Raises InputError for an unusable one."""
    if given is not None:
        sbom_file(given)
        name = (
            given.resolve().relative_to(drop.resolve()).as_posix()
            if given.resolve().is_relative_to(drop.resolve())
            else given.name
        )
        return [load_sbom(given, name, check_sidecar=check_sidecar)]
    return [load_sbom(drop / n, n, check_sidecar=check_sidecar) for n in SBOM_NAMES if (drop / n).is_file()]


def load_sbom(path: Path, name: str, *, check_sidecar: bool = True) -> Sbom:
    """Digest and parse an SPDX 2.2 or 3.0 JSON SBOM; raises InputError when it is unreadable, not
    SPDX JSON, or does not match its sidecar."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read SBOM {path}: {exc.strerror}", "check the drop") from exc
    digest = hashlib.sha256(body).hexdigest()
    sidecar = path.with_name(path.name + ".sha256")
    if check_sidecar and sidecar.is_file():
        _check_sidecar(name, body, digest, read_sidecar(sidecar))
    try:
        document = untrusted.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:
        raise InputError(
            f"SBOM {name} is not JSON", "pass the manifest.spdx.json that sbom-tool wrote"
        ) from exc
    files = _spdx_files(document, name)
    return Sbom(name=name, path=path, sha256=digest, files=files, packages=_spdx_packages(document))


def _check_sidecar(name: str, body: bytes, digest: str, claimed: str) -> None:
    if claimed == digest:
        return
    hint = "the SBOM was changed after sbom-tool wrote it"
    if hashlib.sha256(body.rstrip(b"\r\n")).hexdigest() == claimed:
        hint = "the SBOM gained a final newline after sbom-tool wrote it"
    raise InputError(
        f"SBOM {name} does not match its sidecar: sha256 got {digest}, expected {claimed}; {hint}",
        "run sbom-tool again as the last step that writes to the drop, and do not edit its output",
    )


def read_sidecar(sidecar: Path) -> str:
    """The digest a `.sha256` sidecar holds. Raises InputError when it holds none."""
    raw = read_limited(sidecar, "SBOM sidecar", 1024)
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(raw) == 128 and not any(raw[1::2])):
        text = raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le")
    else:
        text = raw.decode("ascii", "replace")
    text = text.strip().lower()
    if not _HEX64.match(text):
        raise InputError(f"SBOM sidecar {sidecar} does not hold a SHA-256 digest", "run sbom-tool again")
    return text


def _spdx_files(document: Any, name: str) -> dict[str, str]:
    if not isinstance(document, dict):
        raise InputError(f"SBOM {name} is not an SPDX JSON document", "pass sbom-tool's manifest.spdx.json")
    files: dict[str, str] = {}
    if isinstance(document.get("@graph"), list):  # SPDX 3.0 JSON-LD
        entries = [e for e in document["@graph"] if isinstance(e, dict) and e.get("type") == "software_File"]
        for entry in entries:
            hashes = {
                str(h.get("algorithm", "")).lower(): h.get("hashValue")
                for h in _list(entry.get("verifiedUsing"))
                if isinstance(h, dict)
            }
            _add(files, entry.get("name"), hashes.get("sha256"), name)
    elif isinstance(document.get("spdxVersion"), str):
        for entry in _list(document.get("files")):
            if isinstance(entry, dict):
                hashes = {
                    str(c.get("algorithm", "")).lower(): c.get("checksumValue")
                    for c in _list(entry.get("checksums"))
                    if isinstance(c, dict)
                }
                _add(files, entry.get("fileName"), hashes.get("sha256"), name)
    else:
        raise InputError(
            f"SBOM {name} is neither SPDX 2.2 nor SPDX 3.0 JSON", "pass sbom-tool's manifest.spdx.json"
        )
    return files


def _spdx_packages(document: dict[str, Any]) -> tuple[ResourceDescriptor, ...]:
    """Packages with a purl (SPDX 2.2 externalRefs; SPDX 3.0 ExternalIdentifier elements)."""
    found: list[ResourceDescriptor] = []
    if isinstance(document.get("@graph"), list):
        graph = [e for e in document["@graph"] if isinstance(e, dict)]
        purls = {
            e.get("spdxId"): e.get("identifier")
            for e in graph
            if e.get("type") == "ExternalIdentifier"
            and str(e.get("externalIdentifierType")).lower() in ("purl", "packageurl")
        }
        for package in (e for e in graph if e.get("type") == "software_Package"):
            for ref in _list(package.get("externalIdentifier")):
                purl = purls.get(ref) if isinstance(ref, str) else None
                if isinstance(purl, str):
                    found.append(
                        ResourceDescriptor(
                            uri=purl, digest=_digests(package.get("verifiedUsing"), "hashValue")
                        )
                    )
    else:
        for package in (p for p in _list(document.get("packages")) if isinstance(p, dict)):
            for ref in _list(package.get("externalRefs")):
                if (
                    isinstance(ref, dict)
                    and ref.get("referenceType") == "purl"
                    and isinstance(ref.get("referenceLocator"), str)
                ):
                    found.append(
                        ResourceDescriptor(
                            uri=ref["referenceLocator"],
                            digest=_digests(package.get("checksums"), "checksumValue"),
                        )
                    )
    unique = {(d.uri, tuple(sorted(d.digest.items()))): d for d in found}
    return tuple(unique[key] for key in sorted(unique))


def _digests(entries: object, value_key: str) -> dict[str, str]:
    digests = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get(value_key), str):
            algorithm = str(entry.get("algorithm", "")).lower().replace("-", "")
            value = entry[value_key].lower()
            if re.fullmatch(r"[0-9a-f]+", value) and algorithm:
                digests[algorithm] = value
    return digests


def _list(value: object) -> list[Any]:
    """A JSON array, or nothing: SBOMs are untrusted input."""
    return value if isinstance(value, list) else []


def _add(files: dict[str, str], file_name: object, sha256: object, name: str) -> None:
    if not isinstance(file_name, str) or not isinstance(sha256, str):
        raise InputError(f"SBOM {name} has a file entry without a name or a SHA-256", "run sbom-tool again")
    files[file_name.removeprefix("./").lstrip("/")] = sha256.lower()


def mismatches(sbom: Sbom, subjects: Sequence[Subject], *, every_file: bool) -> list[str]:
    """Where the SBOM and the subjects disagree; with `every_file`, SBOM files missing as subjects too."""
    found = []
    subject_digests = {s.name: s.sha256 for s in subjects}
    for subject in subjects:
        listed = sbom.files.get(subject.name)
        if listed is None:
            found.append(f"{subject.name}: not in the SBOM")
        elif listed != subject.sha256:
            found.append(f"{subject.name}: sha256 got {subject.sha256}, expected {listed} (the SBOM)")
    if every_file:
        found += [
            f"{name}: in the SBOM but not in the drop"
            for name in sorted(sbom.files)
            if name not in subject_digests
        ]
    return found


def describe(sbom: Sbom, found: Sequence[str]) -> str:
    shown = "; ".join(found[:MAX_REPORTED])
    more = f"; and {len(found) - MAX_REPORTED} more" if len(found) > MAX_REPORTED else ""
    return f"SBOM {sbom.name} disagrees with the drop on {len(found)} file(s): {shown}{more}"


SBOM_REMEDY = (
    "files changed after sbom-tool ran (code signing, for example): run sbom-tool after the last step "
    "that writes to the drop, or set the SBOM check to warn"
)
