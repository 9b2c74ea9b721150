"""Fault injection across every service the step talks to: bounded retries, then one Error, never a traceback."""

from __future__ import annotations

import os

import pytest

from conftest import AzureStack
from fakes import Fault, HttpsServer, json_response
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.azure.devops import confirm
from slsa_provenance.errors import Error
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.signing.signers import from_uri

pytestmark = pytest.mark.integration
FAULTS = {
    "reset": Fault("reset"),
    "malformed JSON": Fault("not-json"),
    "HTML instead of JSON": Fault(
        "respond", (200, {"Content-Type": "text/html"}, b"<html>proxy login</html>")
    ),
    "401": Fault("respond", json_response({"error": "unauthorized"}, 401)),
    "403": Fault("respond", json_response({"error": "forbidden"}, 403)),
    "404": Fault("respond", json_response({"error": "not found"}, 404)),
    "500 storm": Fault("respond", json_response({"error": "busy"}, 500)),
    "429 storm": Fault("respond", json_response({"error": "throttled"}, 429, {"Retry-After": "0"})),
}
TARGETS = {
    "Entra token": ("entra", r"/oauth2/v2.0/token$", "sign"),
    "Azure DevOps OIDC": ("ado", r"/oidctoken$", "sign"),
    "Key Vault get key": ("vault", r"^/keys/p256/?$", "sign"),
    "Key Vault sign": ("vault", r"/sign$", "sign"),
    "REST Builds - Get": ("ado", r"/build/builds/836$", "confirm"),
    "REST Definitions - Get": ("ado", r"/build/definitions/12$", "confirm"),
    "REST Runs - Get": ("ado", r"/runs/836$", "confirm"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_fault_ends_in_one_error(azure: AzureStack, target: str, fault: str) -> None:
    server_name, path, operation = TARGETS[target]
    server: HttpsServer = getattr(azure, server_name)
    server.inject(path, FAULTS[fault], times=10)
    run = AgentRun.from_environment(os.environ)
    with pytest.raises(Error) as caught:
        if operation == "sign":
            from_uri(f"azurekms://127.0.0.1:{azure.vault.port}/p256", run).sign(b"payload")
        else:
            confirm(RunContext.from_variables(run.variables), run.system, run.http)
    message = caught.value.diagnostics()
    assert "\n" not in message and caught.value.remedy, message
    hits = [r for r in server.requests if __import__("re").search(path, r.path)]
    assert 1 <= len(hits) <= 4, f"{len(hits)} requests: retries must be bounded"
