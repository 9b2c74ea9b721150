"""A signed SLSA Verification Summary Attestation v1: what a gate verified, for whoever comes after.

    >>> statement = build_summary(Summary(subjects=[("bin/app", "9f86...")], ...), now)  # doctest: +SKIP
    >>> write_summary(statement, signer, Path("vsa.intoto.jsonl"))                       # doctest: +SKIP

`build_summary` is pure (the time is passed in); the Statement is validated against
`schemas/vsa.schema.json` (written from https://slsa.dev/spec/v1.0/verification_summary), then
signed as a DSSE envelope, the signature checked with the signer's public key, and written
atomically, on one line. A gate writes it only when every check passed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from slsa_provenance.errors import Error
from slsa_provenance.files import write_files
from slsa_provenance.provenance.statement import STATEMENT_TYPE, canonical_json
from slsa_provenance.signing import dsse
from slsa_provenance.signing.signers import Signer

PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://marketplace.visualstudio.com/items?itemName=slsa-provenance.slsa-provenance"


@dataclass(frozen=True)
class Summary:
    subjects: Sequence[tuple[str, str]]
    """(name, sha256) of every artifact verified."""
    verifier_id: str
    verifier_version: dict[str, str]
    resource_uri: str
    policy: dict[str, Any]
    """A ResourceDescriptor: uri and digest."""
    input_attestations: Sequence[dict[str, Any]]
    level: int
    """The SLSA Build level verified."""


def build_summary(summary: Summary, now: datetime) -> dict[str, Any]:
    """PURE: the VSA Statement (verificationResult PASSED) for `summary`, verified at `now`."""
    subjects = sorted(set(summary.subjects))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256}} for name, sha256 in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "verifier": {"id": summary.verifier_id, "version": summary.verifier_version},
            "timeVerified": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resourceUri": summary.resource_uri,
            "policy": summary.policy,
            "inputAttestations": list(summary.input_attestations),
            "verificationResult": "PASSED",
            "verifiedLevels": [f"SLSA_BUILD_LEVEL_{summary.level}"],
            "slsaVersion": "1.0",
        },
    }


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    text = resources.files("slsa_provenance").joinpath("schemas/vsa.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def validate_summary(statement: dict[str, Any]) -> None:
    """Raises Error naming the first invalid field by JSON path."""
    errors = sorted(_validator().iter_errors(statement), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "(statement)"
        raise Error(
            f"verification summary invalid at {where}: {errors[0].message}",
            "check --verifier-id and --resource-uri are URIs; nothing was written",
        )


def write_summary(statement: dict[str, Any], signer: Signer, path: Path) -> None:
    """Validate, sign, check the signature, and write atomically. Raises Error (nothing written)."""
    validate_summary(statement)
    envelope = dsse.sign_checked(canonical_json(statement), dsse.PAYLOAD_TYPE, signer)
    write_files({path: (envelope.to_json(), b"\n")})
