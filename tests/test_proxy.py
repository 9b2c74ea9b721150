"""Every HTTP call through the agent's proxy: a real proxy (proxy.py) that requires Basic
authentication and logs each CONNECT, in front of the local Entra, Azure DevOps and Key Vault.

The services are named entra/ado/vault.slsa.test and only the proxy resolves those names (tests/
proxy_names.py): a client that tried to connect directly could not even find them."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from agent import StepResult
from conftest import CONNECTION_ID, REPO, AzureStack, run_cli
from fakes import HttpsServer
from proxy_names import DOMAIN
from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import AgentRun
from test_extension import completion, run_step, step_env

pytestmark = pytest.mark.integration
USER = "build-agent"


class Proxy:
    def __init__(self, folder: Path, password: str) -> None:
        pytest.importorskip("proxy", reason="proxy.py is not installed (make installs requirements.lock)")
        self.password = password
        self.log = folder / "proxy.log"
        port_file = folder / "proxy.port"
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--hostname=127.0.0.1",
                "--port=0",
                f"--port-file={port_file}",
                f"--basic-auth={USER}:{password}",
                "--plugins=proxy_names.ResolveTestNames",
                f"--log-file={self.log}",
                "--num-acceptors=1",
                "--num-workers=1",
            ],
            cwd=Path(__file__).parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self._process.poll() is None and time.monotonic() < deadline, "proxy.py did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text().strip()}"

    def connects(self, expected: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
        """host:port of every CONNECT logged (the log is written as tunnels close: wait for `expected`)."""
        deadline = time.monotonic() + 10
        while True:
            found = set(re.findall(r" - CONNECT (\S+) - ", self.log.read_text() if self.log.exists() else ""))
            if expected <= found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    running = Proxy(tmp_path, "proxy-" + secrets.token_urlsafe(12) + "%:@/")
    yield running
    running.stop()


@pytest.fixture
def named(certificate_authority, vault_keys) -> Iterator[AzureStack]:  # type: ignore[no-untyped-def]
    """The Azure fakes under names only the proxy resolves; the agent's CA instead of REQUESTS_CA_BUNDLE."""
    try:
        socket.getaddrinfo(f"ado.{DOMAIN}", 443)
        pytest.skip(f"this machine resolves ado.{DOMAIN}: the proxy tests need a name only the proxy knows")
    except socket.gaierror:
        pass
    stack = AzureStack(certificate_authority, vault_keys, domain=DOMAIN)
    stack.env = {k: v for k, v in stack.env.items() if k not in ("REQUESTS_CA_BUNDLE", "NO_PROXY")}
    stack.env["AGENT_CAINFO"] = str(certificate_authority.ca_pem)
    stack.variables["AGENT_CAINFO"] = stack.env["AGENT_CAINFO"]
    stack.process = {"SLSA_HTTP_RETRIES": stack.process["SLSA_HTTP_RETRIES"]}
    yield stack
    stack.stop()


def agent_proxy(proxy: Proxy, password: str | None = None, bypass: str = "") -> dict[str, str]:
    return {
        "AGENT_PROXYURL": proxy.url,
        "AGENT_PROXYUSERNAME": USER,
        "SECRET_AGENT_PROXYPASSWORD": proxy.password if password is None else password,
        **({"AGENT_PROXYBYPASSLIST": bypass} if bypass else {}),
    }


def hostport(server: HttpsServer) -> str:
    return f"{server.hostname}:{server.port}"


def test_the_cli_reaches_every_service_only_through_the_proxy(
    named: AzureStack, proxy: Proxy, drop: Path
) -> None:
    env = {**named.env, **agent_proxy(proxy)}
    result = run_cli(
        "generate", "--drop", drop, "--signer", f"azurekms://{hostport(named.vault)}/p256", env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "confirmed by the server" in result.stdout
    services = {hostport(s) for s in (named.entra, named.ado, named.vault)}
    assert proxy.connects(services) == services
    assert all(server.requests for server in (named.entra, named.ado, named.vault))
    assert any("oidctoken" in r.path for r in named.ado.requests)  # the OIDC call took the proxy too
    outside = [line for line in (result.stdout + result.stderr).splitlines() if "task.setsecret" not in line]
    assert not [line for line in outside if proxy.password in line]


def test_wrong_proxy_credentials_fail_with_one_sentence_and_no_retry(
    named: AzureStack, proxy: Proxy, drop: Path
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    env = {**named.env, **agent_proxy(proxy, password=wrong), "SLSA_HTTP_RETRIES": "4"}
    started = time.monotonic()
    result = run_cli(
        "generate", "--drop", drop, "--signer", f"azurekms://{hostport(named.vault)}/p256", env=env
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the agent's proxy {proxy.url} refused the credentials of proxy user '{USER}' (407 Proxy "
        f"Authentication Required) on the way to {hostport(named.vault)}: correct the proxy username and "
        "password the agent was configured with (config --proxyusername --proxypassword)"
    ]
    assert time.monotonic() - started < 15  # no back-off: a 407 is an answer, not an outage
    assert wrong not in result.stderr and f"##vso[task.setsecret]{wrong}" in result.stdout
    assert not (drop / "_manifest" / "slsa_1.0").exists()


def test_a_bypassed_host_gets_no_connect_and_is_reached_directly(
    named: AzureStack, proxy: Proxy, drop: Path, tmp_path: Path
) -> None:
    """The vault is bypassed; inside a private mount namespace /etc/hosts resolves its name for the CLI."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode:
        pytest.skip("this machine does not allow private mount namespaces")
    hosts = tmp_path / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {named.vault.hostname}\n")
    bypass = f'["^https://vault\\\\.{re.escape(DOMAIN).replace(chr(92), chr(92) * 2)}:{named.vault.port}$"]'
    env = {**named.env, **agent_proxy(proxy, bypass=bypass), "PYTHONPATH": str(REPO / "src")}
    env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # nothing listens there: the agent's settings win, both ways
    command = [sys.executable, "-m", "slsa_provenance", "generate", "--drop", str(drop)]
    command += ["--signer", f"azurekms://{hostport(named.vault)}/p256"]
    # Python, not sh, execs the CLI: sh drops variables whose names hold '-' (the connection's).
    mount = f"import os, subprocess, sys; subprocess.run(['mount', '--bind', {str(hosts)!r}, '/etc/hosts'], check=True); os.execv(sys.argv[1], sys.argv[1:])"
    wrapped = ["unshare", "-rm", sys.executable, "-c", mount, *command]
    result = subprocess.run(wrapped, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {hostport(named.entra), hostport(named.ado)}
    assert proxy.connects(expected) == expected  # none for the vault
    assert [r for r in named.vault.requests if r.path.endswith("/sign")]  # signed directly


def test_a_credential_refused_by_the_proxy_raises_the_proxy_sentence(
    named: AzureStack, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure-identity wraps whatever its HTTP calls raise; the step still reports the proxy's refusal."""
    from slsa_provenance.azure.credentials import from_service_connection
    from slsa_provenance.errors import Error

    env = {**named.env, **agent_proxy(proxy, password="wrong-" + secrets.token_hex(8))}
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", "")  # so that the value the credential sets is undone
    monkeypatch.delenv("SYSTEM_OIDCREQUESTURI")
    credential = from_service_connection(AgentRun.from_environment(env))
    with pytest.raises(Error) as caught:
        credential.get_token("https://vault.azure.net/.default")
    assert caught.value.message.startswith(f"the agent's proxy {proxy.url} refused the credentials")
    assert hostport(named.ado) in caught.value.message  # the OIDC request was the first to go


def test_without_agent_settings_https_proxy_still_applies(
    named: AzureStack, proxy: Proxy, drop: Path, certificate_authority
) -> None:  # type: ignore[no-untyped-def]
    """No AGENT_ variables: the SDKs' own behaviour, HTTPS_PROXY included, is left as it was."""
    env = {k: v for k, v in named.env.items() if k != "AGENT_CAINFO"}
    env["REQUESTS_CA_BUNDLE"] = str(certificate_authority.ca_pem)
    env["HTTPS_PROXY"] = proxy.url.replace("://", f"://{USER}:{quote(proxy.password, safe='')}@")
    result = run_cli(
        "generate", "--drop", drop, "--signer", f"azurekms://{hostport(named.vault)}/p256", env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = {hostport(s) for s in (named.entra, named.ado, named.vault)}
    assert proxy.connects(services) == services
    assert "task.setsecret]" + proxy.password not in result.stdout  # nothing of the agent's was read


def packaged_step_env(
    named: AzureStack, proxy: Proxy, drop: Path, tmp_path: Path, **agent: str
) -> dict[str, str]:
    key = f"https://{hostport(named.vault)}/keys/p256"
    return step_env(
        tmp_path,
        drop,
        endpoints=named.endpoints,
        variables={**named.variables, **agent_proxy(proxy, **agent)},
        process=named.process,
        azureSubscription=CONNECTION_ID,
        command="generate",
        signingMethod="keyVault",
        keyVaultKey=key,
    )


def printed_outside_setsecret(
    result: StepResult | subprocess.CompletedProcess[str], secret: str
) -> list[str]:
    lines = (result.stdout + result.stderr).splitlines()
    return [
        line for line in lines if "task.setsecret" not in line and (secret in line or quote(secret) in line)
    ]


def test_the_packaged_step_goes_only_through_the_proxy_and_never_shows_the_password(
    extension: Path, named: AzureStack, proxy: Proxy, drop: Path, tmp_path: Path
) -> None:
    """node runs the built task with agent-like variables: the password reaches Python by environment
    only (never argv: checked with strace when present) and is printed only inside task.setsecret."""
    env = packaged_step_env(named, proxy, drop, tmp_path)
    trace = tmp_path / "execve.log"
    wrap = ["strace", "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-o", str(trace)]
    result = run_step(extension, env, offline=False, wrap=wrap if shutil.which("strace") else ())
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    services = {hostport(s) for s in (named.entra, named.ado, named.vault)}
    assert proxy.connects(services) == services
    assert vso.command("task.setsecret", proxy.password) in result.stdout.splitlines()
    assert printed_outside_setsecret(result, proxy.password) == []
    if trace.exists():
        assert "launch.py" in trace.read_text() and proxy.password not in trace.read_text()


def test_the_packaged_step_fails_on_wrong_proxy_credentials_with_one_sentence(
    extension: Path, named: AzureStack, proxy: Proxy, drop: Path, tmp_path: Path
) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(9)
    result = run_step(
        extension, packaged_step_env(named, proxy, drop, tmp_path, password=wrong), offline=False
    )
    issues = [
        line for line in result.stdout.splitlines() if line.startswith("##vso[task.logissue type=error]")
    ]
    assert (
        len(issues) == 1 and f"proxy {proxy.url} refused the credentials of proxy user '{USER}'" in issues[0]
    )
    assert completion(result.stdout).startswith("##vso[task.complete result=Failed]")
    assert printed_outside_setsecret(result, wrong) == []
    assert not (drop / "_manifest" / "slsa_1.0").exists()


def test_a_registry_is_reached_through_the_proxy_too(
    named: AzureStack, proxy: Proxy, certificate_authority
) -> None:  # type: ignore[no-untyped-def]
    from fakes import json_response
    from slsa_provenance.registry.client import Registries

    registry = HttpsServer(certificate_authority, hostname=f"registry.{DOMAIN}")
    registry.route("GET", r"/v2/", lambda request: json_response({}))
    registry.start()
    try:
        with Registries(AgentRun.from_environment({**named.env, **agent_proxy(proxy)})) as registries:
            answer = registries.send("GET", f"{registry.url}/v2/", {"Accept": "application/json"})
        assert (answer.status, answer.body) == (200, b"{}")
        assert hostport(registry) in proxy.connects({hostport(registry)})
    finally:
        registry.stop()
