"""The agent's proxy and certificate settings, read in one place, for every HTTP call the package makes.

    >>> network = AgentNetwork.from_variables({"AGENT_PROXYURL": "http://proxy.contoso.com:8080",
    ...     "AGENT_PROXYBYPASSLIST": '["[.]internal[.]contoso[.]com$"]'})
    >>> network.proxy_for("https://contoso.vault.azure.net/keys/slsa")
    'http://proxy.contoso.com:8080'
    >>> network.proxy_for("https://tfs.internal.contoso.com/tfs/") is None
    True

An agent configured behind a proxy (`config --proxyurl --proxyusername --proxypassword`, `.proxybypass`)
or with certificates (`--sslcacert`, `--sslclientcert`, `--sslclientcertkey`, `--sslclientcertpassword`)
hands them to every task as variables, and sets no HTTPS_PROXY: `AGENT_PROXYURL`,
`AGENT_PROXYUSERNAME`, the secret `SECRET_AGENT_PROXYPASSWORD`, `AGENT_PROXYBYPASSLIST` (a JSON array of
regular expressions), `AGENT_CAINFO`, `AGENT_CLIENTCERT`, `AGENT_CLIENTCERTKEY`, the secret
`SECRET_AGENT_CLIENTCERTPASSWORD` and `AGENT_SKIPCERTVALIDATION`. Routing follows the agent's own:
loopback hosts go direct, and so does every URL whose `scheme://host[:port]` a bypass expression
matches (case-insensitively); so does the instance metadata address 169.254.169.254, which no proxy
can reach. Without any of these variables nothing here applies and the SDKs keep their defaults
(HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit

from slsa_provenance.azure import vso
from slsa_provenance.errors import Error, InputError

VARIABLES = (
    "AGENT_PROXYURL",
    "AGENT_PROXYUSERNAME",
    "SECRET_AGENT_PROXYPASSWORD",
    "AGENT_PROXYPASSWORD",
    "AGENT_PROXYBYPASSLIST",
    "AGENT_CAINFO",
    "AGENT_CLIENTCERT",
    "AGENT_CLIENTCERTKEY",
    "SECRET_AGENT_CLIENTCERTPASSWORD",
    "AGENT_CLIENTCERTPASSWORD",
    "AGENT_SKIPCERTVALIDATION",
)
_INSTANCE_METADATA = "169.254.169.254"
_PROXY_FIX = "correct the agent's proxy settings (config --proxyurl, or the .proxy and .proxybypass files)"


@dataclass(frozen=True)
class AgentNetwork:
    """`proxy` has no credentials in it; `username` and `password` are kept apart (never in repr)."""

    proxy: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    bypass: tuple[re.Pattern[str], ...] = ()
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    client_key_password: str = field(default="", repr=False)

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> AgentNetwork | None:
        """The settings from the agent's `VARIABLES` (missing ones empty), or None when the agent hands
        none over. Every secret is masked before this returns. Raises InputError for a malformed proxy
        URL, bypass list or missing certificate file."""
        return _parse(tuple(variables.get(name, "").strip() for name in VARIABLES))

    @property
    def has_tls_settings(self) -> bool:
        return bool(self.ca_file or self.client_cert)

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL (with credentials) to reach `url` through, or None to connect directly."""
        if not self.proxy or self.bypassed(url):
            return None
        if not self.username:
            return self.proxy
        parts = urlsplit(self.proxy)
        userinfo = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}"
        return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()

    def bypassed(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host == "localhost" or host == _INSTANCE_METADATA or _is_loopback(host):
            return True
        default = {"https": 443, "http": 80}.get(parts.scheme.lower())
        port = f":{parts.port}" if parts.port and parts.port != default else ""
        target = f"{parts.scheme.lower()}://{host}{port}"
        return any(pattern.search(target) for pattern in self.bypass)

    def refused(self, url: str, status: str) -> Error:
        """The error for a proxy that answered CONNECT with `status` (e.g. '407'): names the proxy
        and the user, never the password."""
        host = urlsplit(url).netloc
        if status == "407" and self.username:
            return Error(
                f"the agent's proxy {self.proxy} refused the credentials of proxy user {self.username!r} "
                f"(407 Proxy Authentication Required) on the way to {host}",
                "correct the proxy username and password the agent was configured with "
                "(config --proxyusername --proxypassword)",
            )
        if status == "407":
            return Error(
                f"the agent's proxy {self.proxy} requires authentication (407) on the way to {host}, "
                "and the agent has no proxy credentials",
                "configure the agent with --proxyusername and --proxypassword",
            )
        return Error(
            f"the agent's proxy {self.proxy} refused to connect to {host} ({status})",
            f"allow {host} on the proxy, or add it to the agent's proxy bypass list",
        )


@functools.cache
def _parse(values: tuple[str, ...]) -> AgentNetwork | None:
    """Cached per distinct settings, so each secret is masked once per process."""
    settings = dict(zip(VARIABLES, values, strict=True))
    password = settings["SECRET_AGENT_PROXYPASSWORD"] or settings["AGENT_PROXYPASSWORD"]
    key_password = settings["SECRET_AGENT_CLIENTCERTPASSWORD"] or settings["AGENT_CLIENTCERTPASSWORD"]
    proxy, username = "", settings["AGENT_PROXYUSERNAME"]
    if settings["AGENT_PROXYURL"]:
        proxy, embedded_user, embedded_password = _proxy_url(settings["AGENT_PROXYURL"])
        if embedded_user and not username:
            username, password = embedded_user, embedded_password
    for secret in (password, quote(password, safe=""), key_password):
        if secret:
            vso.set_secret(secret)
    if settings["AGENT_SKIPCERTVALIDATION"].lower() == "true":
        print(
            "WARNING: the agent skips certificate validation (Agent.SkipCertValidation); this step does "
            "not: provenance confirmed or signed over unverified TLS would prove nothing. Give the agent "
            "the CA instead (--sslcacert)",
            file=sys.stderr,
        )
    network = AgentNetwork(
        proxy=proxy,
        username=username if proxy else "",
        password=password if proxy else "",
        bypass=_bypass_list(settings["AGENT_PROXYBYPASSLIST"]) if proxy else (),
        ca_file=_existing(settings["AGENT_CAINFO"], "AGENT_CAINFO", "the CA certificate (Agent.CAInfo)"),
        client_cert=_existing(settings["AGENT_CLIENTCERT"], "AGENT_CLIENTCERT", "the client certificate"),
        client_key=_existing(settings["AGENT_CLIENTCERTKEY"], "AGENT_CLIENTCERTKEY", "its private key"),
        client_key_password=key_password,
    )
    if network.client_key and not network.client_cert:
        raise InputError(
            "AGENT_CLIENTCERTKEY is set without AGENT_CLIENTCERT",
            "configure the agent's client certificate with --sslclientcert and --sslclientcertkey",
        )
    return network if network.proxy or network.has_tls_settings else None


def _proxy_url(raw: str) -> tuple[str, str, str]:
    """(proxy URL without user info, user, password). Raises InputError naming the URL without them."""
    parts = urlsplit(raw)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not _valid_port(parts):
        raise InputError(
            f"the agent's proxy URL (AGENT_PROXYURL) {shown!r} is not an http:// or https:// URL", _PROXY_FIX
        )
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    return shown.rstrip("/"), user, password


def _valid_port(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018  (parsing it is the check)
    except ValueError:
        return False
    return True


def _bypass_list(raw: str) -> tuple[re.Pattern[str], ...]:
    if not raw:
        return ()
    try:
        entries = json.loads(raw)
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise InputError(
            f"the agent's proxy bypass list (AGENT_PROXYBYPASSLIST) is {raw[:200]!r}, not a JSON array "
            "of strings",
            _PROXY_FIX,
        )
    patterns = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            patterns.append(re.compile(entry, re.IGNORECASE))
        except re.error as exc:
            raise InputError(
                f"the agent's proxy bypass list holds {entry!r}, which is not a regular expression ({exc})",
                "fix that line of the agent's .proxybypass file",
            ) from exc
    return tuple(patterns)


def _existing(path: str, variable: str, what: str) -> str:
    if path and not Path(path).is_file():
        raise InputError(
            f"{variable} names {what} {path}, which is not a readable file",
            "fix the agent's certificate settings (config --sslcacert, --sslclientcert, --sslclientcertkey)",
        )
    return path


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
