"""A deployment gate: the flow shared by `slsa-provenance verify` and the pipeline step.

    >>> result = verify_gate(GateOptions(provenance=Path("p.intoto.jsonl"), keys=["slsa.pub"],
    ...                                  artifacts=[Path("drop")]))   # doctest: +SKIP
    >>> [r.line() for r in result.report.results][:1]
    ['PASSED: bin/app.exe']

Reads the trusted keys and the provenance, hashes the artifacts (hashlib only), and runs the
numbered checks of `verify`. Raises InputError for unusable input; a failed check is a result,
not an exception.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slsa_provenance.artifacts import artifact_digests
from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.hashing import sha256_file
from slsa_provenance.keys import PublicKey
from slsa_provenance.signers import trusted_key
from slsa_provenance.verify import MAX_ENVELOPE, Expectations, Report, run_checks

if TYPE_CHECKING:
    from slsa_provenance.image_verify import ImageReport


@dataclass(frozen=True)
class GateOptions:
    provenance: Path | None = None
    images: Sequence[str] = ()
    """Images verified by the attestations attached to them in their registries, instead of a file."""
    keys: Sequence[str] = ()
    """PEM public key files or Key Vault key URIs; any one may verify."""
    artifacts: Sequence[Path] = ()
    digests: Sequence[str] = ()
    builder_id: str | None = None
    source_uri: str | None = None
    source_ref: str | None = None
    commit: str | None = None
    build_type: str | None = None
    sbom: Path | None = None
    allow_unconfirmed: bool = False
    environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class GateResult:
    report: Report | None
    """The provenance file's checks; None when images were verified."""
    images: Sequence[ImageReport] = ()

    @property
    def passed(self) -> bool:
        return self.report.passed if self.report is not None else all(r.passed for r in self.images)

    def lines(self) -> list[str]:
        """One PASSED or FAILED line per artifact (images: per attestation tried, then the verdict)."""
        if self.report is not None:
            return [result.line() for result in self.report.results]
        return [line for report in self.images for line in report.lines()]


def verify_gate(options: GateOptions) -> GateResult:
    """Raises InputError for unusable keys, provenance, artifacts or images; Error when Key Vault
    or a registry fails."""
    provenance = options.provenance
    if (provenance is None) == (not options.images):
        raise InputError("verify needs either --provenance or --image", "pass one of them")
    if provenance is None:
        from slsa_provenance.image_verify import verify_images

        keys = _keys(options)
        return GateResult(
            None, verify_images(options.images, keys, expectations(options), options.environment)
        )
    artifacts = artifact_digests(options.artifacts, options.digests)
    keys = _keys(options)
    envelope = read_limited(provenance, "provenance", MAX_ENVELOPE)
    report = run_checks(envelope, keys, expectations(options), artifacts)
    return GateResult(report)


def _keys(options: GateOptions) -> list[PublicKey]:
    keys = [trusted_key(k, options.environment) for k in options.keys]
    if not keys:
        raise InputError("no trusted key given", "pass --key with the signer's public key")
    return keys


def expectations(options: GateOptions) -> Expectations:
    """What the checks expect, from the options."""
    return Expectations(
        builder_id=options.builder_id,
        source_uri=options.source_uri,
        source_ref=options.source_ref,
        commit=options.commit,
        sbom_sha256=sha256_file(options.sbom)[0] if options.sbom else None,
        allow_unconfirmed=options.allow_unconfirmed,
        **({"build_type": options.build_type} if options.build_type else {}),
    )
