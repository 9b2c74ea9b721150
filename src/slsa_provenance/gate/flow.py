"""A deployment gate: the flow shared by `slsa-provenance verify` and the pipeline step.

    >>> result = verify_gate(GateOptions(provenance=Path("p.intoto.jsonl"), keys=["slsa.pub"],
    ...                                  artifacts=[Path("drop")]))   # doctest: +SKIP
    >>> [r.line() for r in result.report.results][:1]
    ['PASSED: bin/app.exe']

Reads the trusted keys and the provenance, hashes the artifacts (hashlib only), and runs the
numbered checks of `verify`. Raises InputError for unusable input; a failed check is a result,
not an exception.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slsa_provenance import __version__
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited
from slsa_provenance.gate.artifacts import artifact_digests, shipped_provenance
from slsa_provenance.gate.checks import MAX_ENVELOPE, PULL_REFS, Builder, Expectations, Report, run_checks
from slsa_provenance.gate.policy import Policy, load_policy
from slsa_provenance.gate.summary_path import clear_summary_path
from slsa_provenance.gate.vsa import VERIFIER_ID, Summary, build_summary, write_summary
from slsa_provenance.provenance.hashing import sha256_file
from slsa_provenance.provenance.sbom import sbom_file
from slsa_provenance.provenance.statement import BUILD_TYPE, canonical_json
from slsa_provenance.signing.keys import PublicKey, fingerprint
from slsa_provenance.signing.signers import UNSIGNED, Signer, from_uri, trusted_key

if TYPE_CHECKING:
    from slsa_provenance.gate.images import ImageReport

OPTIONS_POLICY = "urn:slsa-provenance:verify-options"
"""The VSA's policy.uri when no policy file was given: the options (digested) are the policy."""


@dataclass(frozen=True)
class GateOptions:
    provenance: Path | None = None
    images: Sequence[str] = ()
    """Images verified by the attestations attached to them in their registries, instead of a file."""
    keys: Sequence[str] = ()
    """PEM public key files or Key Vault key URIs; any one may verify."""
    artifacts: Sequence[Path] = ()
    digests: Sequence[str] = ()
    builder_id: str | None = None
    source_uri: str | None = None
    source_ref: str | None = None
    commit: str | None = None
    build_type: str | None = None
    sbom: Path | None = None
    allow_unconfirmed: bool = False
    policy: Path | None = None
    """A policy file (YAML or JSON); the other options narrow it."""
    vsa: Path | None = None
    """Where to write a signed Verification Summary Attestation when every check passes."""
    vsa_signer: str = ""
    verifier_id: str = VERIFIER_ID
    resource_uri: str = ""
    """The VSA's resourceUri; empty: the provenance's build URL."""
    agent: AgentRun = field(default_factory=AgentRun)
    """What the agent handed over (Key Vault keys' credentials, registries); default: no pipeline."""


@dataclass(frozen=True)
class GateResult:
    report: Report | None
    """The provenance file's checks; None when images were verified."""
    images: Sequence[ImageReport] = ()
    policy: Policy | None = None
    vsa_path: Path | None = None
    """The VSA written; None when none was asked for or a check failed."""

    @property
    def passed(self) -> bool:
        return self.report.passed if self.report is not None else all(r.passed for r in self.images)

    @property
    def keyids(self) -> list[str]:
        """The trusted keys that verified: the provenance's, or every one that verified an image."""
        if self.report is not None:
            return [self.report.keyid] if self.report.keyid else []
        return sorted({a.keyid for r in self.images for a in r.attestations if not a.error})

    @property
    def verified_images(self) -> list[str]:
        """`REPO@sha256:HEX` of every image verified (a tag resolved once, to what was verified);
        none unless every image passed, so that a deployment pulls only what passed."""
        if not self.passed:
            return []
        return [f"{r.image.reference.name}@{r.image.manifest.digest}" for r in self.images]

    def lines(self) -> list[str]:
        """One PASSED or FAILED line per artifact (images: per attestation tried, then the verdict)."""
        if self.report is not None:
            return [result.line() for result in self.report.results]
        return [line for report in self.images for line in report.lines()]


def verify_gate(options: GateOptions) -> GateResult:
    """Raises InputError for an unusable policy, keys, provenance, artifacts or images, or a flag
    that would widen the policy; Error when Key Vault or a registry fails."""
    if options.vsa is not None:
        clear_summary_path(options.vsa, _inputs(options))
    provenance = options.provenance
    if provenance is not None and options.images:
        raise InputError(
            "--provenance and --image cannot be used together (--image reads each image's provenance "
            "from its registry)",
            "verify the images with --image alone, and a provenance file in a run of its own",
        )
    if provenance is None and not options.images:
        raise InputError("nothing to verify", "pass --provenance FILE, or --image REF for an image")
    if options.images and (options.artifacts or options.digests):  # they would go unchecked
        raise InputError(
            "--artifact and --digest are checked against --provenance, never with --image",
            "verify the images alone, and the files in a step of their own with their provenance file",
        )
    policy = load_policy(options.policy) if options.policy else None
    expected = expectations(options, policy)
    signer = _vsa_signer(options)
    if provenance is None:
        from slsa_provenance.gate.images import verify_images

        keys = trusted_keys(options, policy)
        reports = verify_images(options.images, keys, expected, options.agent)
        if signer is None or options.vsa is None or not all(r.passed for r in reports):
            return GateResult(None, reports, policy)
        decided = _policy_descriptor(policy, expected, keys)
        summary = build_summary(_images_summary(options, decided, reports), datetime.now(UTC))
        write_summary(summary, signer, options.vsa)
        return GateResult(None, reports, policy, options.vsa)
    keys = trusted_keys(options, policy)
    artifacts = artifact_digests(options.artifacts, options.digests)
    envelope = read_limited(provenance, "provenance", MAX_ENVELOPE)
    artifacts += shipped_provenance(options.artifacts, envelope)
    report = run_checks(envelope, keys, expected, artifacts)
    if signer is None or options.vsa is None or not report.passed:
        return GateResult(report, policy=policy)
    decided = _policy_descriptor(policy, expected, keys)
    summary = build_summary(_summary(provenance, options, decided, report, envelope), datetime.now(UTC))
    write_summary(summary, signer, options.vsa)
    return GateResult(report, policy=policy, vsa_path=options.vsa)


def _vsa_signer(options: GateOptions) -> Signer | None:
    """The VSA's signer, loaded before anything is verified (a bad key fails at once)."""
    if options.vsa is None:
        return None
    if not options.vsa_signer.strip() or options.vsa_signer.strip() == UNSIGNED:
        raise InputError(
            "a verification summary needs a signer", "pass --vsa-signer file:KEY.pem or a Key Vault key"
        )
    return from_uri(options.vsa_signer, options.agent)


def _inputs(options: GateOptions) -> dict[str, list[Path]]:
    """Every file or folder the gate reads, by what it is: none may be where the summary goes."""
    signer = options.vsa_signer.strip()
    return {
        "provenance": [options.provenance] if options.provenance else [],
        "key": [
            Path(k.strip()) for k in options.keys if not k.strip().startswith(("azurekms://", "https://"))
        ],
        "summary signer's key": [Path(signer.removeprefix("file:"))] if signer.startswith("file:") else [],
        "policy": [options.policy] if options.policy else [],
        "SBOM": [options.sbom] if options.sbom else [],
        "artifact": list(options.artifacts),
    }


def _summary(
    provenance: Path, options: GateOptions, policy: dict[str, Any], report: Report, envelope: bytes
) -> Summary:
    return Summary(
        subjects=[(r.subject, r.artifact.sha256) for r in report.results],
        verifier_id=options.verifier_id,
        verifier_version={"slsa-provenance": __version__},
        resource_uri=options.resource_uri or _build_url(report.statement),
        policy=policy,
        input_attestations=[
            {
                "uri": provenance.resolve().as_uri(),
                "digest": {"sha256": hashlib.sha256(envelope).hexdigest()},
            }
        ],
        level=report.level,
    )


_NARROW_ONLY = "a flag can only narrow the policy: change the policy, reviewed, or leave the flag out"


def _images_summary(options: GateOptions, policy: dict[str, Any], reports: Sequence[ImageReport]) -> Summary:
    """Every image a subject; the attestation that passed for each an input; the lowest level."""
    passing = [(r, r.passing) for r in reports]
    checked = [(r, a, a.report) for r, a in passing if a is not None and a.report is not None]
    return Summary(
        subjects=[
            (r.image.reference.name, r.image.manifest.digest.removeprefix("sha256:")) for r, _, _ in checked
        ],
        verifier_id=options.verifier_id,
        verifier_version={"slsa-provenance": __version__},
        resource_uri=options.resource_uri or _build_url(checked[0][2].statement),
        policy=policy,
        input_attestations=[
            {"name": f"{r.image.reference.name} {a.where}", "digest": {"sha256": a.sha256}}
            for r, a, _ in checked
        ],
        level=min(report.level for _, _, report in checked),
    )


def _policy_descriptor(
    policy: Policy | None, expected: Expectations, keys: Sequence[PublicKey]
) -> dict[str, Any]:
    """The policy file's URI, or OPTIONS_POLICY without one; the digest covers everything that
    decided the verdict: the sha256 of canonical JSON of {"expectations": every check's expectation
    (builders with their keys' fingerprints), "trustedKeys": the trusted keys' fingerprints, sorted,
    and, with a policy file, "policy": {"sha256": of its bytes}} (docs/policy.md)."""
    decided: dict[str, Any] = {
        "expectations": asdict(expected),
        "trustedKeys": sorted({fingerprint(key) for key in keys}),
    }
    if policy is not None:
        decided["policy"] = {"sha256": policy.sha256}
    digest = {"sha256": hashlib.sha256(canonical_json(decided)).hexdigest()}
    return {"uri": policy.path.resolve().as_uri() if policy is not None else OPTIONS_POLICY, "digest": digest}


def _build_url(statement: dict[str, Any]) -> str:
    build = statement["predicate"]["buildDefinition"]["externalParameters"].get("build", {})
    return str(build.get("buildUrl", ""))


def trusted_keys(options: GateOptions, policy: Policy | None) -> list[PublicKey]:
    """The keys given, or the policy's; with both, each key given must be one of the policy's."""
    given = [trusted_key(k, options.agent) for k in options.keys]
    if policy is None:
        if not given:
            raise InputError("no trusted key given", "pass --key with the signer's public key, or --policy")
        return given
    trusted = [trusted_key(k, options.agent) for k in policy.trusted_keys]
    allowed = {fingerprint(k) for k in trusted}
    for spec, key in zip(options.keys, given, strict=True):
        if fingerprint(key) not in allowed:
            raise InputError(
                f"key {spec} is not among the trusted keys of policy {policy.path}", _NARROW_ONLY
            )
    return given or trusted


def expectations(options: GateOptions, policy: Policy | None = None) -> Expectations:
    """What the checks expect: the policy's rules and every flag, all checked (so flags narrow).
    Raises InputError for a flag the policy forbids: --allow-unconfirmed, another --build-type, a
    --source-ref under refs/pull/ when the policy's refs name none there."""
    build_type = options.build_type
    if policy is not None:
        expected_type = policy.build_type or BUILD_TYPE  # a policy without buildType expects the default
        if build_type is not None and build_type != expected_type:
            raise InputError(
                f"build type {build_type!r} contradicts the buildType {expected_type!r} of policy "
                f"{policy.path}",
                _NARROW_ONLY,
            )
        build_type = expected_type
    pull = options.source_ref is not None and options.source_ref.startswith(PULL_REFS)
    if policy is not None and pull and not any(r.startswith(PULL_REFS) for r in policy.refs or ()):
        raise InputError(
            f"accepting pull-request builds with ref {options.source_ref!r} would widen policy "
            f"{policy.path} (its refs name none under {PULL_REFS})",
            _NARROW_ONLY,
        )
    if policy is not None and options.allow_unconfirmed and not policy.allow_unconfirmed:
        raise InputError(
            f"allowing unconfirmed provenance would widen policy {policy.path} (allowUnconfirmed is false)",
            _NARROW_ONLY,
        )
    return Expectations(
        builder_id=options.builder_id,
        source_uri=options.source_uri,
        source_ref=options.source_ref,
        commit=options.commit,
        sbom_sha256=sha256_file(sbom_file(options.sbom))[0] if options.sbom else None,
        allow_unconfirmed=policy.allow_unconfirmed if policy is not None else options.allow_unconfirmed,
        builders=_builders(policy, options.agent) if policy is not None else None,
        repositories=policy.repositories if policy is not None else None,
        refs=policy.refs if policy is not None else None,
        require_sbom=policy.require_sbom if policy is not None else False,
        **({"build_type": build_type} if build_type else {}),
    )


def _builders(policy: Policy, agent: AgentRun) -> tuple[Builder, ...] | None:
    """The policy's builders, each bound to the fingerprints of its keys."""
    if policy.builders is None:
        return None
    return tuple(
        Builder(
            b.id,
            b.level,
            tuple(sorted({fingerprint(trusted_key(k, agent)) for k in b.keys})) if b.keys else None,
        )
        for b in policy.builders
    )
