"""Azure DevOps Server 2022 (REST up to 7.0) and 2020 (6.0): the packaged step, run by the real `node`,
signs with a Key Vault key through a service principal (client secret or certificate) and confirms
the run with the server, asking each api-version the server refuses at most once. No workload
identity federation on Server; the agent's managed identity (IMDS) is covered through the CLI, since
the Node entry hands Python no variable that could point the SDK at a local IMDS."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import CLIENT_ID, CONNECTION_ID, REPO, TENANT_ID, AzureStack, run_cli
from fakes import JWT_BEARER
from test_extension import completion, key_vault_step_env, run_step

pytestmark = pytest.mark.integration
WORLDS = {"server-2022": ("7.0", "7.0"), "server-2020": ("6.0", "6.0-preview.1")}
CONNECTION = CONNECTION_ID.upper()
PROVENANCE = Path("_manifest/slsa_1.0/provenance.intoto.jsonl")
SP_CERTIFICATE = f"ENDPOINT_AUTH_PARAMETER_{CONNECTION}_SERVICEPRINCIPALCERTIFICATE"
SP_SECRET = f"ENDPOINT_AUTH_PARAMETER_{CONNECTION}_SERVICEPRINCIPALKEY"


def certificate_credential(key: rsa.RSAPrivateKey, name: str) -> tuple[x509.Certificate, str]:
    """A self-signed certificate as Entra registers it for an app, and the PEM (certificate and private
    key) the agent hands over in ENDPOINT_AUTH_PARAMETER_<ID>_SERVICEPRINCIPALCERTIFICATE."""
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate, pem.decode()


@pytest.fixture(scope="module")
def service_principal_certificate() -> tuple[x509.Certificate, str]:
    return certificate_credential(rsa.generate_private_key(public_exponent=65537, key_size=2048), "slsa-sp")


def server_world(azure: AzureStack, world: str) -> tuple[str, str]:
    newest, runs = WORLDS[world]
    azure.ado.newest_version = newest
    return newest, runs


def service_principal(
    azure: AzureStack, credential: str, certificate: tuple[x509.Certificate, str]
) -> dict[str, str]:
    """The AzureRM connection's variables, and Entra set to accept that credential only."""
    variables = {f"ENDPOINT_AUTH_SCHEME_{CONNECTION}": "ServicePrincipal"}
    if credential == "secret":
        azure.entra.client_secret = "sp-client-secret-4711"
        return variables | {
            f"ENDPOINT_AUTH_PARAMETER_{CONNECTION}_AUTHENTICATIONTYPE": "spnKey",
            SP_SECRET: azure.entra.client_secret,
        }
    azure.entra.certificate = certificate[0]
    return variables | {
        f"ENDPOINT_AUTH_PARAMETER_{CONNECTION}_AUTHENTICATIONTYPE": "spnCertificate",
        SP_CERTIFICATE: certificate[1],
    }


def connection_secrets(connection: dict[str, str]) -> list[str]:
    """The client secret, or each base64 line of the private key in the certificate's PEM."""
    if SP_SECRET in connection:
        return [connection[SP_SECRET]]
    private = connection[SP_CERTIFICATE].split("-----END CERTIFICATE-----", 1)[1]  # the key follows
    return [line for line in private.splitlines() if line and "-----" not in line]


def assert_confirmed_asking_each_version_once(azure: AzureStack, drop: Path, newest: str, runs: str) -> None:
    statement = json.loads(base64.b64decode(json.loads((drop / PROVENANCE).read_text())["payload"]))
    azure_pipelines = statement["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"]
    assert azure_pipelines["serverConfirmed"] is True
    refused = [(r.path, r.query["api-version"]) for r in azure.ado.refused]
    assert refused == [(azure.ado.requests[0].path, "7.1")]  # the first call only, never one twice
    assert {r.query["api-version"] for r in azure.ado.requests[1:]} == {newest, runs}
    assert not [r for r in azure.ado.requests if r.path.endswith("/oidctoken")]
    signs = [r for r in azure.vault.requests if r.path.endswith("/sign")]
    assert len(signs) == 1 and signs[0].headers["authorization"].removeprefix("Bearer ") in azure.entra.issued


@pytest.mark.parametrize("credential", ["secret", "certificate"])
@pytest.mark.parametrize("world", sorted(WORLDS))
def test_the_packaged_step_signs_and_confirms_on_azure_devops_server(
    extension: Path,
    drop: Path,
    tmp_path: Path,
    azure: AzureStack,
    world: str,
    credential: str,
    service_principal_certificate: tuple[x509.Certificate, str],
) -> None:
    newest, runs = server_world(azure, world)
    connection = service_principal(azure, credential, service_principal_certificate)
    env = key_vault_step_env(tmp_path, drop, azure, "p256") | connection
    result = run_step(extension, env, offline=False)
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert f"##vso[task.setvariable variable=keyId]{azure.kids['p256']}" in result.stdout
    assert_confirmed_asking_each_version_once(azure, drop, newest, runs)
    token_requests = [r.form() for r in azure.entra.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert token_requests and all(form["client_id"] == CLIENT_ID for form in token_requests)
    written = (drop / PROVENANCE).read_text()
    secrets = connection_secrets(connection)
    assert secrets
    for secret in secrets:
        assert secret not in result.stdout + result.stderr and secret not in written
    if credential == "certificate":
        assert {form.get("client_assertion_type") for form in token_requests} == {JWT_BEARER}
        assert not [form for form in token_requests if "client_secret" in form]
    else:
        assert {form.get("client_secret") for form in token_requests} == {azure.entra.client_secret}


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_the_agent_s_managed_identity_signs_on_azure_devops_server(
    azure: AzureStack, drop: Path, world: str
) -> None:
    newest, runs = server_world(azure, world)
    env = {
        **azure.env,
        f"ENDPOINT_AUTH_SCHEME_{CONNECTION}": "ManagedServiceIdentity",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": azure.entra.url,  # the SDK's own seam for where IMDS is
    }
    signer = f"azurekms://127.0.0.1:{azure.vault.port}/p256"
    result = run_cli("generate", "--drop", drop, "--signer", signer, env=env)
    assert result.returncode == 0, result.stderr
    assert "confirmed by the server" in result.stdout
    assert_confirmed_asking_each_version_once(azure, drop, newest, runs)
    assert [r.headers.get("metadata") for r in azure.entra.requests if r.path.startswith("/metadata/")] == [
        "true"
    ]


def test_a_certificate_assertion_is_checked_against_the_registered_certificate(
    azure: AzureStack, service_principal_certificate: tuple[x509.Certificate, str]
) -> None:
    """The fake Entra verifies the assertion's signature: the registered certificate's PEM with another
    private key (the same thumbprint in the header) is refused, the real pair accepted."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import CertificateCredential

    registered, pem = service_principal_certificate
    azure.entra.certificate = registered
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = registered.public_bytes(serialization.Encoding.PEM) + other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    options = {"authority": azure.entra.url, "disable_instance_discovery": True}
    scope = "https://vault.azure.net/.default"
    with pytest.raises(ClientAuthenticationError):
        CertificateCredential(TENANT_ID, CLIENT_ID, certificate_data=forged, **options).get_token(scope)
    token = CertificateCredential(TENANT_ID, CLIENT_ID, certificate_data=pem.encode(), **options).get_token(
        scope
    )
    assert token.token in azure.entra.issued


# The agent version Node20_1 first runs on (agent PR #4240/#4518), and the newest agent Azure DevOps
# Server ships (GitTools/actions#1726: "DevOps Server ... only supports up to 3.238"): platform-notes.md.
NODE20_1_AGENT = (3, 232, 1)
NEWEST_SERVER_AGENT = (3, 238, 0)


def test_the_task_runs_on_the_agents_azure_devops_server_ships() -> None:
    """minimumAgentVersion makes older agents upgrade, and a server upgrades them only to what it ships:
    above that the task cannot run on Server; below Node20_1's agent no handler of the task runs."""
    task = json.loads((REPO / "task.json").read_text())
    minimum = tuple(int(part) for part in task["minimumAgentVersion"].split("."))
    assert NODE20_1_AGENT <= minimum <= NEWEST_SERVER_AGENT
    assert "Node20_1" in task["execution"]
    assert {target["id"] for target in json.loads((REPO / "vss-extension.json").read_text())["targets"]} == {
        "Microsoft.VisualStudio.Services"
    }
