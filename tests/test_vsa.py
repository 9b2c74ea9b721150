"""The signed Verification Summary Attestation: written only when every check passed, valid against the
schema written from the spec, and verified by an independent DSSE implementation (securesystemslib)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import PIPELINE_ENV, AzureStack, run_cli
from slsa_provenance import step
from slsa_provenance.gate.flow import OPTIONS_POLICY, GateOptions, verify_gate
from slsa_provenance.gate.vsa import VERIFIER_ID, Summary, build_summary, validate_summary
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.statement import Subject, build_statement, canonical_json
from slsa_provenance.signing import dsse
from slsa_provenance.signing.keys import load_public_key
from slsa_provenance.signing.local import LocalSigner
from test_interop import securesystemslib_verifies
from test_run_summary import step_env

pytestmark = pytest.mark.integration
APP = hashlib.sha256(b"app").hexdigest()
BUILD_URL = "https://dev.azure.com/contoso/web/_build/results?buildId=836"


def signed_drop(tmp_path: Path, key: Path) -> tuple[Path, Path]:
    """A drop holding bin/app, and confirmed provenance for it signed with `key`."""
    drop = tmp_path / "drop"
    (drop / "bin").mkdir(parents=True)
    (drop / "bin" / "app").write_bytes(b"app")
    context = replace(
        RunContext.from_variables(PIPELINE_ENV), pipeline_file="azure-pipelines.yml", server_confirmed=True
    )
    statement = build_statement(context, [Subject("bin/app", APP)])
    provenance = tmp_path / "provenance.intoto.jsonl"
    signer = LocalSigner.from_file(str(key))
    provenance.write_bytes(dsse.sign(canonical_json(statement), dsse.PAYLOAD_TYPE, signer).to_json() + b"\n")
    return drop, provenance


def read_vsa(path: Path) -> tuple[dsse.Envelope, dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    envelope = dsse.Envelope.from_json(text.encode())
    return envelope, json.loads(envelope.payload)


def test_a_passing_gate_writes_a_signed_summary(tmp_path: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    drop, provenance = signed_drop(tmp_path, key_files["ecdsa-p256"][0])
    vsa_key, vsa_public = key_files["rsa-2048"]
    output = tmp_path / "out" / "vsa.intoto.jsonl"
    result = run_cli(
        "verify",
        "--provenance",
        provenance,
        "--key",
        key_files["ecdsa-p256"][1],
        "--artifact",
        drop,
        "--digest",
        f"sha256:{APP}",
        "--vsa",
        output,
        "--vsa-signer",
        f"file:{vsa_key}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == f"verification summary: {output}\n"
    envelope, statement = read_vsa(output)
    public = load_public_key(vsa_public.read_bytes(), "vsa key")
    signer = LocalSigner.from_file(str(vsa_key))
    assert envelope.signatures[0].keyid == signer.keyid
    assert securesystemslib_verifies(envelope, public, signer.keyid)
    validate_summary(statement)
    predicate = statement["predicate"]
    time_verified = predicate.pop("timeVerified")
    assert abs(
        datetime.strptime(time_verified, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - datetime.now(UTC)
    ) < (timedelta(minutes=5))
    options_digest = predicate["policy"]["digest"]["sha256"]
    assert len(options_digest) == 64
    assert statement == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "bin/app", "digest": {"sha256": APP}}],  # one artifact, checked twice
        "predicateType": "https://slsa.dev/verification_summary/v1",
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"slsa-provenance": "1.0.0"}},
            "resourceUri": BUILD_URL,
            "policy": {"uri": OPTIONS_POLICY, "digest": {"sha256": options_digest}},
            "inputAttestations": [
                {
                    "uri": provenance.resolve().as_uri(),
                    "digest": {"sha256": hashlib.sha256(provenance.read_bytes()).hexdigest()},
                }
            ],
            "verificationResult": "PASSED",
            "verifiedLevels": ["SLSA_BUILD_LEVEL_2"],
            "slsaVersion": "1.0",
        },
    }
    tampered = bytearray(output.read_bytes())
    envelope_json = json.loads(tampered)
    payload = json.loads(base64.b64decode(envelope_json["payload"]))
    payload["predicate"]["verifiedLevels"] = ["SLSA_BUILD_LEVEL_3"]
    envelope_json["payload"] = base64.b64encode(canonical_json(payload)).decode()
    forged = dsse.Envelope.from_json(json.dumps(envelope_json).encode())
    assert not securesystemslib_verifies(forged, public, signer.keyid)


def test_the_summary_names_the_policy_and_its_level(tmp_path: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    drop, provenance = signed_drop(tmp_path, key_files["ecdsa-p256"][0])
    policy = tmp_path / "policy.yml"
    policy.write_text(
        f"trustedKeys: [{key_files['ecdsa-p256'][1]}]\n"
        "builders:\n  - id: https://dev.azure.com/contoso/web/**@refs/heads/main\n    level: 3\n"
        f"    keys: [{key_files['ecdsa-p256'][1]}]\n"
    )
    result = verify_gate(
        GateOptions(
            provenance=provenance,
            artifacts=[drop],
            policy=policy,
            vsa=tmp_path / "vsa.intoto.jsonl",
            vsa_signer=f"file:{key_files['ed25519'][0]}",
            verifier_id="https://deploy.contoso.example/gates/web-prod",
            resource_uri="https://contoso.example/releases/web/1.4.2",
        )
    )
    assert result.vsa_path == tmp_path / "vsa.intoto.jsonl"
    _, statement = read_vsa(tmp_path / "vsa.intoto.jsonl")
    predicate = statement["predicate"]
    assert predicate["policy"]["uri"] == policy.resolve().as_uri()
    assert predicate["verifiedLevels"] == ["SLSA_BUILD_LEVEL_3"]
    assert predicate["verifier"]["id"] == "https://deploy.contoso.example/gates/web-prod"
    assert predicate["resourceUri"] == "https://contoso.example/releases/web/1.4.2"


@pytest.mark.parametrize("failure", ["tampered artifact", "untrusted key", "unconfirmed"])
def test_no_summary_when_any_check_fails(tmp_path: Path, key_files, failure: str) -> None:  # type: ignore[no-untyped-def]
    drop, provenance = signed_drop(tmp_path, key_files["ecdsa-p256"][0])
    key = key_files["ecdsa-p256"][1]
    if failure == "tampered artifact":
        (drop / "bin" / "app").write_bytes(b"app2")
    elif failure == "untrusted key":
        key = key_files["ecdsa-p384"][1]
    else:
        payload = json.loads(dsse.Envelope.from_json(provenance.read_bytes()).payload)
        payload["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"]["serverConfirmed"] = (
            False
        )
        signer = LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))
        provenance.write_bytes(dsse.sign(canonical_json(payload), dsse.PAYLOAD_TYPE, signer).to_json())
    output = tmp_path / "out" / "vsa.intoto.jsonl"
    result = run_cli(
        "verify",
        "--provenance",
        provenance,
        "--key",
        key,
        "--artifact",
        drop,
        "--vsa",
        output,
        "--vsa-signer",
        f"file:{key_files['ed25519'][0]}",
    )
    assert result.returncode == 1 and "FAILED: bin/app" in result.stdout
    assert not (tmp_path / "out").exists()
    assert result.stderr == ""


def test_a_failed_check_leaves_no_earlier_summary_behind(tmp_path: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    drop, provenance = signed_drop(tmp_path, key_files["ecdsa-p256"][0])
    output = tmp_path / "vsa.intoto.jsonl"
    arguments = ["verify", "--provenance", provenance, "--key", key_files["ecdsa-p256"][1]]
    arguments += ["--artifact", drop, "--vsa", output, "--vsa-signer", f"file:{key_files['ed25519'][0]}"]
    assert run_cli(*arguments).returncode == 0 and output.is_file()
    earlier = output.read_bytes()
    (drop / "bin" / "app").write_bytes(b"app2")
    result = run_cli(*arguments)
    assert result.returncode == 1 and "FAILED: bin/app" in result.stdout
    assert not output.exists(), "the passing run's summary would stand for the failed one"
    assert run_cli(*arguments).returncode == 1 and not output.exists()
    output.write_bytes(earlier)
    unusable_signer = [*arguments[:-1], f"file:{tmp_path / 'missing.pem'}"]
    assert run_cli(*unusable_signer).returncode == 2
    assert not output.exists(), "a run that fails on its input must not leave an earlier summary either"


def test_a_summary_needs_a_usable_signer_before_anything_is_verified(tmp_path: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    drop, provenance = signed_drop(tmp_path, key_files["ecdsa-p256"][0])
    base = ["verify", "--provenance", provenance, "--key", key_files["ecdsa-p256"][1], "--artifact", drop]
    for signer, message in [
        (
            [],
            "error: a verification summary needs a signer: pass --vsa-signer file:KEY.pem or a Key Vault key",
        ),
        (["--vsa-signer", "none"], "error: a verification summary needs a signer"),
        (["--vsa-signer", f"file:{tmp_path / 'missing.pem'}"], "error: cannot read signing key"),
    ]:
        result = run_cli(*base, "--vsa", tmp_path / "vsa.jsonl", *signer)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
        assert result.stdout == "" and not (tmp_path / "vsa.jsonl").exists()


def test_the_pure_builder_takes_the_time_and_gives_the_same_bytes(tmp_path: Path) -> None:
    summary = Summary(
        subjects=[("b", "1" * 64), ("a", "0" * 64), ("b", "1" * 64)],
        verifier_id=VERIFIER_ID,
        verifier_version={"slsa-provenance": "1.0.0"},
        resource_uri=BUILD_URL,
        policy={"uri": OPTIONS_POLICY, "digest": {"sha256": "2" * 64}},
        input_attestations=[{"uri": "file:///p.intoto.jsonl", "digest": {"sha256": "3" * 64}}],
        level=2,
    )
    now = datetime(2026, 12, 1, 13, 30, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    first = build_summary(summary, now)
    assert canonical_json(first) == canonical_json(build_summary(summary, now))
    assert first["predicate"]["timeVerified"] == "2026-12-01T12:30:05Z"
    assert [s["name"] for s in first["subject"]] == ["a", "b"]
    validate_summary(first)
    with pytest.raises(Exception, match=r"verification summary invalid at predicate.resourceUri"):
        validate_summary(build_summary(replace(summary, resource_uri="not a uri"), now))


def test_the_step_signs_the_summary_with_key_vault(
    azure: AzureStack, vault_keys, tmp_path: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    drop, provenance = signed_drop(tmp_path, key_files["ecdsa-p256"][0])
    output = tmp_path / "vsa.intoto.jsonl"
    inputs = {
        "provenanceFile": str(provenance),
        "trustedKeys": str(key_files["ecdsa-p256"][1]),
        "artifacts": str(drop),
        "vsaFile": str(output),
        "vsaSigner": f"https://127.0.0.1:{azure.vault.port}/keys/p256",
    }
    env = {**step_env(tmp_path / "job", command="verify", **inputs), **azure.env}
    step.main(env)
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]" in out, out
    assert f"##vso[task.setvariable variable=vsaPath]{output}" in out
    envelope, statement = read_vsa(output)
    assert envelope.signatures[0].keyid == azure.kids["p256"]
    assert securesystemslib_verifies(envelope, vault_keys["p256"].public_key(), azure.kids["p256"])
    assert statement["predicate"]["verificationResult"] == "PASSED"
