"""Write an SPDX 2.2 SBOM shaped like sbom-tool's into DROP/_manifest/spdx_2.2/, with its sidecar.

    $ python packaging/spdx.py DROP [NAME]

A stand-in for `sbom-tool generate` (no .NET, no network) for the demo and for the extension's own
SBOM, valid SPDX 2.2 as `pyspdxtools` checks it: the root package (the drop) holding every file of
the drop with SHA-256 and SHA-1 under `./`-relative names, the given packages with purls as what it
depends on, and `manifest.spdx.json.sha256` (64 hex digits, no newline). The creation time is
SOURCE_DATE_EPOCH when set (reproducible builds), else the time of writing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
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


ROOT_PACKAGE = "SPDXRef-RootPackage"


def creation_time(environ: Mapping[str, str]) -> datetime.datetime:
    """SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/) or now, in UTC."""
    epoch = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return datetime.datetime.now(datetime.UTC)
    if not epoch.isdigit():
        raise SystemExit(
            f"error: SOURCE_DATE_EPOCH is {epoch!r}, not a count of seconds since 1970; "
            "set it to `git log -1 --format=%ct` or unset it"
        )
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)


def write_sbom(
    drop: Path, name: str, packages: Sequence[Package] = (), created: datetime.datetime | None = None
) -> Path:
    """DROP/_manifest/spdx_2.2/manifest.spdx.json and its sidecar; `created` defaults to
    creation_time(os.environ)."""
    files = sorted(p for p in drop.rglob("*") if p.is_file() and p.relative_to(drop).parts[0] != "_manifest")
    entries, sha1s = [], []
    for index, path in enumerate(files):
        data = path.read_bytes()
        sha1s.append(hashlib.sha1(data).hexdigest())  # noqa: S324
        entries.append(
            {
                "fileName": "./" + path.relative_to(drop).as_posix(),
                "SPDXID": f"SPDXRef-File--{index}",
                "checksums": [
                    {"algorithm": "SHA256", "checksumValue": hashlib.sha256(data).hexdigest()},
                    {"algorithm": "SHA1", "checksumValue": sha1s[-1]},
                ],
                "licenseConcluded": "NOASSERTION",
                "licenseInfoInFiles": ["NOASSERTION"],
                "copyrightText": "NOASSERTION",
            }
        )
    # SPDX 2.2 §3.9: SHA-1 over the sorted SHA-1 values of the package's files.
    verification = hashlib.sha1("".join(sorted(sha1s)).encode()).hexdigest()  # noqa: S324
    root = {
        "name": name,
        "SPDXID": ROOT_PACKAGE,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": True,
        "packageVerificationCode": {"packageVerificationCodeValue": verification},
        "licenseConcluded": "NOASSERTION",
        "licenseInfoFromFiles": ["NOASSERTION"],
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "hasFiles": [entry["SPDXID"] for entry in entries],
    }
    dependencies = [p.to_spdx(i) for i, p in enumerate(packages)]
    when = created or creation_time(os.environ)
    document = {
        "files": entries,
        "packages": [root, *dependencies],
        "relationships": [
            {
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": ROOT_PACKAGE,
                "spdxElementId": "SPDXRef-DOCUMENT",
            },
            *(
                {
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": p["SPDXID"],
                    "spdxElementId": ROOT_PACKAGE,
                }
                for p in dependencies
            ),
        ],
        "spdxVersion": "SPDX-2.2",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        # Unique per content, as SPDX asks, and the same for the same files.
        "documentNamespace": f"https://spdx.org/spdxdocs/{name.replace(' ', '-')}/{verification}",
        "creationInfo": {
            "created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": ["Tool: slsa-provenance-packaging"],
        },
        "documentDescribes": [ROOT_PACKAGE],
    }
    folder = drop / "_manifest" / "spdx_2.2"
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps(document, indent=2).encode()
    (folder / "manifest.spdx.json").write_bytes(body)
    (folder / "manifest.spdx.json.sha256").write_text(hashlib.sha256(body).hexdigest())
    return folder / "manifest.spdx.json"


if __name__ == "__main__":
    write_sbom(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "contoso-web 20261123.4")
