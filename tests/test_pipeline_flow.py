"""The whole pipeline flow in a child process: agent environment, server confirmation, a Key Vault key
reached through workload identity federation, the envelope verified with the vault key's public half."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import ACCESS_TOKEN, AzureStack, run_cli
from slsa_provenance import step
from slsa_provenance.provenance.hashing import Progress

pytestmark = pytest.mark.integration
OUTPUT = Path("_manifest/slsa_1.0/provenance.intoto.jsonl")


def test_generate_in_a_pipeline_then_verify(
    azure: AzureStack, drop: Path, vault_keys, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    signer = f"azurekms://127.0.0.1:{azure.vault.port}/p384"
    result = run_cli("generate", "--drop", drop, "--signer", signer, env=azure.env)
    assert result.returncode == 0, result.stderr
    assert "confirmed by the server" in result.stdout and "NOT confirmed" not in result.stdout
    assert f"signed by: {azure.kids['p384']}" in result.stdout
    envelope = json.loads((drop / OUTPUT).read_text())
    assert envelope["signatures"][0]["keyid"] == azure.kids["p384"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    predicate = statement["predicate"]
    assert (
        predicate["buildDefinition"]["externalParameters"]["workflow"]["filePath"] == "ci/azure-pipelines.yml"
    )
    assert predicate["runDetails"]["metadata"]["startedOn"] == "2026-11-23T09:12:40.5843216Z"
    assert predicate["buildDefinition"]["internalParameters"]["azurePipelines"]["serverConfirmed"] is True
    public = tmp_path / "vault.pub"
    public.write_bytes(
        vault_keys["p384"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    verified = run_cli(
        "verify",
        "--provenance",
        drop / OUTPUT,
        "--key",
        public,
        "--artifact",
        drop,
        "--source-ref",
        "refs/heads/main",
        "--builder-id",
        f"{azure.ado.collection}web/web/ci/azure-pipelines.yml@refs/heads/main",
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    secrets = [ACCESS_TOKEN, *azure.entra.issued, *azure.entra.valid_assertions]
    assert len(secrets) >= 3
    for secret in secrets:
        outside_setsecret = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if secret in line and line != f"##vso[task.setsecret]{secret}"
        ]
        assert outside_setsecret == []
        assert secret not in (drop / OUTPUT).read_text()
        assert f"##vso[task.setsecret]{secret}" in result.stdout


def test_a_contradicting_variable_fails_the_step_and_writes_nothing(azure: AzureStack, drop: Path) -> None:
    env = {**azure.env, "BUILD_SOURCEVERSION": "d" * 40}
    result = run_cli(
        "generate", "--drop", drop, "--signer", f"azurekms://127.0.0.1:{azure.vault.port}/p256", env=env
    )
    assert result.returncode == 1
    assert (
        f"commit: got '{'d' * 40}' from BUILD_SOURCEVERSION, expected '{azure.env['BUILD_SOURCEVERSION']}'"
        in result.stderr
    )
    assert not (drop / "_manifest" / "slsa_1.0").exists()
    assert not [r for r in azure.vault.requests if r.path.endswith("/sign")]


def test_opting_out_of_confirmation_is_recorded(azure: AzureStack, drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "generate",
        "--drop",
        drop,
        "--signer",
        f"file:{key_files['ed25519'][0]}",
        "--no-server-confirmation",
        "--pipeline-file",
        "azure-pipelines.yml",
        env=azure.env,
    )
    assert result.returncode == 0, result.stderr
    assert "NOT confirmed by the server" in result.stdout
    statement = json.loads(base64.b64decode(json.loads((drop / OUTPUT).read_text())["payload"]))
    assert (
        statement["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"]["serverConfirmed"]
        is False
    )
    assert azure.ado.requests == []


def test_a_gate_trusts_the_vault_key_and_reads_the_bundle(azure: AzureStack, drop: Path) -> None:
    signer = f"azurekms://127.0.0.1:{azure.vault.port}/p256"
    assert run_cli("generate", "--drop", drop, "--signer", signer, env=azure.env).returncode == 0
    bundle = drop / "_manifest" / "slsa_1.0" / "provenance.sigstore.json"
    assert json.loads(bundle.read_text())["verificationMaterial"]["publicKey"]["hint"] == azure.kids["p256"]
    for provenance in (bundle, drop / OUTPUT):
        result = run_cli(
            "verify",
            "--provenance",
            provenance,
            "--key",
            signer,
            "--key",
            f"azurekms://127.0.0.1:{azure.vault.port}/rsa",
            "--artifact",
            drop,
            env=azure.env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    signs = [r for r in azure.vault.requests if r.path.endswith("/sign")]
    assert len(signs) == 1  # verification only reads the public keys


@pytest.mark.parametrize(
    ("progress", "value"),
    [
        (Progress(0, 10, 0, 0), "0"),  # still stat-ing: no sizes yet, so not 100
        (Progress(10, 10, 0, 0), "100"),  # every file empty
        (Progress(5, 10, 50, 200), "25"),
    ],
)
def test_the_step_reports_hashing_progress_in_bytes(
    progress: Progress, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    step._report_progress(progress)
    assert capsys.readouterr().out == f"##vso[task.setprogress value={value}]hashing the drop\n"
