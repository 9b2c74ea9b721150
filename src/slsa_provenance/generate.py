"""Generate, sign and write provenance for a drop: the flow shared by the CLI and the pipeline step.

    >>> options = GenerateOptions(drop=Path("drop"), signer_uri="file:keys/slsa-signing.key")
    >>> result = generate(options)   # doctest: +SKIP
    >>> result.envelope_path
    PosixPath('drop/_manifest/slsa_1.0/provenance.intoto.jsonl')

Order: the drop is listed and its hashing starts on every core; meanwhile the signer is loaded,
the run context confirmed by the server (their round trips overlap the hashing, and a bad key or a
refused token stops it at once), the SBOMs read and the Statement's shape validated. Then the
subjects, the SBOM cross-check, the signature, local verification of that signature, and only then
one atomic write.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slsa_provenance import dsse
from slsa_provenance.bundle import bundle_parts
from slsa_provenance.context import RunContext
from slsa_provenance.errors import Error, InputError
from slsa_provenance.files import write_files
from slsa_provenance.hashing import ProgressCallback
from slsa_provenance.provenance import ResourceDescriptor, Subject, build_statement, canonical_statement
from slsa_provenance.sbom import MODES as SBOM_MODES
from slsa_provenance.sbom import SBOM_REMEDY, Sbom, describe, find_sboms, mismatches
from slsa_provenance.schema import validate_statement, validate_subjects
from slsa_provenance.signers import UNSIGNED, from_uri
from slsa_provenance.subjects import MANIFEST_DIR, start_hashing
from slsa_provenance.submodules import submodules

OUTPUT_FOLDER = f"{MANIFEST_DIR}/slsa_1.0"
_STAND_IN = Subject("stand-in", "0" * 64)
ENVELOPE_NAME = "provenance.intoto.jsonl"
BUNDLE_NAME = "provenance.sigstore.json"


@dataclass(frozen=True)
class GenerateOptions:
    drop: Path
    signer_uri: str
    patterns: Sequence[str] = ()
    output_dir: Path | None = None
    builder_id: str = ""
    pipeline_file: str = ""
    confirm_with_server: bool = True
    allow_pull_request: bool = False
    sbom: Path | None = None
    sbom_check: str = "strict"
    sbom_packages: bool = False
    sources: Path | None = None
    """The checked-out sources, for their submodules; default $BUILD_SOURCESDIRECTORY."""
    environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


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


def generate(options: GenerateOptions, on_progress: ProgressCallback | None = None) -> GenerateResult:
    """Raises InputError for unusable input and Error when signing or writing fails."""
    if options.sbom_check not in SBOM_MODES:
        raise InputError(f"the SBOM check is {options.sbom_check!r}", f"use one of {', '.join(SBOM_MODES)}")
    with start_hashing(options.drop, options.patterns) as hashing:
        signer = (
            None
            if options.signer_uri.strip() == UNSIGNED
            else from_uri(options.signer_uri, options.environment)
        )
        context = _context(options)
        sboms = find_sboms(options.drop, options.sbom, check_sidecar=options.sbom_check != "off")
        shape = _shape(options, context, sboms)
        subjects = hashing.result(on_progress)
    warnings = _check_sboms(options, sboms, subjects)
    validate_subjects([s.name for s in subjects], [s.sha256 for s in subjects])
    payload = canonical_statement(shape, subjects)
    if signer is None:
        envelope = dsse.Envelope(payload=payload, payload_type=dsse.PAYLOAD_TYPE, signatures=())
        keyid = ""
    else:
        envelope = dsse.sign(payload, dsse.PAYLOAD_TYPE, signer)
        try:
            dsse.verify(envelope, [signer.public_key()])
        except Error as exc:
            raise Error(
                "the new signature does not verify with the signer's own public key",
                "the key or the signing service is faulty; nothing was written",
            ) from exc
        keyid = signer.keyid
    output_dir = options.output_dir or options.drop / OUTPUT_FOLDER
    envelope_path = output_dir / ENVELOPE_NAME
    envelope_json = envelope.to_json()
    files: dict[Path, tuple[bytes, ...]] = {envelope_path: (envelope_json, b"\n")}
    bundle_path = output_dir / BUNDLE_NAME if envelope.signatures else None
    if bundle_path:
        files[bundle_path] = (*bundle_parts(envelope_json, keyid), b"\n")
    write_files(files)
    return GenerateResult(
        context=context,
        subjects=subjects,
        sboms=sboms,
        keyid=keyid,
        statement_sha256=hashlib.sha256(payload).hexdigest(),
        envelope_path=envelope_path,
        bundle_path=bundle_path,
        warnings=warnings,
    )


def _shape(options: GenerateOptions, context: RunContext, sboms: list[Sbom]) -> dict[str, Any]:
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
    )
    validate_statement(shape)
    return shape


def _submodules(options: GenerateOptions, context: RunContext) -> list[ResourceDescriptor]:
    sources = options.sources or Path(options.environment.get("BUILD_SOURCESDIRECTORY") or "/nonexistent")
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
    context = RunContext.from_environment(options.environment)
    if context.reason.lower() == "pullrequest" and not options.allow_pull_request:
        raise InputError(
            f"this is a pull-request build ({context.source_branch}): its code is not reviewed yet, and "
            "provenance signed for it could be mistaken for a release's",
            "attest builds of protected branches, or pass --allow-pull-request (task input "
            "allowPullRequest) to attest this one anyway",
        )
    if context.in_pipeline and options.confirm_with_server:
        from slsa_provenance.azdo import confirm

        return confirm(context, options.environment)
    if options.pipeline_file:
        context = replace(context, pipeline_file=options.pipeline_file.strip().lstrip("/"))
    if not context.pipeline_file:
        raise InputError(
            "the pipeline's YAML path is unknown without server confirmation",
            "pass --pipeline-file (the task's pipelineFile input), e.g. azure-pipelines.yml",
        )
    return context
