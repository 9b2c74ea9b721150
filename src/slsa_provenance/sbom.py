"""The SBOM that Microsoft's sbom-tool writes into `<drop>/_manifest/`, bound as a byproduct.

    >>> [s.name for s in find_sboms(Path("drop"))]   # doctest: +SKIP
    ['_manifest/spdx_2.2/manifest.spdx.json']

The SBOM is read, never changed. Its `.sha256` sidecar, when present, must match it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from slsa_provenance.errors import InputError
from slsa_provenance.provenance import SPDX_MEDIA_TYPE, ResourceDescriptor

SBOM_NAMES = ("_manifest/spdx_2.2/manifest.spdx.json", "_manifest/spdx_3.0/manifest.spdx.json")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Sbom:
    name: str
    path: Path
    sha256: str

    def byproduct(self) -> ResourceDescriptor:
        return ResourceDescriptor(name=self.name, digest={"sha256": self.sha256}, media_type=SPDX_MEDIA_TYPE)


def find_sboms(drop: Path) -> list[Sbom]:
    """Every sbom-tool SBOM in the drop, digested and checked against its sidecar."""
    return [load_sbom(drop / name, name) for name in SBOM_NAMES if (drop / name).is_file()]


def load_sbom(path: Path, name: str) -> Sbom:
    """Raises InputError when the SBOM is unreadable or does not match its `.sha256` sidecar."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read SBOM {path}: {exc.strerror}", "check the drop") from exc
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        claimed = _read_sidecar(sidecar)
        if claimed != digest:
            raise InputError(
                f"SBOM {name} does not match its sidecar: sha256 got {digest}, expected {claimed}",
                "the SBOM was changed after sbom-tool wrote it; run sbom-tool again as the last step "
                "before this one",
            )
    return Sbom(name=name, path=path, sha256=digest)


def _read_sidecar(sidecar: Path) -> str:
    raw = sidecar.read_bytes()
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("ascii", "replace")
    text = text.strip()
    if not _HEX64.match(text):
        raise InputError(f"SBOM sidecar {sidecar} does not hold a SHA-256 digest", "run sbom-tool again")
    return text.lower()
