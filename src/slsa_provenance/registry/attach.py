"""Attach signed provenance to images in their registries, where cosign, Kyverno and gh find it.

    >>> with Registries(AgentRun()) as registries:                                   # doctest: +SKIP
    ...     attached = attach(registries, images, bundle, envelope, "referrers", created)
    >>> attached[0].referrer.digest
    'sha256:…'

`referrers` (the default): an OCI 1.1 referrer, the manifest actions/attest, sigstore-js and cosign v3
write (empty config blob uploaded, one layer holding the Sigstore bundle, `subject` the image, three
annotations), pushed by digest. When the registry does not confirm a referrers API (no `OCI-Subject`
on the PUT and no image index from `/referrers/`), the `sha256-<hex>` tag index is extended too.
`cosign` writes cosign's legacy `sha256-<hex>.att` (a DSSE envelope layer appended to what the tag
holds); `both` writes the two. Tags are read, merged, written and read again: an entry a
concurrent writer added, or ours, that went missing is merged and written once more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slsa_provenance import untrusted
from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance.statement import PREDICATE_TYPE
from slsa_provenance.registry.client import OCI_INDEX, OCI_MANIFEST, Registries, Repository, manifests_of
from slsa_provenance.registry.reference import Descriptor, Image
from slsa_provenance.signing.bundle import MEDIA_TYPE as BUNDLE_MEDIA_TYPE

FORMATS = ("referrers", "cosign", "both")
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
_MERGE_ATTEMPTS = 3


@dataclass(frozen=True)
class Attached:
    image: Image
    referrer: Descriptor | None
    """The bundle referrer manifest; None when only the cosign format was written."""
    tag_index: bool
    """True when the `sha256-<hex>` tag index was written (no referrers API)."""
    cosign_tag: str = ""

    def line(self) -> str:
        name = self.image.reference.name
        parts = []
        if self.referrer:
            index = " (and tag index: no referrers API)" if self.tag_index else ""
            parts.append(f"{name}@{self.referrer.digest}{index}")
        if self.cosign_tag:
            parts.append(f"{name}:{self.cosign_tag}")
        return ", ".join(parts)


def attach(
    registries: Registries, images: Sequence[Image], bundle: bytes, envelope: bytes, form: str, created: str
) -> list[Attached]:
    """Push the attestation to every image's repository. Raises InputError for an unknown format,
    Error when a registry refuses (a missing push permission names its role)."""
    if form not in FORMATS:
        raise InputError(f"the attach format is {form!r}", f"use one of {', '.join(FORMATS)}")
    attached = []
    for image in images:
        repository = registries.repository(image.reference, push=True)
        referrer, tag_index = (None, False)
        if form in ("referrers", "both"):
            referrer, tag_index = _push_referrer(repository, image, bundle, created)
        cosign_tag = _append_cosign(repository, image, envelope) if form in ("cosign", "both") else ""
        attached.append(Attached(image, referrer, tag_index, cosign_tag))
    return attached


def referrer_manifest(subject: Descriptor, layer: Descriptor, created: str) -> bytes:
    """The bundle referrer, in the field order and compact form sigstore-js writes."""
    return _compact(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "config": {
                "mediaType": EMPTY_MEDIA_TYPE,
                "digest": _digest(EMPTY_CONFIG),
                "size": len(EMPTY_CONFIG),
            },
            "layers": [layer.to_json()],
            "subject": subject.to_json(),
            "annotations": _annotations(created),
        }
    )


def index_entry(referrer: Descriptor, created: str) -> dict[str, Any]:
    """The referrer's descriptor in a tag index: artifactType and every annotation copied (the spec)."""
    return {**referrer.to_json(), "artifactType": BUNDLE_MEDIA_TYPE, "annotations": _annotations(created)}


def merged_index(existing: bytes | None, entries: Sequence[dict[str, Any]]) -> bytes | None:
    """`existing` (None: no tag yet) with `entries` appended unless their digest is there already;
    None when nothing is missing. Raises Error when the tag holds something other than an index."""
    if existing is None:
        document: dict[str, Any] = {"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": []}
    else:
        manifests_of(existing, "the referrers tag")  # raises unless it is an index
        document = untrusted.loads(existing)
    present = {m.get("digest") for m in document["manifests"]}
    missing = [e for e in entries if e["digest"] not in present]
    if not missing:
        return None
    document["manifests"] = [*document["manifests"], *missing]
    return _compact(document)


def _push_referrer(
    repository: Repository, image: Image, bundle: bytes, created: str
) -> tuple[Descriptor, bool]:
    repository.push_blob(EMPTY_CONFIG, EMPTY_MEDIA_TYPE)
    layer = repository.push_blob(bundle, BUNDLE_MEDIA_TYPE, new=True)
    manifest = referrer_manifest(image.manifest, layer, created)
    referrer, oci_subject = repository.put_manifest(_digest(manifest), manifest, OCI_MANIFEST)
    if oci_subject == image.manifest.digest or repository.referrers(image.manifest.digest) is not None:
        return referrer, False
    tag = "sha256-" + image.manifest.digest.removeprefix("sha256:")
    _merge_tag(repository, tag, [index_entry(referrer, created)])
    return referrer, True


def _merge_tag(repository: Repository, tag: str, entries: list[dict[str, Any]]) -> None:
    """Read, merge, write, re-check: until the tag lists every entry read and ours."""
    wanted = list(entries)
    for _ in range(_MERGE_ATTEMPTS):
        found = repository.get_manifest(tag, (OCI_INDEX,))
        if found and found[1].media_type != OCI_INDEX:
            raise Error(
                f"tag {tag} of {repository.reference.name} holds a {found[1].media_type}, not an image index",
                "remove that tag: the OCI referrers tag schema reserves it for an index of referrers",
            )
        existing = found[0] if found else None
        if existing is not None:
            wanted = _union(manifests_of(existing, f"tag {tag}"), wanted)
        merged = merged_index(existing, wanted)
        if merged is None:
            return
        repository.put_manifest(tag, merged, OCI_INDEX)
        again = repository.get_manifest(tag, (OCI_INDEX,))
        if again and merged_index(again[0], wanted) is None:
            return
    raise Error(
        f"tag {tag} of {repository.reference.name} kept changing while it was written",
        "other writers are updating it at the same time; run the step again",
    )


def _append_cosign(repository: Repository, image: Image, envelope: bytes) -> str:
    """Append the DSSE envelope to cosign's `sha256-<hex>.att`, keeping the layers already there."""
    tag = "sha256-" + image.manifest.digest.removeprefix("sha256:") + ".att"
    layer = repository.push_blob(envelope, DSSE_MEDIA_TYPE, new=True)
    ours = {
        **layer.to_json(),
        "annotations": {"dev.cosignproject.cosign/signature": "", "predicateType": PREDICATE_TYPE},
    }
    for _ in range(_MERGE_ATTEMPTS):
        found = repository.get_manifest(
            tag, (OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
        )
        layers = _layers(found[0], tag) if found else []
        if any(existing.get("digest") == layer.digest for existing in layers):
            return tag
        layers = [*layers, ours]
        config = _compact(
            {
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]},
            }
        )
        config_descriptor = repository.push_blob(config, IMAGE_CONFIG)
        manifest = _compact(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_descriptor.to_json(),
                "layers": layers,
            }
        )
        repository.put_manifest(tag, manifest, OCI_MANIFEST)
        again = repository.get_manifest(tag, (OCI_MANIFEST,))
        if again and {entry.get("digest") for entry in layers} <= {
            e.get("digest") for e in _layers(again[0], tag)
        }:
            return tag
    raise Error(
        f"tag {tag} of {repository.reference.name} kept changing while it was written", "run the step again"
    )


def _layers(manifest: bytes, tag: str) -> list[dict[str, Any]]:
    try:
        document = untrusted.loads(manifest)
    except ValueError:
        document = None
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise Error(
            f"tag {tag} holds no image manifest with layers",
            "remove the tag: cosign reserves it for attestations",
        )
    return layers


def _union(existing: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`wanted` plus the entries read that it lacks (so a re-check restores what a race dropped)."""
    digests = {e["digest"] for e in wanted}
    return [*wanted, *[e for e in existing if e.get("digest") not in digests]]


def _annotations(created: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.created": created,
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": PREDICATE_TYPE,
    }


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
