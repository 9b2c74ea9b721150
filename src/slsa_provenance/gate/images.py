"""Verify an image by reference: find its attestations in the registry, verify each with every check.

    >>> with Registries(AgentRun()) as registries:                                      # doctest: +SKIP
    ...     report = verify_image(registries, parse_reference(ref), keys, Expectations())
    >>> report.passed, report.lines()[-1]
    (True, 'PASSED: myacr.azurecr.io/app@sha256:… (attestation sha256:…, signed by …)')

Attestations are looked for where writers put them: the referrers API, else the `sha256-<hex>` tag
index (Sigstore bundles, by `artifactType`; an entry without one, as mirroring tools leave it, by
its manifest's own artifactType or config.mediaType), then cosign's legacy `sha256-<hex>.att` (DSSE
layers). Each is verified as a provenance file (checks.run_checks: signature, types, builder,
source, ref, commit, SBOM, and a subject that names this repository with this digest) in that order
until one passes; every one that fails is named by its digest with the check that failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from slsa_provenance import untrusted
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.gate.checks import BY_NAME, MAX_ENVELOPE, Artifact, Expectations, Report, run_checks
from slsa_provenance.registry.attach import DSSE_MEDIA_TYPE
from slsa_provenance.registry.client import OCI_INDEX, OCI_MANIFEST, Registries, Repository, manifests_of
from slsa_provenance.registry.reference import Descriptor, Image, ImageReference, parse_reference
from slsa_provenance.signing.bundle import MEDIA_TYPE as BUNDLE_MEDIA_TYPE
from slsa_provenance.signing.keys import PublicKey

BUNDLE_PREFIX = BUNDLE_MEDIA_TYPE.split(".v0")[0]  # application/vnd.dev.sigstore.bundle
MAX_ATTESTATIONS = 50


@dataclass(frozen=True)
class Attestation:
    where: str
    """`referrer sha256:…` or `cosign .att layer sha256:…`: what a message names."""
    error: str = ""
    keyid: str = ""
    sha256: str = ""
    """The attestation document's digest (bundle or envelope), as read from the registry."""
    report: Report | None = None
    """Its checks; the statement and level a Verification Summary records."""


@dataclass
class ImageReport:
    image: Image
    attestations: list[Attestation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return any(not a.error for a in self.attestations)

    @property
    def passing(self) -> Attestation | None:
        """The attestation that passed every check, if one did."""
        return next((a for a in self.attestations if not a.error), None)

    def lines(self) -> list[str]:
        name = f"{self.image.reference.name}@{self.image.manifest.digest}"
        reference = self.image.reference
        resolved = [f"resolved {reference} to {self.image.manifest.digest}"] if not reference.digest else []
        lines = resolved + [f"FAILED: {name}: {a.where}: {a.error}" for a in self.attestations if a.error]
        passing = self.passing
        if passing:
            lines.append(f"PASSED: {name} ({passing.where}, signed by {passing.keyid})")
        elif not self.attestations:
            lines.append(
                f"FAILED: {name}: no attestation found (referrers, tag sha256-<hex>, cosign .att): "
                "attach provenance with generate --attach"
            )
        return lines


def verify_images(
    references: Sequence[str], keys: Sequence[PublicKey], expected: Expectations, run: AgentRun
) -> list[ImageReport]:
    """Every image verified; raises InputError for a malformed reference."""
    parsed = [parse_reference(reference) for reference in references]
    with Registries(run) as registries:
        return [verify_image(registries, reference, keys, expected) for reference in parsed]


def verify_image(
    registries: Registries, reference: ImageReference, keys: Sequence[PublicKey], expected: Expectations
) -> ImageReport:
    """Raises InputError when the image is not in its registry, Error when the registry fails."""
    repository = registries.repository(reference)
    descriptor = repository.manifest_descriptor(reference.digest or reference.tag)
    if reference.digest and descriptor.digest != reference.digest:
        raise Error(f"registry answered {reference} with {descriptor.digest}", "check the registry URL")
    report = ImageReport(Image(reference, descriptor))
    # By name: an attestation counts only when a subject names this repository with this digest
    # (a drop file holding the manifest's bytes, or another repository's image, does not).
    artifact = [Artifact(reference.name, descriptor.digest.removeprefix("sha256:"), BY_NAME)]
    for where, document in _attestations(repository, descriptor):
        if isinstance(document, str):  # the referrer could not be read: its reason
            report.attestations.append(Attestation(where, document))
            continue
        result = run_checks(document, keys, expected, artifact)
        error = next((r.error for r in result.results if r.error), "")
        digest = hashlib.sha256(document).hexdigest()
        report.attestations.append(Attestation(where, error, result.keyid, digest, result))
        if not error:
            break
    return report


def _attestations(repository: Repository, image: Descriptor) -> Iterator[tuple[str, bytes | str]]:
    """(where, the bundle or envelope, or why it cannot be read) of every attestation, lazily."""
    hex_digest = image.digest.removeprefix("sha256:")
    referrers = repository.referrers(image.digest)
    if referrers is None:
        found = repository.get_manifest(f"sha256-{hex_digest}", (OCI_INDEX,))
        referrers = manifests_of(found[0], f"tag sha256-{hex_digest}") if found else []
    typed = [r for r in referrers if str(r.get("artifactType", "")).startswith(BUNDLE_PREFIX)]
    untyped = [r for r in referrers if not r.get("artifactType")]
    for entry in (typed + untyped)[:MAX_ATTESTATIONS]:
        where = f"referrer {entry.get('digest')}"
        try:
            manifest = _bundle_manifest(repository, entry)
            if manifest is not None:
                yield where, _bundle_of(repository, manifest, image)
        except (Error, InputError) as exc:
            yield where, exc.diagnostics()
    att = repository.get_manifest(
        f"sha256-{hex_digest}.att", (OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
    )
    for layer in _layers(att[0] if att else b"{}")[:MAX_ATTESTATIONS]:
        if layer.get("mediaType") != DSSE_MEDIA_TYPE:
            continue
        descriptor = _descriptor(layer)
        yield f"cosign .att layer {descriptor.digest}", repository.get_blob(descriptor, MAX_ENVELOPE)


def _bundle_manifest(repository: Repository, entry: dict[str, Any]) -> bytes | None:
    """The referrer manifest of a Sigstore bundle, None for other referrers. An entry without an
    artifactType (skopeo, oras cp and crane drop it when they copy a tag index to a mirror) is
    fetched, and its own artifactType, else its config.mediaType, decides."""
    declared = entry.get("artifactType")
    manifest, _ = _found(repository.get_manifest(str(entry.get("digest", "")), (OCI_MANIFEST,)))
    if declared:
        return manifest
    document = _object(manifest)
    config = document.get("config")
    kind = document.get("artifactType") or (config.get("mediaType") if isinstance(config, dict) else "")
    return manifest if str(kind).startswith(BUNDLE_PREFIX) else None


def _bundle_of(repository: Repository, manifest: bytes, image: Descriptor) -> bytes:
    """The bundle a referrer holds: one bundle layer, and its subject must be this image."""
    document = _object(manifest)
    subject = document.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image.digest:
        got = subject.get("digest") if isinstance(subject, dict) else None
        raise Error(f"subject: got {got!r}, expected {image.digest!r}", "the referrer is another image's")
    layers = _layers(manifest)
    if len(layers) != 1 or not str(layers[0].get("mediaType", "")).startswith(BUNDLE_PREFIX):
        raise Error("layers: expected exactly one Sigstore bundle layer", "the referrer is not a bundle")
    return repository.get_blob(_descriptor(layers[0]), MAX_ENVELOPE)


def _found(found: tuple[bytes, Descriptor] | None) -> tuple[bytes, Descriptor]:
    if found is None:
        raise Error("the referrer manifest is gone from the registry", "attach the provenance again")
    return found


def _object(data: bytes) -> dict[str, Any]:
    try:
        document = untrusted.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise Error("the manifest is not a JSON object", "the registry served something unexpected")
    return document


def _layers(manifest: bytes) -> list[dict[str, Any]]:
    layers = _object(manifest).get("layers") or []
    return [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []


def _descriptor(layer: dict[str, Any]) -> Descriptor:
    digest, size = layer.get("digest"), layer.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or not isinstance(size, int):
        raise Error("a layer has no sha256 digest or size", "the attestation manifest is malformed")
    return Descriptor(str(layer.get("mediaType", "")), digest, size)
