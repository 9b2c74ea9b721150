"""HTTP settings shared by every Azure client: bounded retries that honour Retry-After, timeouts, and
the agent's proxy and certificates.

    >>> KeyClient(vault_url, credential, **client_options(os.environ))   # doctest: +SKIP

azure-core's RetryPolicy retries 408, 429, 500, 502, 503 and 504 and connection failures with
exponential back-off, waiting as long as a `Retry-After` header asks (up to the cap below).
`SLSA_HTTP_RETRIES` and `SLSA_HTTP_TIMEOUT` tune it for slow or busy services. When the agent hands
over a proxy or certificates (network.py), the options carry a `transport` that applies them: every
client, credential or pipeline built with these options (or given `options["transport"]`) uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slsa_provenance.azure.network import AgentNetwork
from slsa_provenance.errors import InputError

DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "SlsaProvenance/1"


def client_options(env: Mapping[str, str]) -> dict[str, Any]:
    retries = _number(env, "SLSA_HTTP_RETRIES", DEFAULT_RETRIES, int)
    timeout = _number(env, "SLSA_HTTP_TIMEOUT", DEFAULT_TIMEOUT, float)
    options: dict[str, Any] = {
        "retry_total": int(retries),
        "retry_backoff_factor": 0.8,
        "retry_backoff_max": 30,
        "connection_timeout": timeout,
        "read_timeout": timeout,
        "user_agent": USER_AGENT,
    }
    network = AgentNetwork.from_environment(env)
    if network:
        from slsa_provenance.azure.agent_transport import AgentTransport

        options["transport"] = AgentTransport(network, connection_timeout=timeout, read_timeout=timeout)
    return options


def _number(env: Mapping[str, str], name: str, default: float, kind: type[int] | type[float]) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(f"{name} is {raw!r}", "set it to a non-negative number or leave it unset")
    return value
