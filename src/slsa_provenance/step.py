"""The pipeline step: read the task's inputs, generate or verify, report with `##vso` commands.

    $ python -I task/launch.py task      # what index.js runs, with the agent's environment

Inputs arrive as `INPUT_<NAME>`; the result is reported with `task.complete` (the Node entry
always exits 0). Untrusted text is neutralised before it is printed; every token is masked.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance.hashing import Progress

if TYPE_CHECKING:
    from slsa_provenance.gate.flow import GateResult


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the step; always 0, the result goes to the agent as `task.complete`."""
    print(vso.neutralize(f"Python {sys.version.split()[0]} at {sys.executable}"))  # a tools path of any name
    try:
        run = AgentRun.from_environment(os.environ if env is None else env)
        command = run.inputs.text("command", "generate")
        if command == "generate":
            message = _generate(run)
        elif command == "verify":
            message = _verify(run)
        else:
            raise InputError(f"the task input 'command' is {command!r}", "use generate or verify")
    except Error as exc:
        _fail(exc.diagnostics())
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {exc}; please report this with the step's log")
    else:
        vso.emit("task.complete", message, result="Succeeded")
    return 0


def _fail(message: str) -> None:
    vso.emit("task.logissue", message, type="error")
    vso.emit("task.complete", message, result="Failed")


def _generate(run: AgentRun) -> str:
    from slsa_provenance.generate import OUTPUT_FOLDER, GenerateOptions, generate

    inputs = run.inputs
    drop = Path(inputs.text("dropFolder") or run.folders.artifact_staging)
    method = inputs.text("signingMethod", "keyVault")
    if method == "keyVault":
        signer = inputs.required("keyVaultKey", "Key Vault key")
    elif method == "localKey":
        signer = "file:" + inputs.required("localKeyFile", "Local key file")
    elif method == "unsigned":
        signer = "none"
        vso.emit(
            "task.logissue",
            "signingMethod is unsigned: verifiers will refuse this provenance",
            type="warning",
        )
    else:
        raise InputError(f"signingMethod is {method!r}", "use keyVault, localKey or unsigned")
    output = inputs.text("outputFolder")
    images, docker_outputs = inputs.lines("images"), [Path(p) for p in inputs.lines("dockerOutput")]
    attested: Path | None = drop
    if (images or docker_outputs) and not _has_files(drop):  # a container build leaves its drop empty
        print(vso.neutralize(f"The drop folder {drop} holds no files: attesting the images alone"))
        output, attested = output or str(drop / OUTPUT_FOLDER), None
    print("##[group]Hashing the drop and writing provenance")
    started = time.monotonic()
    try:
        result = generate(
            GenerateOptions(
                drop=attested,
                signer_uri=signer,
                patterns=inputs.lines("subjects"),
                output_dir=Path(output) if output else None,
                builder_id=inputs.text("builderId"),
                pipeline_file=inputs.text("pipelineFile"),
                confirm_with_server=inputs.flag("confirmWithServer", True),
                confirmation_required=True,
                sbom=inputs.path("sbomFile"),
                sbom_check=inputs.text("sbomCheck", "strict"),
                sbom_packages=inputs.flag("sbomPackages", False),
                allow_pull_request=inputs.flag("allowPullRequest", False),
                agent=run,
                images=images,
                docker_outputs=docker_outputs,
                attach_format=inputs.text("attachFormat", "referrers")
                if inputs.flag("attachToImages", False)
                else "",
            ),
            on_progress=_report_progress,
        )
    finally:
        print("##[endgroup]")
    ctx = result.context
    for warning in result.warnings:
        vso.emit("task.logissue", warning, type="warning")
    for subject in result.subjects:
        print(vso.neutralize(f"  {subject.sha256}  {subject.name}"))
    if not ctx.server_confirmed:
        vso.emit(
            "task.logissue",
            "the run context was NOT confirmed with the Azure DevOps REST API",
            type="warning",
        )
    outputs = {
        "provenancePath": str(result.envelope_path),
        "bundlePath": str(result.bundle_path or ""),
        "statementSha256": result.statement_sha256,
        "subjectCount": str(len(result.subjects)),
        "keyId": result.keyid,
        "attachedReferrers": ",".join(a.line() for a in result.attached),
    }
    for name, value in outputs.items():
        vso.emit("task.setvariable", value, variable=name)
    # Not before generate(): run_summary imports signing, which the hashing need not wait for.
    from slsa_provenance import run_summary

    run_summary.attach_generate(run, result)
    _summary(
        run.folders.temp,
        [
            "### SLSA provenance",
            f"- **Subjects:** {len(result.subjects)} files, {sum(s.size for s in result.subjects)} bytes "
            f"hashed in {time.monotonic() - started:.1f} s",
            f"- **Source:** `{ctx.repository_uri}` @ `{ctx.source_branch}` `{ctx.source_version}`",
            f"- **Run context:** {'confirmed by the server' if ctx.server_confirmed else 'NOT confirmed'}",
            f"- **Signed by:** `{result.keyid or 'nobody (unsigned)'}`",
            f"- **Statement:** `sha256:{result.statement_sha256}`",
            *[f"- **SBOM:** `{s.name}` `sha256:{s.sha256}`" for s in result.sboms],
            *[f"- **Image:** `{i.reference.name}@{i.manifest.digest}`" for i in result.images],
            f"- **Written:** `{result.envelope_path}`",
            *[f"- **Attached:** `{a.line()}`" for a in result.attached],
            f"- **SLSA level claimed:** {_level(bool(result.keyid), ctx.server_confirmed)}",
        ],
    )
    return f"provenance for {len(result.subjects)} subjects written to {result.envelope_path}"


def _has_files(folder: Path) -> bool:
    """Whether anything but `_manifest/` is below `folder`."""
    if not folder.is_dir():
        return False
    return any(entry.name != "_manifest" for entry in folder.iterdir())


def _level(signed: bool, confirmed: bool) -> str:
    if signed and confirmed:
        return "Build L2 (hosted platform, signed provenance); L3 needs the isolated signing stage"
    return "Build L1 (the provenance is unsigned or its run context was not confirmed)"


def _report_progress(progress: Progress) -> None:
    if progress.bytes_total:
        percent = 100 * progress.bytes_done // progress.bytes_total
    else:  # the sizes are not known yet, or every file is empty
        percent = 100 * progress.files_done // max(progress.files_total, 1)
    vso.emit("task.setprogress", "hashing the drop", value=str(percent))


def _verify(run: AgentRun) -> str:
    from slsa_provenance import run_summary
    from slsa_provenance.gate.flow import GateOptions, verify_gate
    from slsa_provenance.gate.vsa import VERIFIER_ID

    inputs = run.inputs
    keys = inputs.lines("trustedKeys")
    policy = inputs.text("policyFile")
    if not keys and not policy:
        raise InputError(
            "the task inputs 'trustedKeys' and 'policyFile' are empty",
            "list the trusted public key files, or give a policy that lists them",
        )
    images = inputs.lines("verifyImages")
    result = verify_gate(
        options := GateOptions(
            provenance=None if images else Path(inputs.required("provenanceFile", "Provenance file")),
            images=images,
            keys=keys,
            artifacts=[Path(p) for p in inputs.lines("artifacts")],
            builder_id=inputs.text("expectedBuilderId") or None,
            source_uri=inputs.text("expectedRepository") or None,
            source_ref=inputs.text("expectedRef") or None,
            build_type=inputs.text("expectedBuildType") or None,
            allow_unconfirmed=inputs.flag("allowUnconfirmed", False),
            policy=Path(policy) if policy else None,
            vsa=inputs.path("vsaFile"),
            vsa_signer=inputs.text("vsaSigner"),
            resource_uri=inputs.text("resourceUri"),
            verifier_id=inputs.text("verifierId", VERIFIER_ID),
            agent=run,
        )
    )
    run_summary.attach_verify(run, options, result)
    for line in result.lines():
        print(vso.neutralize(line))
    vso.emit("task.setvariable", str(result.vsa_path or ""), variable="vsaPath")
    if result.report is None:
        vso.emit("task.setvariable", "\n".join(result.verified_images), variable="verifiedImages")
        return _images_verified(result)
    report = result.report
    passed = [r for r in report.results if r.passed]
    vso.emit("task.setvariable", str(len(passed)), variable="subjectCount")
    vso.emit("task.setvariable", report.keyid, variable="keyId")
    if not report.passed:
        failed = next(r for r in report.results if not r.passed)
        raise Error(
            f"{len(report.results) - len(passed)} of {len(report.results)} artifacts failed verification; "
            f"first: {failed.line().removeprefix('FAILED: ')}",
            "do not deploy these artifacts",
        )
    return f"all {len(passed)} artifacts verified (signed by {report.keyid})"


def _images_verified(result: GateResult) -> str:
    reports = result.images
    failed = [r for r in reports if not r.passed]
    vso.emit("task.setvariable", str(len(reports) - len(failed)), variable="subjectCount")
    vso.emit("task.setvariable", "\n".join(result.keyids), variable="keyId")
    if failed:
        raise Error(
            f"{len(failed)} of {len(reports)} images failed verification; first: "
            f"{failed[0].lines()[-1].removeprefix('FAILED: ')}",
            "do not deploy these images",
        )
    return f"all {len(reports)} images verified"


def _summary(temp_folder: str, lines: list[str]) -> None:
    import tempfile  # here: only a run outside the agent, which always sets Agent.TempDirectory, needs it

    folder = temp_folder or tempfile.gettempdir()
    path = Path(folder) / "slsa-provenance-summary.md"
    try:
        path.write_text("\n".join(vso.neutralize(line) for line in lines) + "\n", encoding="utf-8")
    except OSError as exc:
        vso.emit("task.logissue", f"cannot write the build summary: {exc.strerror}", type="warning")
        return
    vso.emit("task.uploadsummary", str(path))


if __name__ == "__main__":
    sys.exit(main())
