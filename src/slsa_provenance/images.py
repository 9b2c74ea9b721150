"""Container images as subjects: references, Docker@2's output file, tags resolved to digests.

    >>> ref = parse_reference("myacr.azurecr.io/team/app@sha256:" + "a" * 64)
    >>> ref.name, ref.digest == "sha256:" + "a" * 64
    ('myacr.azurecr.io/team/app', True)
    >>> references_in_docker_output("The push refers to repository [myacr.azurecr.io/app]\\n"
    ...     "v1: digest: sha256:" + "b" * 64 + " size: 1570\\n")[0].digest == "sha256:" + "b" * 64
    True

A reference names its registry explicitly (a first component with a dot or a port, or localhost):
`docker.io/library/nginx`, not `nginx`. The subject is `REGISTRY/REPOSITORY` with the digest the
registry reports; a tag alone is resolved with one HEAD of the manifest (`oci.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.provenance import Subject

if TYPE_CHECKING:
    from slsa_provenance.oci import Registries

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_PUSHED_TO = re.compile(r"The push refers to repository \[([^\]]+)\]")
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: [0-9]+")
REFERENCE_FORM = (
    "REGISTRY/REPOSITORY@sha256:HEX (or REGISTRY/REPOSITORY:TAG), e.g. myacr.azurecr.io/app@sha256:…"
)
MAX_DOCKER_OUTPUT = 16 << 20


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


def references_in_docker_output(text: str) -> list[ImageReference]:
    """Every image the `docker push` output in Docker@2's DockerOutput file pushed, by digest."""
    found: list[ImageReference] = []
    repository = ""
    for line in text.splitlines():
        pushed_to = _PUSHED_TO.search(line)
        if pushed_to:
            repository = pushed_to.group(1)
            continue
        digest = _PUSHED_DIGEST.search(line)
        if digest and repository:
            reference = parse_reference(f"{repository}@{digest.group(1)}")
            if reference not in found:
                found.append(reference)
    return found


def image_references(images: Sequence[str], docker_outputs: Sequence[Path]) -> list[ImageReference]:
    """The images to attest, given directly and read from DockerOutput files, without repeats.

    Raises InputError for a malformed reference, an unreadable file, or a file that names no push.
    """
    references = [parse_reference(image) for image in images if image.strip()]
    pushed = []  # buildAndPush names two files, the build's output and the push's
    for path in docker_outputs:
        text = read_limited(path, "docker output", MAX_DOCKER_OUTPUT).decode("utf-8", "replace")
        pushed.extend(references_in_docker_output(text))
    if docker_outputs and not pushed:
        raise InputError(
            f"the docker output file {', '.join(map(str, docker_outputs))} names no pushed image digest",
            "pass the DockerOutput of a Docker@2 step whose command is push or buildAndPush",
        )
    return list(dict.fromkeys([*references, *pushed]))


def resolve(
    registries: Registries, references: Sequence[ImageReference], *, push: bool = False
) -> list[Image]:
    """Each image's manifest descriptor from its registry (one HEAD each); a tag becomes a digest.
    `push` asks for a token that may also push (for attaching later) so one token serves both.

    Raises InputError when an image is not in its registry, Error when the registry fails.
    """
    images = []
    for reference in references:
        repository = registries.repository(reference, push=push)
        images.append(Image(reference, repository.manifest_descriptor(reference.digest or reference.tag)))
        pinned = images[-1].manifest.digest
        if reference.digest and pinned != reference.digest:
            raise InputError(
                f"registry {reference.registry} answered {reference} with digest {pinned}",
                "the registry is misbehaving or a proxy rewrites its answers; check the registry URL",
            )
    return images
