"""The command line: `slsa-provenance generate | verify | keygen`.

    $ slsa-provenance generate --drop drop --signer file:keys/slsa-signing.key --pipeline-file ci.yml
    $ slsa-provenance verify --provenance drop/_manifest/slsa_1.0/provenance.intoto.jsonl \\
          --key keys/slsa-signing.pub --artifact drop --source-ref 'refs/heads/main'

Exit codes: 0 ok, 1 failed (verification or operation), 2 usage or bad input. Errors are caught
here and only here, and printed as one sentence with its remedy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from slsa_provenance import __version__, usage
from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance.hashing import Progress
from slsa_provenance.signing import KEY_TYPES


def main(argv: Sequence[str] | None = None) -> int:
    vso.utf8_output()
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except Error as exc:
        _say(f"error: {exc.diagnostics()}", error=True)
        return exc.exit_code
    except KeyboardInterrupt:
        _say("error: interrupted; nothing was written", error=True)
        return 1


def _say(text: str, *, error: bool = False) -> None:
    """Print one line of output; names in it (files, images, keys) cannot become `##vso` commands."""
    print(vso.neutralize(text), file=sys.stderr if error else sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = usage.Parser(prog="slsa-provenance", **usage.TOP.parser_options())
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help=usage.GENERATE.summary, **usage.GENERATE.parser_options())
    gen.add_argument(
        "--drop",
        type=Path,
        help="folder of the build's artifacts (default: $BUILD_ARTIFACTSTAGINGDIRECTORY, unless only "
        "images are attested)",
    )
    gen.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="REF",
        help="a pushed image, REGISTRY/REPO@sha256:HEX (or :TAG, resolved at the registry); repeatable",
    )
    gen.add_argument(
        "--docker-output",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a Docker@2 DockerOutput file: every image it pushed is attested; repeatable",
    )
    gen.add_argument(
        "--attach",
        action="store_true",
        help="push the signed provenance to each image's registry (OCI referrer)",
    )
    gen.add_argument(
        "--attach-format",
        choices=("referrers", "cosign", "both"),
        default="referrers",
        help="referrers: OCI 1.1 referrer (cosign v3, Kyverno, gh); cosign: legacy sha256-<hex>.att; both",
    )
    gen.add_argument(
        "--subject",
        action="append",
        default=[],
        metavar="GLOB",
        help="files to attest, relative to the drop; repeatable (default: every file)",
    )
    gen.add_argument(
        "--signer",
        default=os.environ.get("SLSA_SIGNER", ""),
        metavar="URI",
        help="file:KEY.pem, azurekms://VAULT/KEY[/VERSION], a Key Vault key URL, or none "
        "(default: $SLSA_SIGNER)",
    )
    gen.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where to write (default: DROP/_manifest/slsa_1.0)",
    )
    gen.add_argument("--builder-id", default="", metavar="ID", help="override runDetails.builder.id")
    gen.add_argument(
        "--pipeline-file",
        default="",
        metavar="PATH",
        help="the pipeline's YAML path, when the server does not confirm it",
    )
    gen.add_argument(
        "--no-server-confirmation",
        action="store_true",
        help="in a pipeline, do not confirm the variables with the Azure DevOps REST API "
        "(recorded in the provenance as not confirmed)",
    )
    gen.add_argument(
        "--sbom",
        type=Path,
        metavar="FILE",
        help="the SBOM to bind (default: DROP/_manifest/spdx_2.2|spdx_3.0/manifest.spdx.json)",
    )
    gen.add_argument(
        "--sbom-check",
        choices=("strict", "warn", "off"),
        default="strict",
        help="compare the SBOM's file digests with the subjects: fail, warn, or only record it",
    )
    gen.add_argument(
        "--sbom-packages",
        action="store_true",
        help="also record the SBOM's packages (purls) as resolved dependencies",
    )
    gen.add_argument(
        "--allow-pull-request",
        action="store_true",
        help="attest a pull-request build (refused by default: its code is not reviewed)",
    )
    gen.add_argument(
        "--sources",
        type=Path,
        metavar="DIR",
        help="the checked-out sources, whose git submodules are recorded (default: $BUILD_SOURCESDIRECTORY)",
    )
    gen.set_defaults(run=_generate)

    ver = commands.add_parser("verify", help=usage.VERIFY.summary, **usage.VERIFY.parser_options())
    ver.add_argument("--provenance", type=Path, metavar="FILE", help="the .intoto.jsonl envelope")
    ver.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="REF",
        help="verify an image by the attestations attached to it in its registry "
        "(REGISTRY/REPO@sha256:HEX or :TAG); repeatable, instead of --provenance",
    )
    ver.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="a trusted public key: a PEM file, or a Key Vault key (https://VAULT.vault.azure.net/keys/KEY"
        " or azurekms://..., public half only); repeatable (any one may verify, for rotation); with "
        "--policy, one of the policy's",
    )
    ver.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="a YAML or JSON policy (docs/policy.md): trusted keys, builders and their levels, "
        "repositories, refs; the other options narrow it",
    )
    ver.add_argument(
        "--artifact",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="an artifact file, or a folder whose every file is checked; repeatable",
    )
    ver.add_argument(
        "--digest",
        action="append",
        default=[],
        metavar="sha256:HEX",
        help="an artifact known only by its digest; repeatable",
    )
    ver.add_argument("--builder-id", metavar="ID", help="expected runDetails.builder.id")
    ver.add_argument("--source-uri", metavar="URI", help="expected source repository URL")
    ver.add_argument("--source-ref", metavar="REF", help="expected ref, or a glob like refs/tags/v*")
    ver.add_argument("--commit", metavar="SHA", help="expected git commit")
    ver.add_argument("--build-type", metavar="URI", help="expected buildType (default: Azure Pipelines)")
    ver.add_argument("--sbom", type=Path, metavar="FILE", help="check (10): this SBOM is the one recorded")
    ver.add_argument(
        "--vsa",
        type=Path,
        metavar="FILE",
        help="when every check passes, write a signed SLSA Verification Summary Attestation here",
    )
    ver.add_argument(
        "--vsa-signer",
        default=os.environ.get("SLSA_VSA_SIGNER", ""),
        metavar="URI",
        help="the VSA's signer: file:KEY.pem or a Key Vault key (default: $SLSA_VSA_SIGNER)",
    )
    ver.add_argument("--verifier-id", metavar="ID", help="the VSA's verifier.id (default: this extension)")
    ver.add_argument(
        "--resource-uri", metavar="URI", help="the VSA's resourceUri (default: the provenance's build URL)"
    )
    ver.add_argument(
        "--allow-unconfirmed",
        action="store_true",
        help="accept provenance whose run context the server did not confirm (it could claim any branch)",
    )
    ver.set_defaults(run=_verify)

    step = commands.add_parser("task", help=usage.TASK.summary, **usage.TASK.parser_options())
    step.set_defaults(run=_task)

    key = commands.add_parser("keygen", help=usage.KEYGEN.summary, **usage.KEYGEN.parser_options())
    key.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the key pair")
    key.add_argument("--type", default="ecdsa-p256", choices=KEY_TYPES)
    key.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    key.set_defaults(run=_keygen)
    return parser


def _generate(args: argparse.Namespace) -> int:
    from slsa_provenance.generate import GenerateOptions, generate

    if not args.signer:
        raise InputError(
            "no signer given",
            "pass --signer file:KEY.pem (create one with 'slsa-provenance keygen'), "
            "a Key Vault key, or --signer none for unsigned provenance",
        )
    if args.signer.strip() == "none":
        _say(
            "WARNING: --signer none: the provenance will be UNSIGNED and no verifier will accept it",
            error=True,
        )
    run = AgentRun.from_environment(os.environ)
    images = bool(args.image or args.docker_output)
    staging = Path(run.folders.artifact_staging) if run.folders.artifact_staging else None
    drop = args.drop or (None if images else staging)
    if drop is None and not images:
        raise InputError("no drop folder given", "pass --drop with the build's output, or --image")
    started = time.monotonic()
    result = generate(
        GenerateOptions(
            agent=run,
            drop=drop,
            images=args.image,
            docker_outputs=args.docker_output,
            attach_format=args.attach_format if args.attach else "",
            signer_uri=args.signer,
            patterns=args.subject,
            output_dir=args.output_dir,
            builder_id=args.builder_id,
            pipeline_file=args.pipeline_file,
            confirm_with_server=not args.no_server_confirmation,
            sbom=args.sbom,
            sbom_check=args.sbom_check,
            sbom_packages=args.sbom_packages,
            sources=args.sources,
            allow_pull_request=args.allow_pull_request,
        ),
        on_progress=_TerminalProgress(started),
    )
    for warning in result.warnings:
        _say(f"WARNING: {warning}", error=True)
    size = sum(s.size for s in result.subjects)
    ctx = result.context
    confirmed = "confirmed by the server" if ctx.server_confirmed else "NOT confirmed by the server"
    files = len(result.subjects) - len(result.images)
    if drop:
        _say(f"subjects:  {files} files, {_bytes(size)} hashed in {time.monotonic() - started:.1f} s")
    for image in result.images:
        _say(f"image:     {image.reference.name}@{image.manifest.digest}")
    _say(f"source:    {ctx.repository_uri}@{ctx.source_branch} {ctx.source_version} ({confirmed})")
    for sbom in result.sboms:
        _say(f"sbom:      {sbom.name} sha256:{sbom.sha256}")
    _say(f"signed by: {result.keyid or 'nobody (UNSIGNED)'}")
    _say(f"statement: sha256:{result.statement_sha256}")
    _say(f"wrote:     {result.envelope_path}")
    if result.bundle_path:
        _say(f"           {result.bundle_path} (Sigstore bundle v0.3)")
    for attached in result.attached:
        _say(f"attached:  {attached.line()}")
    if result.images:
        resolving, attaching = result.registry_requests
        _say(f"registry:  {resolving} HTTP requests to resolve, {attaching} to attach")
    return 0


class _TerminalProgress:
    def __init__(self, started: float) -> None:
        self.started = started

    def __call__(self, progress: Progress) -> None:
        if time.monotonic() - self.started >= 2 and progress.files_done < progress.files_total:
            _say(
                f"hashing: {progress.files_done}/{progress.files_total} files, "
                f"{_bytes(progress.bytes_done)} of {_bytes(progress.bytes_total)}",
                error=True,
            )


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _verify(args: argparse.Namespace) -> int:
    from slsa_provenance.gate.flow import GateOptions, verify_gate
    from slsa_provenance.gate.vsa import VERIFIER_ID

    result = verify_gate(
        GateOptions(
            agent=AgentRun.from_environment(os.environ),
            provenance=args.provenance,
            images=args.image,
            keys=args.key,
            artifacts=args.artifact,
            digests=args.digest,
            builder_id=args.builder_id,
            source_uri=args.source_uri,
            source_ref=args.source_ref,
            commit=args.commit,
            build_type=args.build_type,
            sbom=args.sbom,
            allow_unconfirmed=args.allow_unconfirmed,
            policy=args.policy,
            vsa=args.vsa,
            vsa_signer=args.vsa_signer,
            resource_uri=args.resource_uri or "",
            verifier_id=args.verifier_id or VERIFIER_ID,
        )
    )
    for line in result.lines():
        _say(line)
    for image in result.verified_images:
        _say(f"verified image: {image}", error=True)
    if result.vsa_path:
        _say(f"verification summary: {result.vsa_path}", error=True)
    return 0 if result.passed else 1


def _task(args: argparse.Namespace) -> int:
    from slsa_provenance.step import main as run_step

    return run_step()


def _keygen(args: argparse.Namespace) -> int:
    from slsa_provenance.signing.local import write_key_pair

    private_path, public_path = write_key_pair(args.out, args.type, force=args.force)
    _say(f"private key: {private_path} (mode 0600; keep it secret)")
    _say(f"public key:  {public_path} (give this to verifiers)")
    return 0
