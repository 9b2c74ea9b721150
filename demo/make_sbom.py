"""Write an SPDX 2.2 SBOM shaped like sbom-tool's into DROP/_manifest/spdx_2.2/, with its sidecar.

    $ python demo/make_sbom.py demo-drop

A stand-in for `sbom-tool generate` so the demo runs with no .NET and no network.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def main(drop: Path) -> None:
    files = sorted(p for p in drop.rglob("*") if p.is_file() and "_manifest" not in p.parts)
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
        "packages": [],
        "relationships": [],
        "spdxVersion": "SPDX-2.2",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "contoso-web 20261123.4",
        "documentNamespace": "https://sbom.microsoft/contoso-web/20261123.4/demo",
        "creationInfo": {"created": "2026-11-23T09:12:40Z", "creators": ["Tool: Microsoft.SBOMTool-4.1.5"]},
        "documentDescribes": ["SPDXRef-RootPackage"],
    }
    folder = drop / "_manifest" / "spdx_2.2"
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps(document, indent=2).encode()
    (folder / "manifest.spdx.json").write_bytes(body)
    (folder / "manifest.spdx.json.sha256").write_text(hashlib.sha256(body).hexdigest())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
