"""The azure-core transport that applies the agent's network settings to every request it sends.

    >>> KeyClient(vault_url, credential, transport=AgentTransport(network))   # doctest: +SKIP

`transport.client_options` hands one to every client, credential and pipeline the package builds,
so the REST calls, the OIDC request, Entra (through msal) and Key Vault all take the same route:
the agent's proxy, with its credentials, unless the bypass list says otherwise; TLS that trusts the
agent's CA besides the usual roots, and presents the agent's client certificate when a server asks.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from requests import Session
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from slsa_provenance.azure.network import AgentNetwork
from slsa_provenance.errors import InputError

_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: ([0-9]{3})")


class AgentTransport(RequestsTransport):  # type: ignore[misc]
    def __init__(self, network: AgentNetwork, **kwargs: Any) -> None:
        session = Session()
        if network.has_tls_settings:
            session.mount("https://", _AgentTlsAdapter(network))
        super().__init__(session=session, session_owner=True, **kwargs)
        self._network = network

    def send(self, request: Any, *, proxies: Any = None, **kwargs: Any) -> Any:
        """Route by the agent's proxy and bypass list. Raises Error when the proxy refuses the tunnel."""
        if self._network.proxy:
            proxy = self._network.proxy_for(request.url)
            proxies = {"http": proxy, "https": proxy}  # None: direct, whatever HTTPS_PROXY says
        try:
            return super().send(request, proxies=proxies, **kwargs)
        except ServiceRequestError as exc:
            refused = _TUNNEL_REFUSED.search(str(exc)) if self._network.proxy else None
            if refused and refused.group(1) in ("403", "407"):  # an answer, not an outage: no retry
                raise self._network.refused(request.url, refused.group(1)) from None
            raise


class _AgentTlsAdapter(HTTPAdapter):
    """Gives each connection a TLS context of the usual roots (certifi, or REQUESTS_CA_BUNDLE) plus the
    agent's CA, with the agent's client certificate: for direct connections and proxy tunnels alike."""

    def __init__(self, network: AgentNetwork) -> None:
        super().__init__(max_retries=Retry(total=False, redirect=False, raise_on_status=False))
        self._network = network
        tls_context(network, DEFAULT_CA_BUNDLE_PATH)  # a bad setting fails when the client is made

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if verify is False:
            return host, pool
        roots = pool.pop("ca_certs", None) or pool.pop("ca_cert_dir", None) or DEFAULT_CA_BUNDLE_PATH
        pool["ssl_context"] = tls_context(self._network, str(roots))
        return host, pool


@functools.cache
def tls_context(network: AgentNetwork, roots: str) -> ssl.SSLContext:
    """Built once per settings and roots. Raises InputError when the agent's CA or client certificate
    cannot be loaded."""
    context = create_urllib3_context()
    context.load_verify_locations(**{"capath" if os.path.isdir(roots) else "cafile": roots})
    try:
        if network.ca_file:
            context.load_verify_locations(cafile=network.ca_file)
        if network.client_cert:
            context.load_cert_chain(
                network.client_cert, network.client_key or None, network.client_key_password or None
            )
    except (ssl.SSLError, OSError) as exc:
        raise InputError(
            f"the agent's certificate settings cannot be used ({exc})",
            "check that Agent.CAInfo is a PEM CA certificate and that Agent.ClientCert, "
            "Agent.ClientCertKey and Agent.ClientCertPassword belong together",
        ) from exc
    return context
