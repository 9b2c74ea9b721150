"""The Azure credential of the task's AzureRM service connection, as the agent hands it over.

    >>> credential = from_service_connection(AgentRun.from_environment(os.environ))   # doctest: +SKIP

`INPUT_AZURESUBSCRIPTION` holds the connection's id; the agent puts its scheme and parameters
in `ENDPOINT_AUTH_SCHEME_<ID>`, `ENDPOINT_AUTH_PARAMETER_<ID>_*` and `ENDPOINT_DATA_<ID>_*`
(read by `agent.ServiceConnection`).
`WorkloadIdentityFederation` (no secret anywhere) uses `AzurePipelinesCredential`;
`ServicePrincipal` a secret or certificate (with a warning: federation is safer);
`ManagedServiceIdentity` the agent's managed identity. With no connection: outside a pipeline
`DefaultAzureCredential`; inside one (`TF_BUILD`) an InputError, never the agent machine's identity.
Every token obtained is masked in the log with `task.setsecret`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import OIDC_VARIABLE, AgentRun, ServiceConnection, SystemConnection
from slsa_provenance.errors import InputError


def from_service_connection(run: AgentRun) -> Any:
    """A TokenCredential. Raises InputError for an incomplete or unsupported connection."""
    connection = run.service_connection
    options = run.http.client_options()
    if connection is None:
        if run.in_pipeline:  # the agent machine's identity is not the pipeline's
            raise InputError(
                "inside Azure Pipelines a Key Vault key is used only through the task's service "
                "connection, and azureSubscription is empty",
                "set azureSubscription to an Azure Resource Manager service connection (workload identity "
                "federation) whose identity may use the key; the agent machine's own Azure identity is "
                "never tried in its place",
            )
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(exclude_interactive_browser_credential=True, **options)
    tenant = connection.required(connection.tenant, "TENANTID")
    if connection.authority:
        options["authority"] = connection.authority
    if connection.scheme == "workloadidentityfederation":
        client = connection.required(connection.client_id, "SERVICEPRINCIPALID")
        return _federated(run.system, connection.id, tenant, client, options)
    if connection.scheme == "serviceprincipal":
        print(
            "WARNING: the service connection uses a client secret or certificate; where the server "
            "offers workload identity federation (Azure DevOps Services), it needs no secret and is safer",
            file=sys.stderr,
        )
        # The connection names its cloud's authority: no need to look it up in the public cloud.
        return _service_principal(
            connection, tenant, {**options, "disable_instance_discovery": bool(connection.authority)}
        )
    if connection.scheme == "managedserviceidentity":
        from azure.identity import ManagedIdentityCredential

        return _Masking(ManagedIdentityCredential(**options))
    raise InputError(
        f"service connection {connection.id} uses the {connection.scheme or 'unknown'} scheme",
        "use an Azure Resource Manager connection with workload identity federation",
    )


def _federated(
    system: SystemConnection, connection: str, tenant: str, client: str, options: dict[str, Any]
) -> Any:
    from azure.identity import AzurePipelinesCredential

    token = system.access_token()
    os.environ[OIDC_VARIABLE] = system.oidc_url()  # where azure-identity reads it

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


def _service_principal(connection: ServiceConnection, tenant: str, options: dict[str, Any]) -> Any:
    from azure.identity import CertificateCredential, ClientSecretCredential

    client = connection.required(connection.client_id, "SERVICEPRINCIPALID")
    if connection.certificate:
        return _Masking(
            CertificateCredential(tenant, client, certificate_data=connection.certificate.encode(), **options)
        )
    secret = connection.required(connection.secret, "SERVICEPRINCIPALKEY")
    return _Masking(ClientSecretCredential(tenant, client, secret, **options))


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
