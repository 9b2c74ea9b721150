"""HTTP settings shared by every Azure client: bounded retries that honour Retry-After, timeouts, and
the agent's proxy and certificates.

    >>> KeyClient(vault_url, credential, **run.http.client_options())   # doctest: +SKIP

azure-core's RetryPolicy retries 408, 429, 500, 502, 503 and 504 and connection failures with
exponential back-off, waiting as long as a `Retry-After` header asks (up to the cap below).
`SLSA_HTTP_RETRIES` and `SLSA_HTTP_TIMEOUT` tune it for slow or busy services. When the agent hands
over a proxy or certificates (network.py), the options carry a `transport` that applies them: every
client, credential or pipeline built with these options (or given `options["transport"]`) uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slsa_provenance.azure.network import AgentNetwork
from slsa_provenance.errors import InputError

DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "SlsaProvenance/1"


@dataclass(frozen=True)
class HttpSettings:
    """Read once per run (`AgentRun`); every client is built with `client_options()`."""

    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    network: AgentNetwork | None = None

    @classmethod
    def parse(cls, retries: str, timeout: str, network: AgentNetwork | None) -> HttpSettings:
        """From SLSA_HTTP_RETRIES and SLSA_HTTP_TIMEOUT as given. Raises InputError for a bad number."""
        return cls(
            int(_number("SLSA_HTTP_RETRIES", retries, DEFAULT_RETRIES, int)),
            _number("SLSA_HTTP_TIMEOUT", timeout, DEFAULT_TIMEOUT, float),
            network,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for an azure-core client or credential. A fresh dict and transport each
        time: callers add to the options, and each client owns (and closes) its transport."""
        options: dict[str, Any] = {
            "retry_total": self.retries,
            "retry_backoff_factor": 0.8,
            "retry_backoff_max": 30,
            "connection_timeout": self.timeout,
            "read_timeout": self.timeout,
            "user_agent": USER_AGENT,
        }
        if self.network:
            from slsa_provenance.azure.agent_transport import AgentTransport

            options["transport"] = AgentTransport(
                self.network, connection_timeout=self.timeout, read_timeout=self.timeout
            )
        return options


def _number(name: str, raw: str, default: float, kind: type[int] | type[float]) -> float:
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(f"{name} is {raw!r}", "set it to a non-negative number or leave it unset")
    return value
