"""The Key Vault signer through the real azure-identity and azure-keyvault-keys over local HTTPS."""

from __future__ import annotations

import os
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import ACCESS_TOKEN, AzureStack
from fakes import Fault, json_response
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.signing import dsse
from slsa_provenance.signing.keys import verify_signature
from slsa_provenance.signing.keyvault import KeyReference, KeyVaultSigner, raw_to_der
from slsa_provenance.signing.signers import from_uri

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("azurekms://contoso.vault.azure.net/slsa", ("https://contoso.vault.azure.net", "slsa", "", "")),
        (
            "azurekms://contoso.vault.azure.net/slsa/0123abcd",
            ("https://contoso.vault.azure.net", "slsa", "0123abcd", ""),
        ),
        (
            "azurekms://contoso.vault.azure.net/keys/slsa/0123abcd",
            ("https://contoso.vault.azure.net", "slsa", "0123abcd", ""),
        ),
        ("https://contoso.vault.azure.net/keys/slsa", ("https://contoso.vault.azure.net", "slsa", "", "")),
        (
            "https://hsm1.managedhsm.azure.net/keys/slsa-rsa/99ff?alg=ps256",
            ("https://hsm1.managedhsm.azure.net", "slsa-rsa", "99ff", "PS256"),
        ),
    ],
)
def test_key_reference_forms(uri: str, expected: tuple[str, str, str, str]) -> None:
    ref = KeyReference.parse(uri)
    assert (ref.vault_url, ref.name, ref.version, ref.algorithm) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "azurekms://",
        "azurekms://vault",
        "azurekms://vault/a/b/c",
        "https://vault.azure.net/secrets/x",
        "azurekms://v.vault.azure.net/key_with_underscore",
        "https://v.vault.azure.net/keys/k?alg=ES999",
    ],
)
def test_malformed_key_references(uri: str) -> None:
    with pytest.raises(InputError):
        KeyReference.parse(uri)


def test_raw_to_der_keeps_every_signature_valid() -> None:
    """Key Vault's r||s has fixed-width halves; leading zero bytes (1 in 128 per half) must survive."""
    key = ec.generate_private_key(ec.SECP256R1())
    leading_zeros = 0
    for index in range(600):
        message = f"message {index}".encode()
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        leading_zeros += raw[0] == 0 or raw[32] == 0
        assert verify_signature(key.public_key(), raw_to_der(raw, 32), message)
    assert leading_zeros > 0  # the loop really exercised the padded case
    small = raw_to_der(b"\x00" * 31 + b"\x05" + b"\x00" * 30 + b"\x01\x02", 32)
    assert decode_dss_signature(small) == (5, 0x0102)
    with pytest.raises(Error, match="63-byte ECDSA signature, expected 64"):
        raw_to_der(b"\x01" * 63, 32)


@pytest.mark.parametrize(
    ("name", "algorithm"), [("p256", "ES256"), ("p384", "ES384"), ("p521", "ES512"), ("rsa", "RS256")]
)
def test_signs_through_workload_identity_federation(
    azure: AzureStack, name: str, algorithm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = from_uri(
        f"azurekms://127.0.0.1:{azure.vault.port}/{name}", AgentRun.from_environment(os.environ)
    )
    assert signer.keyid == azure.kids[name]  # the versioned kid, resolved from the unversioned reference
    envelope = dsse.sign(b'{"a":1}', dsse.PAYLOAD_TYPE, signer)
    assert dsse.verify(envelope, [signer.public_key()]).keyid == azure.kids[name]
    sign_call = [r for r in azure.vault.requests if r.path.endswith("/sign")][-1]
    assert sign_call.json()["alg"] == algorithm
    if name != "rsa":
        assert envelope.signatures[0].sig[0] == 0x30
    oidc = [r for r in azure.ado.requests if r.path.endswith("/oidctoken")]
    assert oidc and oidc[0].headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert oidc[0].path.startswith(
        f"/contoso/{azure.env['SYSTEM_TEAMPROJECTID']}/_apis/distributedtask/hubs/build/plans/"
    )
    token_form = [r.form() for r in azure.entra.requests][0]
    assert token_form["client_assertion"] in azure.entra.valid_assertions
    assert token_form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    printed = capsys.readouterr().out
    for secret in (ACCESS_TOKEN, token_form["client_assertion"], azure.entra.issued[0]):
        assert f"##vso[task.setsecret]{secret}\n" in printed


def test_versioned_reference_and_ps256(azure: AzureStack) -> None:
    version = azure.kids["rsa"].rsplit("/", 1)[1]
    signer = from_uri(
        f"https://127.0.0.1:{azure.vault.port}/keys/rsa/{version}?alg=PS256",
        AgentRun.from_environment(os.environ),
    )
    envelope = dsse.sign(b"x", dsse.PAYLOAD_TYPE, signer)
    dsse.verify(envelope, [signer.public_key()])
    assert [r for r in azure.vault.requests if r.path.endswith("/sign")][-1].json()["alg"] == "PS256"


def expect_error(azure: AzureStack, uri_key: str, message: str) -> Error:
    with pytest.raises(Error) as caught:
        signer = from_uri(
            f"azurekms://127.0.0.1:{azure.vault.port}/{uri_key}", AgentRun.from_environment(os.environ)
        )
        signer.sign(b"data")
    assert message in caught.value.diagnostics(), caught.value.diagnostics()
    return caught.value


def test_403_names_the_missing_role(azure: AzureStack) -> None:
    azure.vault.inject(
        r"/sign$",
        Fault(
            "respond",
            json_response({"error": {"code": "Forbidden", "message": "Caller is not authorized"}}, 403),
        ),
    )
    error = expect_error(azure, "p256", "may not use key p256")
    assert "Key Vault Crypto User" in error.remedy


def test_404_names_the_key(azure: AzureStack) -> None:
    error = expect_error(azure, "missing-key", "Key Vault key missing-key in https://127.0.0.1:")
    assert "does not exist" in error.message


def test_entra_refusal_names_the_federated_credential(azure: AzureStack) -> None:
    azure.entra.valid_assertions.clear()
    original = azure.ado._oidc
    azure.ado.routes[0] = (
        azure.ado.routes[0][0],
        azure.ado.routes[0][1],
        lambda r: (lambda resp: (azure.entra.valid_assertions.clear(), resp)[1])(original(r)),
    )
    error = expect_error(azure, "p256", "Microsoft Entra ID refused to sign in")
    assert "sc://<organization>/<project>/<service connection name>" in error.remedy


def test_oidc_refusal_says_to_authorize_the_pipeline(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN", "stale-token")
    expect_error(azure, "p256", "authorize this pipeline to use the service connection")


def test_throttling_is_retried_with_retry_after_then_succeeds(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLSA_HTTP_RETRIES", "3")
    throttled = json_response({"error": {"code": "Throttled"}}, 429, {"Retry-After": "1"})
    azure.vault.inject(r"/sign$", Fault("respond", throttled), times=2)
    signer = from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ))
    started = time.monotonic()
    signature = signer.sign(b"payload")
    assert time.monotonic() - started >= 2.0  # two Retry-After: 1 waits were honoured
    assert verify_signature(signer.public_key(), signature, b"payload")
    assert len([r for r in azure.vault.requests if r.path.endswith("/sign")]) == 3


@pytest.mark.parametrize("status", [429, 503])
def test_a_storm_fails_clearly_after_bounded_retries(azure: AzureStack, status: int) -> None:
    azure.vault.inject(
        r"/sign$", Fault("respond", json_response({"error": {"code": "Busy"}}, status)), times=10
    )
    expect_error(azure, "p256", f"Key Vault kept answering {status} for key p256")
    assert len([r for r in azure.vault.requests if r.path.endswith("/sign")]) == 2  # SLSA_HTTP_RETRIES=1


def test_connection_reset_and_timeout(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    azure.vault.inject(r"/sign$", Fault("reset"), times=5)
    expect_error(azure, "p256", "cannot reach https://127.0.0.1:")
    monkeypatch.setenv("SLSA_HTTP_TIMEOUT", "0.5")
    azure.vault.inject(r"/sign$", Fault("slow", seconds=2.0), times=5)
    expect_error(azure, "p384", "cannot reach https://127.0.0.1:")


def test_an_overwritten_oidc_request_uri_is_refused(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", "https://attacker.example/collect")
    with pytest.raises(InputError, match="points at https://attacker.example, not the collection host"):
        from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ))
    assert azure.ado.requests == [] and azure.entra.requests == []


def test_an_oidc_request_uri_on_the_collection_host_is_used(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = f"{azure.ado.collection}{azure.env['SYSTEM_TEAMPROJECTID']}/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken"
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", custom)
    from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ)).sign(
        b"x"
    )
    assert [r.path for r in azure.ado.requests][0].endswith("/plans/p/jobs/j/oidctoken")


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("ENDPOINT_AUTH_PARAMETER_{ID}_TENANTID", "has no tenantid"),
        ("ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN", r"System.AccessToken\) is not available"),
        ("ENDPOINT_URL_SYSTEMVSSCONNECTION", "ENDPOINT_URL_SYSTEMVSSCONNECTION is missing"),
    ],
)
def test_incomplete_service_connection(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch, variable: str, message: str
) -> None:
    from conftest import CONNECTION_ID

    monkeypatch.delenv(variable.replace("{ID}", CONNECTION_ID.upper()))
    with pytest.raises(InputError, match=message):
        KeyVaultSigner.from_uri(
            f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ)
        )


def test_an_unsupported_scheme_is_named(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import CONNECTION_ID

    monkeypatch.setenv(f"ENDPOINT_AUTH_SCHEME_{CONNECTION_ID.upper()}", "UsernamePassword")
    with pytest.raises(InputError, match="uses the usernamepassword scheme"):
        KeyVaultSigner.from_uri(
            f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ)
        )


@pytest.mark.check_real_azure
def test_check_real_vault() -> None:
    """Opt-in: SLSA_REAL_KEY=azurekms://... with credentials DefaultAzureCredential can use."""
    uri = os.environ.get("SLSA_REAL_KEY")
    if not uri:
        pytest.skip("set SLSA_REAL_KEY to a real Key Vault key to run this check")
    signer = from_uri(
        uri,
        AgentRun.from_environment({k: v for k, v in os.environ.items() if k != "INPUT_AZURESUBSCRIPTION"}),
    )
    dsse.verify(dsse.sign(b"{}", dsse.PAYLOAD_TYPE, signer), [signer.public_key()])


def test_a_service_principal_with_a_secret_signs_and_warns(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import CONNECTION_ID

    connection = CONNECTION_ID.upper()
    azure.entra.client_secret = "sp-secret-" + "z" * 20
    monkeypatch.setenv(f"ENDPOINT_AUTH_SCHEME_{connection}", "ServicePrincipal")
    monkeypatch.setenv(f"ENDPOINT_AUTH_PARAMETER_{connection}_SERVICEPRINCIPALKEY", azure.entra.client_secret)
    signer = from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ))
    dsse.verify(dsse.sign(b"x", dsse.PAYLOAD_TYPE, signer), [signer.public_key()])
    assert not [r for r in azure.ado.requests if r.path.endswith("/oidctoken")]  # no federation here
    captured = capsys.readouterr()
    assert "offers workload identity federation (Azure DevOps Services), it needs no secret" in captured.err
    assert f"##vso[task.setsecret]{azure.entra.issued[0]}" in captured.out


def test_a_managed_identity_signs(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import CONNECTION_ID

    monkeypatch.setenv(f"ENDPOINT_AUTH_SCHEME_{CONNECTION_ID.upper()}", "ManagedServiceIdentity")
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{azure.entra.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", azure.entra.identity_header)
    signer = from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p384", AgentRun.from_environment(os.environ))
    dsse.verify(dsse.sign(b"x", dsse.PAYLOAD_TYPE, signer), [signer.public_key()])
    assert [r.path for r in azure.entra.requests] == ["/msi/token"]


def machine_identity(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """No service connection, but the machine has an Azure identity DefaultAzureCredential would find."""
    monkeypatch.delenv("INPUT_AZURESUBSCRIPTION")
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{azure.entra.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", azure.entra.identity_header)


def test_in_a_pipeline_a_key_vault_key_needs_the_service_connection(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine_identity(azure, monkeypatch)
    with pytest.raises(InputError) as refused:
        from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ))
    assert refused.value.diagnostics() == (
        "inside Azure Pipelines a Key Vault key is used only through the task's service connection, and "
        "azureSubscription is empty: set azureSubscription to an Azure Resource Manager service connection "
        "(workload identity federation) whose identity may use the key; the agent machine's own Azure "
        "identity is never tried in its place"
    )
    assert azure.entra.requests == [] and azure.vault.requests == []


def test_outside_a_pipeline_the_default_azure_credential_signs(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine_identity(azure, monkeypatch)
    monkeypatch.delenv("TF_BUILD")
    signer = from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", AgentRun.from_environment(os.environ))
    dsse.verify(dsse.sign(b"x", dsse.PAYLOAD_TYPE, signer), [signer.public_key()])
    assert [r.path for r in azure.entra.requests] == ["/msi/token"]
