"""Generate, sign and write provenance for a drop: the flow shared by the CLI and the pipeline step.

    >>> options = GenerateOptions(drop=Path("drop"), signer_uri="file:keys/slsa-signing.key")
    >>> result = generate(options)   # doctest: +SKIP
    >>> result.envelope_path
    PosixPath('drop/_manifest/slsa_1.0/provenance.intoto.jsonl')

Order: the drop is listed and its hashing starts on every core; meanwhile the modules for signing
and registries are imported (cryptography among them: 30 ms that would otherwise come first), the
signer is loaded, the run context confirmed by the server (their round trips overlap the hashing,
and a bad key or a refused token stops it at once), the SBOMs read and the Statement's shape
validated. Then the subjects, the SBOM cross-check, the signature, local verification of that
signature, and only then one atomic write.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import InputError
from slsa_provenance.files import write_files
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.hashing import Hashing, ProgressCallback
from slsa_provenance.provenance.sbom import MODES as SBOM_MODES
from slsa_provenance.provenance.sbom import SBOM_REMEDY, Sbom, describe, find_sboms, mismatches
from slsa_provenance.provenance.schema import validate_statement, validate_subjects
from slsa_provenance.provenance.statement import (
    ResourceDescriptor,
    Subject,
    build_statement,
    canonical_statement,
)
from slsa_provenance.provenance.subjects import MANIFEST_DIR, start_hashing
from slsa_provenance.provenance.submodules import submodules
from slsa_provenance.signing.bundle import bundle_parts
from slsa_provenance.signing.signers import UNSIGNED, from_uri

if TYPE_CHECKING:  # imported by generate() once the hashing has started
    from slsa_provenance.registry.attach import Attached
    from slsa_provenance.registry.client import Registries
    from slsa_provenance.registry.reference import Image, ImageReference

OUTPUT_FOLDER = f"{MANIFEST_DIR}/slsa_1.0"
_STAND_IN = Subject("stand-in", "0" * 64)
ENVELOPE_NAME = "provenance.intoto.jsonl"
BUNDLE_NAME = "provenance.sigstore.json"


@dataclass(frozen=True)
class GenerateOptions:
    drop: Path | None
    """None when only images are attested: `output_dir` is then required."""
    signer_uri: str
    patterns: Sequence[str] = ()
    output_dir: Path | None = None
    builder_id: str = ""
    pipeline_file: str = ""
    confirm_with_server: bool = True
    confirmation_required: bool = False
    """Confirm even when TF_BUILD (a variable any step can set) says this is not a pipeline: the
    pipeline step, where a run that cannot be confirmed must fail rather than be recorded."""
    allow_pull_request: bool = False
    sbom: Path | None = None
    sbom_check: str = "strict"
    sbom_packages: bool = False
    sources: Path | None = None
    """The checked-out sources, for their submodules; default the agent's Build.SourcesDirectory."""
    agent: AgentRun = field(default_factory=AgentRun)
    """What the agent handed over; the default is a run outside any pipeline."""
    images: Sequence[str] = ()
    """Image references, `REGISTRY/REPO@sha256:HEX` or `REGISTRY/REPO:TAG` (resolved)."""
    docker_outputs: Sequence[Path] = ()
    """Docker@2 DockerOutput files: every image they pushed is a subject too."""
    attach_format: str = ""
    """Push the attestation to each image's registry: referrers, cosign or both; '' does not."""


@dataclass(frozen=True)
class GenerateResult:
    context: RunContext
    subjects: list[Subject]
    sboms: list[Sbom]
    keyid: str
    statement_sha256: str
    envelope_path: Path
    bundle_path: Path | None
    warnings: list[str]
    images: list[Image] = field(default_factory=list)
    attached: list[Attached] = field(default_factory=list)
    registry_requests: tuple[int, int] = (0, 0)
    """HTTP requests to the registries and their token services: to resolve the images, to attach."""


def generate(options: GenerateOptions, on_progress: ProgressCallback | None = None) -> GenerateResult:
    """Raises InputError for unusable input and Error when signing, writing or attaching fails."""
    if options.sbom_check not in SBOM_MODES:
        raise InputError(f"the SBOM check is {options.sbom_check!r}", f"use one of {', '.join(SBOM_MODES)}")
    references = _references(options)
    output_dir = _output_dir(options, references)
    with (
        start_hashing(options.drop, options.patterns) if options.drop else Hashing(Path(), []) as hashing,
        _registries(options.agent) as registries,
    ):
        from slsa_provenance.registry.attach import attach
        from slsa_provenance.registry.images import resolve
        from slsa_provenance.signing import dsse

        signer = (
            None if options.signer_uri.strip() == UNSIGNED else from_uri(options.signer_uri, options.agent)
        )
        context = _context(options)
        sboms = (
            find_sboms(options.drop, options.sbom, check_sidecar=options.sbom_check != "off")
            if options.drop
            else []
        )
        shape = _shape(options, context, sboms, [r.name for r in references])
        images = resolve(registries, references, push=bool(options.attach_format))
        resolving = registries.requests
        files = hashing.result(on_progress)
        warnings = _check_sboms(options, sboms, files)
        _refuse_clashes(files, images)
        subjects = [*files, *(image.subject for image in images)]
        validate_subjects([s.name for s in subjects], [s.sha256 for s in subjects])
        payload = canonical_statement(shape, subjects)
        if signer is None:
            envelope = dsse.Envelope(payload=payload, payload_type=dsse.PAYLOAD_TYPE, signatures=())
            keyid = ""
        else:
            envelope = dsse.sign_checked(payload, dsse.PAYLOAD_TYPE, signer)
            keyid = signer.keyid
        envelope_path = output_dir / ENVELOPE_NAME
        envelope_json = envelope.to_json()
        written: dict[Path, tuple[bytes, ...]] = {envelope_path: (envelope_json, b"\n")}
        bundle_path = output_dir / BUNDLE_NAME if envelope.signatures else None
        if bundle_path:
            written[bundle_path] = (*bundle_parts(envelope_json, keyid), b"\n")
        attached: list[Attached] = []

        def attach_to_images() -> None:  # files staged, not yet in place: a failed push leaves none
            if options.attach_format and bundle_path:
                attached.extend(
                    attach(
                        registries,
                        images,
                        b"".join(written[bundle_path]),
                        envelope_json,
                        options.attach_format,
                        _created(context),
                    )
                )

        write_files(written, before_rename=attach_to_images)
    return GenerateResult(
        context=context,
        subjects=subjects,
        sboms=sboms,
        keyid=keyid,
        statement_sha256=hashlib.sha256(payload).hexdigest(),
        envelope_path=envelope_path,
        bundle_path=bundle_path,
        warnings=warnings,
        images=images,
        attached=attached,
        registry_requests=(resolving, registries.requests - resolving),
    )


def _references(options: GenerateOptions) -> list[ImageReference]:
    """The images to attest; without any, no registry module is imported before the hashing starts."""
    if not (options.images or options.docker_outputs):
        return []
    from slsa_provenance.registry.images import image_references

    return image_references(options.images, options.docker_outputs)


def _registries(agent: AgentRun) -> Registries:
    from slsa_provenance.registry.client import Registries

    return Registries(agent)


def _output_dir(options: GenerateOptions, images: list[ImageReference]) -> Path:
    """Where the provenance goes; refuses, before any work, what cannot be done."""
    if options.attach_format and not images:
        raise InputError(
            "attaching to images was asked for (--attach, attachToImages), but no image is given",
            "name them (--image, --docker-output, or the inputs images and dockerOutput), or do not attach",
        )
    if options.attach_format and options.signer_uri.strip() == UNSIGNED:
        raise InputError("unsigned provenance cannot be attached to images", "sign it with a key")
    if options.output_dir:
        return options.output_dir
    if options.drop:
        return _unlinked(options.drop, OUTPUT_FOLDER)
    if images:
        raise InputError(
            "with images alone there is no drop to write the provenance into", "pass --output-dir"
        )
    raise InputError(
        "nothing to attest", "pass --drop with the build's output, or --image with a pushed image"
    )


def _refuse_clashes(files: Sequence[Subject], images: Sequence[Image]) -> None:
    """A drop file named like an image attested beside it would be two subjects of one name: a gate
    could not tell which one a name means, nor which must be in the folder."""
    if not images:
        return
    clash = sorted({f.name for f in files} & {i.subject.name for i in images})
    if clash:
        raise InputError(
            f"the drop's file {clash[0]} has the name of an image attested with it",
            "move or rename that file, or attest the image in a step of its own",
        )


def _created(context: RunContext) -> str:
    """The referrer's creation time: the run's start (re-attaching the same bundle is then a no-op
    digest), or now."""
    if context.started_on:
        return context.started_on
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unlinked(drop: Path, folder: str) -> Path:
    """`drop`/`folder`, none of whose parts below the drop may be a symbolic link (it would send the
    files, and their replacement, out of the drop)."""
    path = drop
    for part in folder.split("/"):
        path = path / part
        if path.is_symlink():
            raise InputError(
                f"{path} is a symbolic link: the provenance would be written wherever it points",
                "remove the link; the step creates the folder itself",
            )
    return path


def _shape(
    options: GenerateOptions, context: RunContext, sboms: list[Sbom], images: list[str]
) -> dict[str, Any]:
    """The validated Statement with a stand-in subject; `canonical_statement` puts the drop's in.
    It is built and validated while the files are hashed; the subjects are checked on their own."""
    packages = {p.uri + repr(sorted(p.digest.items())): p for s in sboms for p in s.packages}
    shape = build_statement(
        context,
        [_STAND_IN],
        builder_id=options.builder_id,
        dependencies=[
            *_submodules(options, context),
            *([packages[k] for k in sorted(packages)] if options.sbom_packages else ()),
        ],
        byproducts=[s.byproduct() for s in sboms],
        images=images,
    )
    validate_statement(shape)
    return shape


def _submodules(options: GenerateOptions, context: RunContext) -> list[ResourceDescriptor]:
    sources = options.sources or Path(options.agent.folders.sources or "/nonexistent")
    return submodules(sources, context.repository_uri)


def _check_sboms(options: GenerateOptions, sboms: list[Sbom], subjects: list[Subject]) -> list[str]:
    """The SBOMs cross-checked with the subjects as `sbom_check` says: warnings, or InputError."""
    warnings = []
    for sbom in sboms if options.sbom_check != "off" else []:
        found = mismatches(sbom, subjects, every_file=not options.patterns)
        if found and options.sbom_check == "strict":
            raise InputError(describe(sbom, found), SBOM_REMEDY)
        if found:
            warnings.append(describe(sbom, found))
    return warnings


def _context(options: GenerateOptions) -> RunContext:
    """The claimed context, confirmed by the server inside a pipeline unless opted out."""
    context = RunContext.from_variables(options.agent.variables)
    if context.reason.lower() == "pullrequest" and not options.allow_pull_request:
        raise InputError(
            f"this is a pull-request build ({context.source_branch}): its code is not reviewed yet, and "
            "provenance signed for it could be mistaken for a release's",
            "attest builds of protected branches, or pass --allow-pull-request (task input "
            "allowPullRequest) to attest this one anyway",
        )
    if options.confirm_with_server and (context.in_pipeline or options.confirmation_required):
        from slsa_provenance.azure.devops import confirm

        return confirm(context, options.agent.system, options.agent.http)
    if options.pipeline_file:
        context = replace(context, pipeline_file=options.pipeline_file.strip().lstrip("/"))
    if not context.pipeline_file:
        raise InputError(
            "the pipeline's YAML path is unknown without server confirmation",
            "pass --pipeline-file (the task's pipelineFile input), e.g. azure-pipelines.yml",
        )
    return context
