"""The step's result as one JSON attachment, which the Provenance tab on the run page shows.

    >>> attach_generate(AgentRun.from_environment(os.environ), generate(options))   # doctest: +SKIP
    ##vso[task.addattachment type=slsa-provenance;name=generate-…]…/slsa-provenance-generate-….json

One attachment per run of the step, written atomically to Agent.TempDirectory and valid against
`schemas/run-summary.schema.json` (its `schemaVersion` says which). Generate records the subjects
(all, or the first MAX_LISTED with the total), source, builder, signer, SBOM and images; verify
records every numbered check with got and expected, the artifacts, the verdict and the VSA.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error
from slsa_provenance.files import write_files
from slsa_provenance.gate.checks import (
    BUILDER_PATH,
    COMMIT_PATH,
    REF_PATH,
    REPOSITORY_PATH,
    ArtifactResult,
    Expectations,
    Report,
)
from slsa_provenance.provenance.statement import PREDICATE_TYPE, STATEMENT_TYPE, canonical_json
from slsa_provenance.signing import dsse

if TYPE_CHECKING:
    from slsa_provenance.gate.flow import GateOptions, GateResult
    from slsa_provenance.gate.images import ImageReport
    from slsa_provenance.generate import GenerateResult

ATTACHMENT_TYPE = "slsa-provenance"
SCHEMA_VERSION = 1
MAX_LISTED = 10_000
"""Subjects (generate) or artifacts (verify) listed by name; beyond, only the total is recorded."""

# (number, name) in the order verify runs them: (9), the artifacts, comes last.
CHECKS = (
    (1, "envelope"),
    (2, "signature"),
    (3, "statement"),
    (4, "buildType"),
    (5, "builder.id"),
    (6, "source"),
    (7, "ref"),
    (8, "commit"),
    (10, "sbom"),
    (11, "confirmation"),
    (9, "artifacts"),
)
_NUMBERED = re.compile(r"\((\d+)\) [^:]*: (.*)", re.S)
_GOT_EXPECTED = re.compile(r"(?:.*?: )?(?:sha256 )?got (.*?), expected (.*)", re.S)


def attach_generate(run: AgentRun, result: GenerateResult) -> None:
    """Attach what generate attested; a summary that cannot be written is a warning, not a failure."""
    statement = _statement(result.envelope_path)
    subjects = statement.get("subject", [])
    summary = {
        **_header("generate", run),
        "statement": {"sha256": result.statement_sha256, "path": str(result.envelope_path)},
        "subjects": {
            "total": len(subjects),
            "listed": [{"name": s["name"], "sha256": s["digest"]["sha256"]} for s in subjects[:MAX_LISTED]],
        },
        **_described(statement),
        "signer": {"keyId": result.keyid, "kind": _signer_kind(result.keyid)},
        "images": [
            {
                "name": image.reference.name,
                "digest": image.manifest.digest,
                "referrers": [
                    {
                        "digest": a.referrer.digest if a.referrer else "",  # none: the cosign tag alone
                        "tagIndex": a.tag_index,
                        "cosignTag": a.cosign_tag,
                    }
                    for a in result.attached
                    if a.image == image
                ],
            }
            for image in result.images
        ],
        "level": 2 if result.keyid and result.context.server_confirmed else 1,
    }
    _attach(run, "generate", summary)


def attach_verify(run: AgentRun, options: GateOptions, result: GateResult) -> None:
    """Attach every numbered check, the artifacts or images and the verdict, passed or failed."""
    from slsa_provenance.gate.flow import expectations

    report = result.report if result.report is not None else _image_report(result.images)
    checks = _checks(report, expectations(options, result.policy), images=result.report is None)
    artifacts = result.report.results if result.report is not None else []
    vsa = result.vsa_path
    summary = {
        **_header("verify", run),
        "verdict": "PASSED" if result.passed else "FAILED",
        "keyId": ", ".join(result.keyids),
        "level": _level(result),
        "checks": checks,
        "artifacts": {
            "total": len(artifacts),
            "failed": sum(not r.passed for r in artifacts),
            "listed": [
                {"name": r.artifact.name, "sha256": r.artifact.sha256, "subject": r.subject, "error": r.error}
                for r in artifacts[:MAX_LISTED]
            ],
        },
        "images": [_image(r) for r in result.images],
        **(_described(report.statement) if report is not None and report.statement else {}),
        "policy": {"path": str(result.policy.path), "sha256": result.policy.sha256}
        if result.policy
        else None,
        "vsa": {"path": str(vsa), "sha256": hashlib.sha256(vsa.read_bytes()).hexdigest()} if vsa else None,
    }
    _attach(run, "verify", summary)


def _level(result: GateResult) -> int:
    """The level the gate verified, as its summary attestation says: for images, the lowest of the
    attestations that passed (the first image's alone would claim more); 0 unless it passed."""
    if not result.passed:
        return 0
    if result.report is not None:
        return result.report.level
    passing = [r.passing.report for r in result.images if r.passing is not None]
    return min((report.level for report in passing if report is not None), default=0)


def _header(command: str, run: AgentRun) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "command": command,
        "step": {
            "displayName": run.step.display_name,
            "jobName": run.step.job_name,
            "attempt": run.step.job_attempt,
        },
    }


def _statement(envelope_path: Path) -> dict[str, Any]:
    """The Statement this step just signed and wrote (its own output, so parsed plainly)."""
    return dict(json.loads(dsse.Envelope.from_json(envelope_path.read_bytes()).payload))


def _value(statement: dict[str, Any], path: str) -> Any:
    value: Any = statement
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _text(statement: dict[str, Any], path: str) -> str:
    value = _value(statement, path)
    return value if isinstance(value, str) else ""


def _described(statement: dict[str, Any]) -> dict[str, Any]:
    """The source and the builder, as the Statement records them."""
    pipelines = _value(statement, "predicate.buildDefinition.internalParameters.azurePipelines") or {}
    byproducts = _value(statement, "predicate.runDetails.byproducts") or []
    return {
        "source": {
            "repository": _text(statement, REPOSITORY_PATH),
            "ref": _text(statement, REF_PATH),
            "commit": _text(statement, COMMIT_PATH),
            "provider": str(pipelines.get("repositoryProvider", "")),
            "confirmedByServer": pipelines.get("serverConfirmed") is True,
        },
        "builder": {
            "id": _text(statement, BUILDER_PATH),
            "buildType": _text(statement, "predicate.buildDefinition.buildType"),
            "pipeline": _text(statement, "predicate.buildDefinition.externalParameters.workflow.name"),
            "buildUrl": _text(statement, "predicate.buildDefinition.externalParameters.build.buildUrl"),
            "invocationId": _text(statement, "predicate.runDetails.metadata.invocationId"),
        },
        "sboms": [
            {"name": str(b.get("name", "")), "sha256": str(b.get("digest", {}).get("sha256", ""))}
            for b in byproducts
            if isinstance(b, dict)
        ],
    }


def _signer_kind(keyid: str) -> str:
    if not keyid:
        return "unsigned"
    return "keyVault" if keyid.startswith("https://") else "localKey"


def _image_report(images: Sequence[ImageReport]) -> Report | None:
    """The checks shown for an image gate: the first image's passing attestation, else its first."""
    for image in images[:1]:
        for attestation in [image.passing] if image.passing else image.attestations:
            if attestation.report is not None:
                return attestation.report
    return None


def _image(report: ImageReport) -> dict[str, Any]:
    return {
        "name": report.image.reference.name,
        "digest": report.image.manifest.digest,
        "passed": report.passed,
        "attestations": [{"where": a.where, "keyId": a.keyid, "error": a.error} for a in report.attestations],
    }


def _checks(report: Report | None, expected: Expectations, *, images: bool) -> list[dict[str, Any]]:
    """Every numbered check: passed, failed (with got and expected), not checked, or not reached."""
    failure = _first_failure(report)
    statement = report.statement if report is not None else {}
    rows, reached = [], True
    for number, name in CHECKS:
        row: dict[str, Any] = {"number": number, "name": name, "got": None, "expected": None, "detail": ""}
        if failure is not None and number == failure[0]:
            row |= {"status": "failed", "detail": failure[1], **_got_expected(failure[1])}
            reached = False
        elif not reached or report is None:
            row["status"] = "not reached"
        elif number == 9:
            row |= _artifacts_row(report, images)
        elif number == 10 and (refused := [r for r in report.results if _refused_by(r) == 10]):
            detail = _numbered(refused[0].error, 10)[1]
            row |= {"status": "failed", "detail": detail, **_got_expected(detail)}
        else:
            row |= _verified_row(number, statement, expected, report.keyid)
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["number"]))


def _first_failure(report: Report | None) -> tuple[int, str] | None:
    """The check that stopped verification, from the report's own failure (not an artifact's error:
    one refused by name, a sidecar by check (10), says nothing of the signature)."""
    if report is None or report.keyid:
        return None
    # not verified for a reason no check names: nothing after (1) was reached
    return _numbered(report.failure or "the provenance did not verify", 1)


def _numbered(message: str, unnumbered: int) -> tuple[int, str]:
    """(check, the rest) of `(N) field: rest`; a message without a number is check `unnumbered`'s."""
    numbered = _NUMBERED.match(message)
    return (int(numbered.group(1)), numbered.group(2)) if numbered else (unnumbered, message)


def _got_expected(detail: str) -> dict[str, Any]:
    """got and expected from a check's standard message, `field: got X, expected Y`."""
    found = _GOT_EXPECTED.match(detail)
    return {"got": _unquoted(found.group(1)), "expected": _unquoted(found.group(2))} if found else {}


def _unquoted(text: str) -> str:
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def _refused_by(result: ArtifactResult) -> int | None:
    """The check that refused an artifact (its error names it; an unnumbered one is (9)'s), or None."""
    return None if result.passed else _numbered(result.error, 9)[0]


def _artifacts_row(report: Report, images: bool) -> dict[str, Any]:
    """Check (9): every artifact a subject; those refused by another check (a sidecar by (10)) count
    under theirs."""
    what = "image digests" if images else "artifacts"
    results = [r for r in report.results if _refused_by(r) in (None, 9)]
    failed = [r for r in results if not r.passed]
    total = len(results)
    got = f"{total - len(failed)} of {total} {what} are subjects"
    if not failed:
        return {"status": "passed", "got": got, "expected": f"every one of the {total}"}
    return {
        "status": "failed",
        "got": got,
        "expected": f"every one of the {total}",
        "detail": failed[0].error,
    }


def _verified_row(
    number: int, statement: dict[str, Any], expected: Expectations, keyid: str
) -> dict[str, Any]:
    """A check that passed: what the verified Statement holds, what was expected (None: not checked)."""
    wanted: dict[int, object] = {
        1: dsse.PAYLOAD_TYPE,
        2: "a signature by a trusted key",
        3: f"{STATEMENT_TYPE}, {PREDICATE_TYPE}",
        4: expected.build_type,
        5: expected.builder_id or _listed([b.id for b in expected.builders or ()]),
        6: expected.source_uri or _listed(expected.repositories),
        7: expected.source_ref or _listed(expected.refs) or "any ref but a pull request's",
        8: expected.commit,
        10: expected.sbom_sha256 or ("a recorded SBOM" if expected.require_sbom else None),
        11: "serverConfirmed true" + (" (or unconfirmed, allowed)" if expected.allow_unconfirmed else ""),
    }
    got: dict[int, object] = {
        1: dsse.PAYLOAD_TYPE,
        2: keyid,
        3: f"{_value(statement, '_type')}, {_value(statement, 'predicateType')}",
        4: _value(statement, "predicate.buildDefinition.buildType"),
        5: _value(statement, BUILDER_PATH),
        6: _value(statement, REPOSITORY_PATH),
        7: _value(statement, REF_PATH),
        8: _value(statement, COMMIT_PATH),
        10: ", ".join(b["sha256"] for b in _described(statement)["sboms"]) or "no SBOM recorded",
        11: "serverConfirmed "
        + str(
            _value(statement, "predicate.buildDefinition.internalParameters.azurePipelines.serverConfirmed")
        ),
    }
    status = "passed" if wanted[number] is not None else "not checked"
    # Before a failed check the Statement is not kept (it did not verify): nothing to show as got.
    shown = _str_or_none(got[number]) if statement or number == 1 else None
    return {"status": status, "got": shown, "expected": _str_or_none(wanted[number])}


def _listed(values: Sequence[str] | None) -> str | None:
    return "one of " + ", ".join(values) if values else None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _attach(run: AgentRun, command: str, summary: dict[str, Any]) -> None:
    step = re.sub(r"[^A-Za-z0-9-]", "", run.step.instance_id) or uuid.uuid4().hex
    name = f"{command}-{step}-{re.sub(r'[^0-9]', '', run.step.job_attempt) or '1'}"
    path = Path(run.folders.temp or tempfile.gettempdir()) / f"slsa-provenance-{name}.json"
    try:
        write_files({path: canonical_json(summary) + b"\n"})
    except Error as exc:
        vso.emit("task.logissue", f"cannot write the Provenance tab's summary: {exc.message}", type="warning")
        return
    vso.emit("task.addattachment", str(path), type=ATTACHMENT_TYPE, name=f"{name}.json")
