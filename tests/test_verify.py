from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import COMMIT, PIPELINE_ENV
from slsa_provenance.errors import VerificationError
from slsa_provenance.gate.checks import Artifact, Expectations, check_artifacts, verify_provenance
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.statement import Subject, build_statement, canonical_json
from slsa_provenance.signing import dsse
from slsa_provenance.signing.local import LocalSigner

APP = hashlib.sha256(b"app").hexdigest()
LIB = hashlib.sha256(b"lib").hexdigest()
BUILDER = "https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/main"
REPOSITORY = "https://dev.azure.com/contoso/web/_git/web"


@pytest.fixture(scope="module")
def signer(key_files: dict[str, tuple[Path, Path]]) -> LocalSigner:
    return LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))


def statement() -> dict[str, Any]:
    ctx = replace(
        RunContext.from_variables(PIPELINE_ENV), pipeline_file="azure-pipelines.yml", server_confirmed=True
    )
    return build_statement(ctx, [Subject("bin/app", APP), Subject("lib/lib.so", LIB)])


def envelope(
    signer: LocalSigner, value: dict[str, Any] | bytes, payload_type: str = dsse.PAYLOAD_TYPE
) -> bytes:
    payload = value if isinstance(value, bytes) else canonical_json(value)
    return dsse.sign(payload, payload_type, signer).to_json()


ALL = Expectations(
    builder_id=BUILDER, source_uri=REPOSITORY, source_ref="refs/heads/*", commit=COMMIT.upper()
)


def test_everything_expected_passes(signer: LocalSigner) -> None:
    verified = verify_provenance(envelope(signer, statement()), [signer.public_key()], ALL)
    assert verified.keyid == signer.keyid
    results = check_artifacts(verified.statement, [Artifact("app", APP), Artifact("lib/lib.so", LIB)])
    assert [r.line() for r in results] == ["PASSED: app (subject bin/app)", "PASSED: lib/lib.so"]


def test_source_uri_may_carry_the_git_prefix(signer: LocalSigner) -> None:
    verify_provenance(
        envelope(signer, statement()), [signer.public_key()], Expectations(source_uri=f"git+{REPOSITORY}")
    )


def edit(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def apply(statement: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = statement
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value

    return apply


def both(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(statement: dict[str, Any]) -> None:
        for one in edits:
            one(statement)

    return apply


@pytest.mark.parametrize(
    ("mutate", "expectations", "message"),
    [
        (
            edit("predicateType", "https://slsa.dev/provenance/v0.2"),
            Expectations(),
            "(3) statement: predicateType: got 'https://slsa.dev/provenance/v0.2', expected 'https://slsa.dev/provenance/v1'",
        ),
        (edit("_type", "https://in-toto.io/Statement/v0.1"), Expectations(), "(3) statement: _type: got"),
        (
            edit("predicate.buildDefinition.buildType", "https://example.com/other"),
            Expectations(),
            "(4) buildType: buildType: got 'https://example.com/other', expected 'https://docs.cimon.build/provenance/buildtypes/azure/v1'",
        ),
        (
            edit("predicate.runDetails.builder.id", "https://evil.example/builder"),
            ALL,
            f"(5) builder.id: got 'https://evil.example/builder', expected '{BUILDER}'",
        ),
        (
            edit(
                "predicate.buildDefinition.externalParameters.workflow.repository",
                "https://dev.azure.com/evil/x/_git/x",
            ),
            ALL,
            f"(6) source: workflow.repository: got 'https://dev.azure.com/evil/x/_git/x', expected '{REPOSITORY}'",
        ),
        (
            edit(
                "predicate.buildDefinition.resolvedDependencies.0.uri", "git+https://evil/x@refs/heads/main"
            ),
            ALL,
            "(6) source: resolvedDependencies[0].uri: got 'git+https://evil/x@refs/heads/main'",
        ),
        (
            both(
                edit("predicate.buildDefinition.externalParameters.workflow.ref", "refs/pull/7/merge"),
                edit(
                    "predicate.buildDefinition.resolvedDependencies.0.uri",
                    f"git+{REPOSITORY}@refs/pull/7/merge",
                ),
            ),
            ALL,
            "(7) ref: workflow.ref: got 'refs/pull/7/merge', expected 'refs/heads/*'",
        ),
        (
            edit("predicate.buildDefinition.resolvedDependencies.0.digest.gitCommit", "f" * 40),
            ALL,
            f"(8) commit: gitCommit: got '{'f' * 40}', expected '{COMMIT}'",
        ),
        (edit("predicate.runDetails", {}), ALL, "(5) builder.id: predicate.runDetails.builder.id is missing"),
    ],
)
def test_each_check_names_got_and_expected(
    signer: LocalSigner, mutate: Callable[[dict[str, Any]], None], expectations: Expectations, message: str
) -> None:
    value = copy.deepcopy(statement())
    mutate(value)
    with pytest.raises(VerificationError) as caught:
        verify_provenance(envelope(signer, value), [signer.public_key()], expectations)
    assert str(caught.value).startswith(message)


def test_wrong_payload_type_fails_check_1(signer: LocalSigner) -> None:
    with pytest.raises(VerificationError, match=r"^\(1\) envelope: payloadType: got 'application/json'"):
        verify_provenance(envelope(signer, statement(), "application/json"), [signer.public_key()], ALL)


def test_malformed_envelope_and_payload(signer: LocalSigner) -> None:
    with pytest.raises(VerificationError, match=r"^\(1\) envelope: envelope is not JSON"):
        verify_provenance(b"{nope", [signer.public_key()], ALL)
    with pytest.raises(VerificationError, match=r"^\(3\) statement: the payload is not JSON"):
        verify_provenance(envelope(signer, b"\xff not json"), [signer.public_key()], ALL)
    with pytest.raises(VerificationError, match=r"^\(3\) statement: the payload is not a JSON object"):
        verify_provenance(envelope(signer, b"[1]"), [signer.public_key()], ALL)


def test_changed_and_missing_artifacts() -> None:
    results = check_artifacts(
        statement(), [Artifact("bin/app", LIB.replace("a", "b")), Artifact("x", "0" * 64)]
    )
    assert [r.passed for r in results] == [False, False]
    assert results[0].line() == (
        f"FAILED: bin/app: (9) subject: bin/app sha256 got {LIB.replace('a', 'b')}, expected {APP}"
    )
    assert (
        results[1].line() == f"FAILED: x: (9) subject: sha256 {'0' * 64} is not a subject of the provenance"
    )
