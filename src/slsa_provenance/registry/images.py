"""Container images as subjects: references, Docker@2's output file, tags resolved to digests.

    >>> references_in_docker_output("The push refers to repository [myacr.azurecr.io/app]\\n"
    ...     "v1: digest: sha256:" + "b" * 64 + " size: 1570\\n")[0].digest == "sha256:" + "b" * 64
    True

References and their shared types are in `reference.py`; a tag alone is resolved with one HEAD of
the manifest (`client.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.registry.client import Registries
from slsa_provenance.registry.reference import Image, ImageReference, parse_reference

_PUSHED_TO = re.compile(r"The push refers to repository \[([^\]]+)\]")
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: [0-9]+")
MAX_DOCKER_OUTPUT = 16 << 20


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
