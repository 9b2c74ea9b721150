"""The Azure credential of the task's AzureRM service connection, as the agent hands it over.

    >>> credential = from_service_connection(os.environ)   # doctest: +SKIP

`INPUT_AZURESUBSCRIPTION` holds the connection's id; the agent puts its scheme and parameters
in `ENDPOINT_AUTH_SCHEME_<ID>`, `ENDPOINT_AUTH_PARAMETER_<ID>_*` and `ENDPOINT_DATA_<ID>_*`.
`WorkloadIdentityFederation` (no secret anywhere) uses `AzurePipelinesCredential`;
`ServicePrincipal` a secret or certificate (with a warning: federation is safer);
`ManagedServiceIdentity` the agent's managed identity. With no connection: outside a pipeline
`DefaultAzureCredential`; inside one (`TF_BUILD`) an InputError, never the agent machine's identity.
Every token obtained is masked in the log with `task.setsecret`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from slsa_provenance.azure import vso
from slsa_provenance.azure.transport import client_options
from slsa_provenance.errors import InputError

CONNECTION_INPUT = "INPUT_AZURESUBSCRIPTION"
OIDC_VARIABLE = "SYSTEM_OIDCREQUESTURI"


def from_service_connection(env: Mapping[str, str]) -> Any:
    """A TokenCredential. Raises InputError for an incomplete or unsupported connection."""
    connection = env.get(CONNECTION_INPUT, "").strip()
    options = client_options(env)
    if not connection:
        if env.get("TF_BUILD", "").lower() == "true":  # the agent machine's identity is not the pipeline's
            raise InputError(
                "inside Azure Pipelines a Key Vault key is used only through the task's service "
                "connection, and azureSubscription is empty",
                "set azureSubscription to an Azure Resource Manager service connection (workload identity "
                "federation) whose identity may use the key; the agent machine's own Azure identity is "
                "never tried in its place",
            )
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(exclude_interactive_browser_credential=True, **options)
    endpoint = _Endpoint(env, connection)
    scheme = endpoint.auth("SCHEME").lower()
    tenant = endpoint.parameter("TENANTID")
    authority = endpoint.data("ACTIVEDIRECTORYAUTHORITY") or endpoint.data("ENVIRONMENTAUTHORITYURL")
    if authority:
        options["authority"] = authority
    if scheme == "workloadidentityfederation":
        return _federated(env, connection, tenant, endpoint.parameter("SERVICEPRINCIPALID"), options)
    if scheme == "serviceprincipal":
        print(
            "WARNING: the service connection uses a client secret or certificate; workload identity "
            "federation needs no secret and is safer",
            file=sys.stderr,
        )
        # The connection names its cloud's authority: no need to look it up in the public cloud.
        return _service_principal(
            endpoint, tenant, {**options, "disable_instance_discovery": bool(authority)}
        )
    if scheme == "managedserviceidentity":
        from azure.identity import ManagedIdentityCredential

        return _Masking(ManagedIdentityCredential(**options))
    raise InputError(
        f"service connection {connection} uses the {scheme or 'unknown'} scheme",
        "use an Azure Resource Manager connection with workload identity federation",
    )


def service_connection_tenant(env: Mapping[str, str]) -> str:
    """The tenant of the task's service connection, or '' when there is none."""
    connection = env.get(CONNECTION_INPUT, "").strip()
    return _Endpoint(env, connection).parameter("TENANTID", required=False) if connection else ""


class _Endpoint:
    def __init__(self, env: Mapping[str, str], connection: str) -> None:
        self.env, self.connection, self.key = env, connection, connection.upper().replace("-", "_")

    def _get(self, prefix: str, name: str) -> str:
        for key in (self.connection.upper(), self.key, self.connection):
            value = self.env.get(f"{prefix}_{key}{'_' + name if name else ''}", "")
            if value:
                return value.strip()
        return ""

    def auth(self, name: str) -> str:
        return self._get(f"ENDPOINT_AUTH_{name}", "")

    def data(self, name: str) -> str:
        return self._get("ENDPOINT_DATA", name)

    def parameter(self, name: str, required: bool = True) -> str:
        value = self._get("ENDPOINT_AUTH_PARAMETER", name)
        if required and not value:
            raise InputError(
                f"service connection {self.connection} has no {name.lower()} "
                f"(ENDPOINT_AUTH_PARAMETER_<ID>_{name} is missing)",
                "check that the task's azureSubscription input names an AzureRM service connection",
            )
        return value


def _federated(
    env: Mapping[str, str], connection: str, tenant: str, client: str, options: dict[str, Any]
) -> Any:
    from azure.identity import AzurePipelinesCredential

    token = system_access_token(env)
    os.environ[OIDC_VARIABLE] = oidc_request_uri(env)

    class _MaskedPipelinesCredential(AzurePipelinesCredential):
        def _get_oidc_token(self) -> str:  # the SDK's hook for the ID token it exchanges
            oidc_token: str = super()._get_oidc_token()
            vso.set_secret(oidc_token)
            return oidc_token

    return _Masking(
        _MaskedPipelinesCredential(
            tenant_id=tenant,
            client_id=client,
            service_connection_id=connection,
            system_access_token=token,
            **options,
        )
    )


def _service_principal(endpoint: _Endpoint, tenant: str, options: dict[str, Any]) -> Any:
    from azure.identity import CertificateCredential, ClientSecretCredential

    client = endpoint.parameter("SERVICEPRINCIPALID")
    certificate = endpoint.parameter("SERVICEPRINCIPALCERTIFICATE", required=False)
    if certificate:
        return _Masking(
            CertificateCredential(tenant, client, certificate_data=certificate.encode(), **options)
        )
    secret = endpoint.parameter("SERVICEPRINCIPALKEY")
    return _Masking(ClientSecretCredential(tenant, client, secret, **options))


def system_access_token(env: Mapping[str, str]) -> str:
    """The job's System.AccessToken, from the protected SystemVssConnection endpoint first."""
    for name in (
        "ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN",
        "SYSTEM_ACCESSTOKEN",
        "SECRET_SYSTEM_ACCESSTOKEN",
    ):
        if env.get(name, "").strip():
            token = env[name].strip()
            vso.set_secret(token)
            return token
    raise InputError(
        "the job's access token (System.AccessToken) is not available",
        "run the task inside Azure Pipelines, or map SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
    )


def collection_url(env: Mapping[str, str]) -> str:
    """The collection URL from the protected SystemVssConnection endpoint, never a variable."""
    url = env.get("ENDPOINT_URL_SYSTEMVSSCONNECTION", "").strip()
    if not url.startswith("https://"):
        raise InputError(
            "ENDPOINT_URL_SYSTEMVSSCONNECTION is missing or not https",
            "run the task inside Azure Pipelines (the agent sets it)",
        )
    return url.rstrip("/") + "/"


def oidc_request_uri(env: Mapping[str, str]) -> str:
    """Where to ask for the ID token. Built from protected values; a variable pointing elsewhere is
    refused, since an earlier step could set it to collect the bearer System.AccessToken."""
    collection = collection_url(env)
    claimed = env.get(OIDC_VARIABLE, "").strip()
    if claimed:
        got, expected = urlsplit(claimed), urlsplit(collection)
        if got.scheme != "https" or got.netloc.lower() != expected.netloc.lower():
            raise InputError(
                f"System.OidcRequestUri points at {got.scheme}://{got.netloc}, not the collection host "
                f"{expected.netloc}; an earlier step may have overwritten it to steal the job's token",
                "remove the step that sets System.OidcRequestUri",
            )
        return claimed
    parts = [
        env.get(n, "").strip()
        for n in ("SYSTEM_TEAMPROJECTID", "SYSTEM_HOSTTYPE", "SYSTEM_PLANID", "SYSTEM_JOBID")
    ]
    if not all(parts):
        raise InputError(
            "cannot build the ID token URL: SYSTEM_TEAMPROJECTID, SYSTEM_HOSTTYPE, SYSTEM_PLANID or "
            "SYSTEM_JOBID is missing",
            "run the task inside an Azure Pipelines job",
        )
    project, hub, plan, job = parts
    return f"{collection}{project}/_apis/distributedtask/hubs/{hub}/plans/{plan}/jobs/{job}/oidctoken"


class _Masking:
    """Registers every access token with `task.setsecret` before anything can print it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = self._inner.get_token(*scopes, **kwargs)
        vso.set_secret(token.token)
        return token

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        info = self._inner.get_token_info(*scopes, **kwargs)
        vso.set_secret(info.token)
        return info

    def close(self) -> None:
        self._inner.close()
