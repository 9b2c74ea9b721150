"""The agent's proxy and certificate variables: read once, routed like the agent routes, secrets masked."""

from __future__ import annotations

import datetime
import json
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.azure.network import AgentNetwork
from slsa_provenance.errors import Error, InputError


def network(**env: str) -> AgentNetwork:
    found = AgentNetwork.from_variables(env)
    assert found is not None
    return found


def test_without_agent_variables_nothing_applies() -> None:
    env = {"HTTPS_PROXY": "http://corporate:3128", "NO_PROXY": "localhost", "REQUESTS_CA_BUNDLE": "/x"}
    assert AgentNetwork.from_variables(env) is None
    assert (
        "transport" not in AgentRun.from_environment(env).http.client_options()
    )  # the SDKs' own transport, honouring HTTPS_PROXY


def test_credentials_travel_percent_encoded_in_the_proxy_url_only() -> None:
    proxy = network(
        AGENT_PROXYURL="http://proxy.contoso.com:8080/",
        AGENT_PROXYUSERNAME="CONTOSO\\build",
        SECRET_AGENT_PROXYPASSWORD="p@ss:w/rd%",
    )
    assert proxy.proxy_for("https://contoso.vault.azure.net/keys/k") == (
        "http://CONTOSO%5Cbuild:p%40ss%3Aw%2Frd%25@proxy.contoso.com:8080"
    )
    assert proxy.proxy == "http://proxy.contoso.com:8080"
    assert "p@ss" not in repr(proxy)


def test_the_bypass_list_is_matched_like_the_agent_does() -> None:
    """Regular expressions, case-insensitive, against scheme://host[:port] (no default port, no path)."""
    proxy = network(
        AGENT_PROXYURL="http://proxy:3128",
        AGENT_PROXYBYPASSLIST=json.dumps([r"\.internal\.contoso\.com$", r"^https://tfs:8443$", ""]),
    )
    assert proxy.proxy_for("https://TFS.Internal.Contoso.com/tfs/DefaultCollection") is None
    assert proxy.proxy_for("https://tfs.internal.contoso.com:443/x") is None
    assert proxy.proxy_for("https://tfs:8443/x") is None
    assert proxy.proxy_for("https://tfs/x") == "http://proxy:3128"
    assert proxy.proxy_for("https://dev.azure.com/contoso/?q=.internal.contoso.com") == "http://proxy:3128"
    for local in (
        "https://localhost:8080/",
        "https://127.0.0.1/",
        "https://[::1]:1/",
        "http://169.254.169.254/",
    ):
        assert proxy.proxy_for(local) is None, local


@pytest.mark.usefixtures("under_agent")
def test_credentials_in_the_proxy_url_are_used_and_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    password = "in-url-" + secrets.token_hex(8)
    proxy = network(AGENT_PROXYURL=f"http://build:{password}@proxy:3128")
    assert (proxy.proxy, proxy.username, proxy.password) == ("http://proxy:3128", "build", password)
    assert f"##vso[task.setsecret]{password}\n" in capsys.readouterr().out


@pytest.mark.usefixtures("under_agent")
def test_the_password_is_masked_once_before_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    password = "proxy-" + secrets.token_hex(8) + "/+"
    env = {
        "AGENT_PROXYURL": "http://proxy:3128",
        "AGENT_PROXYUSERNAME": "u",
        "SECRET_AGENT_PROXYPASSWORD": password,
    }
    AgentRun.from_environment(env).http.client_options()
    AgentRun.from_environment(env).http.client_options()
    out = capsys.readouterr().out
    encoded = password.replace("/", "%2F").replace("+", "%2B")  # as it stands in the proxy URL
    assert out.splitlines() == [
        vso.command("task.setsecret", password),
        vso.command("task.setsecret", encoded),
    ]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"AGENT_PROXYURL": "proxy.contoso.com:8080"}, "is not an http:// or https:// URL"),
        ({"AGENT_PROXYURL": "socks5://u:topsecret@proxy:1080"}, "'socks5://proxy:1080' is not an http://"),
        ({"AGENT_PROXYURL": "http://u:topsecret@proxy:99999"}, "'http://proxy:99999'"),
        ({"AGENT_PROXYURL": "http://proxy", "AGENT_PROXYBYPASSLIST": "github.com"}, "not a JSON array"),
        ({"AGENT_PROXYURL": "http://proxy", "AGENT_PROXYBYPASSLIST": '["(unclosed"]'}, "'(unclosed'"),
        ({"AGENT_CAINFO": "/nonexistent/ca.pem"}, "AGENT_CAINFO names the CA certificate"),
    ],
)
def test_malformed_settings_fail_with_one_sentence(variables: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as caught:
        AgentNetwork.from_variables({**variables, "SECRET_AGENT_PROXYPASSWORD": "topsecret"})
    assert message in caught.value.diagnostics()
    assert "topsecret" not in caught.value.diagnostics()


def test_skipping_certificate_validation_is_refused_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert network(AGENT_CAINFO=str(ca), AGENT_SKIPCERTVALIDATION="true").ca_file == str(ca)
    assert "this step does not" in capsys.readouterr().err


def test_a_refused_tunnel_names_the_proxy_and_user_never_the_password() -> None:
    proxy = network(
        AGENT_PROXYURL="http://proxy:3128", AGENT_PROXYUSERNAME="build", AGENT_PROXYPASSWORD="pw-1"
    )
    error = proxy.refused("https://ado.contoso.com/x", "407")
    assert error.diagnostics().startswith(
        "the agent's proxy http://proxy:3128 refused the credentials of proxy user 'build' (407"
    )
    assert "pw-1" not in error.diagnostics()


def client_certificate(folder: Path, password: str) -> tuple[Path, Path]:
    """A self-signed client certificate (its own CA) and its private key, encrypted with `password`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "build agent")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "client.pem", folder / "client.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    encryption = serialization.BestAvailableEncryption(password.encode())
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_file, key_file


@pytest.mark.integration
@pytest.mark.usefixtures("under_agent")
def test_the_agent_ca_and_client_certificate_reach_a_server_that_demands_them(
    certificate_authority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """A collection that requires a client certificate, trusted only through Agent.CAInfo."""
    from fakes import AzureDevOps, Entra, json_response

    password = "key-" + secrets.token_hex(8)
    cert_file, key_file = client_certificate(tmp_path, password)
    server = AzureDevOps(certificate_authority, "token", "connection", Entra(certificate_authority, "t", "c"))
    server.client_ca = cert_file
    server.route("GET", r"/contoso/_apis/connectionData", lambda request: json_response({"ok": True}))
    server.start()
    env = {
        "AGENT_CAINFO": str(certificate_authority.ca_pem),
        "AGENT_CLIENTCERT": str(cert_file),
        "AGENT_CLIENTCERTKEY": str(key_file),
        "SECRET_AGENT_CLIENTCERTPASSWORD": password,
        "SLSA_HTTP_RETRIES": "0",
    }
    try:
        assert collection_client(server, env).get("_apis/connectionData", "connection data") == {"ok": True}
        assert vso.command("task.setsecret", password) in capsys.readouterr().out
        without = {k: v for k, v in env.items() if not k.startswith(("AGENT_CLIENT", "SECRET_"))}
        with pytest.raises(Error, match="cannot reach Azure DevOps"):
            collection_client(server, without).get("_apis/connectionData", "connection data")
        with pytest.raises(InputError, match="certificate settings cannot be used"):
            collection_client(server, {**env, "SECRET_AGENT_CLIENTCERTPASSWORD": "wrong"})
    finally:
        server.stop()


def collection_client(server, env: dict[str, str]):  # type: ignore[no-untyped-def]
    from slsa_provenance.azure.devops import AzureDevOps

    return AzureDevOps(server.collection, "token", AgentRun.from_environment(env).http)


def test_the_module_example_runs() -> None:
    import doctest

    from slsa_provenance.azure import network as module

    assert doctest.testmod(module).failed == 0
