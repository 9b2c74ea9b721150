"""A proxy.py plugin for the proxy tests: the proxy, and only the proxy, resolves `*.slsa.test` (to
127.0.0.1, where the local HTTPS fakes listen), so a client can reach those services only through it."""

from __future__ import annotations

from proxy.http.proxy import HttpProxyBasePlugin

DOMAIN = "slsa.test"


class ResolveTestNames(HttpProxyBasePlugin):  # type: ignore[misc]
    def resolve_dns(self, host: str, port: int) -> tuple[str | None, tuple[str, int] | None]:
        if host == DOMAIN or host.endswith("." + DOMAIN):
            return "127.0.0.1", None
        return None, None
