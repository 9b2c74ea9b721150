"""The nouns shared by the registry client, its auth and the gate: references, descriptors, answers.

    >>> ref = parse_reference("myacr.azurecr.io/team/app@sha256:" + "a" * 64)
    >>> ref.name, ref.digest == "sha256:" + "a" * 64
    ('myacr.azurecr.io/team/app', True)

A reference names its registry explicitly (a first component with a dot or a port, or localhost):
`docker.io/library/nginx`, not `nginx`. The subject is `REGISTRY/REPOSITORY` with the digest the
registry reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from slsa_provenance.errors import InputError
from slsa_provenance.provenance.statement import Subject

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
REFERENCE_FORM = (
    "REGISTRY/REPOSITORY@sha256:HEX (or REGISTRY/REPOSITORY:TAG), e.g. myacr.azurecr.io/app@sha256:…"
)


@dataclass(frozen=True)
class ImageReference:
    registry: str
    """As written, e.g. myacr.azurecr.io or 127.0.0.1:5000; the subject name keeps it."""
    repository: str
    tag: str = ""
    digest: str = ""
    """`sha256:<hex>`, or empty when only a tag was given."""

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def host(self) -> str:
        """The host the registry API answers on (Docker Hub's differs from its name)."""
        return "registry-1.docker.io" if self.registry in ("docker.io", "index.docker.io") else self.registry

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a registry says about a manifest or blob."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, str | int]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """An image pinned by digest, with its manifest's descriptor (the referrer's `subject`)."""

    reference: ImageReference
    manifest: Descriptor

    @property
    def subject(self) -> Subject:
        return Subject(self.reference.name, self.manifest.digest.removeprefix("sha256:"))


def parse_reference(text: str) -> ImageReference:
    """Raises InputError for anything but `REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`."""
    value = text.strip().removeprefix("docker://")
    match = _REFERENCE.match(value)
    registry = match.group("registry") if match else ""
    if not match or not ("." in registry or ":" in registry or registry == "localhost"):
        raise InputError(f"image {text.strip()!r} is not a full image reference", f"write {REFERENCE_FORM}")
    if not match.group("tag") and not match.group("digest"):
        raise InputError(
            f"image {value!r} names neither a tag nor a digest",
            "add @sha256:<digest> (what was pushed) or :<tag> to resolve at the registry",
        )
    return ImageReference(
        registry, match.group("repository"), match.group("tag") or "", match.group("digest") or ""
    )


@dataclass
class Response:
    method: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""
    """Where the answer came from, after any redirect."""
