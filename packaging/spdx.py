"""Write an SPDX 2.2 SBOM shaped like sbom-tool's into DROP/_manifest/spdx_2.2/, with its sidecar.

    $ python packaging/spdx.py DROP [NAME]

A stand-in for `sbom-tool generate` (no .NET, no network) for the demo and for the extension's own
SBOM: every file of the drop with SHA-256 and SHA-1 under `./`-relative names, the given packages
with purls, and `manifest.spdx.json.sha256` (64 hex digits, no newline).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str

    def to_spdx(self, index: int) -> dict[str, object]:
        return {
            "name": self.name,
            "SPDXID": f"SPDXRef-Package-{index}",
            "versionInfo": self.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "checksums": [{"algorithm": "SHA256", "checksumValue": self.sha256}],
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": f"pkg:pypi/{self.name.lower()}@{self.version}",
                }
            ],
        }


def write_sbom(drop: Path, name: str, packages: Sequence[Package] = ()) -> Path:
    files = sorted(p for p in drop.rglob("*") if p.is_file() and p.relative_to(drop).parts[0] != "_manifest")
    entries = []
    for index, path in enumerate(files):
        data = path.read_bytes()
        entries.append(
            {
                "fileName": "./" + path.relative_to(drop).as_posix(),
                "SPDXID": f"SPDXRef-File--{index}",
                "checksums": [
                    {"algorithm": "SHA256", "checksumValue": hashlib.sha256(data).hexdigest()},
                    {"algorithm": "SHA1", "checksumValue": hashlib.sha1(data).hexdigest()},  # noqa: S324
                ],
                "licenseConcluded": "NOASSERTION",
                "licenseInfoInFiles": ["NOASSERTION"],
                "copyrightText": "NOASSERTION",
            }
        )
    document = {
        "files": entries,
        "packages": [p.to_spdx(i) for i, p in enumerate(packages)],
        "relationships": [],
        "spdxVersion": "SPDX-2.2",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://spdx.org/spdxdocs/{name.replace(' ', '-')}",
        "creationInfo": {"created": "2026-11-23T00:00:00Z", "creators": ["Tool: slsa-provenance-packaging"]},
        "documentDescribes": ["SPDXRef-RootPackage"],
    }
    folder = drop / "_manifest" / "spdx_2.2"
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps(document, indent=2).encode()
    (folder / "manifest.spdx.json").write_bytes(body)
    (folder / "manifest.spdx.json.sha256").write_text(hashlib.sha256(body).hexdigest())
    return folder / "manifest.spdx.json"


if __name__ == "__main__":
    write_sbom(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "contoso-web 20261123.4")
