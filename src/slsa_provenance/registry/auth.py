"""Answers to a registry's 401 challenge: Azure Container Registry, docker logins, or anonymous.

    >>> Challenge.parse('Bearer realm="https://r.azurecr.io/oauth2/token",service="r.azurecr.io"').scheme
    'bearer'

Which credentials answer a `Bearer` challenge, in order:
1. a docker login for the registry's host (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`:
   `credHelpers`, then `auths`, then `credsStore`, as the docker CLI reads them). An identity token
   is traded at the realm with the OAuth2 refresh grant, a user name and password with a GET of the
   realm (the distribution token protocol);
2. Azure Container Registry through the task's service connection, when the realm is ACR's
   `/oauth2/token` and a connection is set (outside a pipeline also DefaultAzureCredential for an
   `*.azurecr.io` host; inside one the agent machine's identity is never used): an Entra token for
   `https://containerregistry.azure.net/.default`, traded at the realm's origin `/oauth2/exchange`
   for a refresh token, then at the realm for the challenge's scope;
3. anonymous: a GET of the realm without credentials.
The URLs come from the challenge, never guessed, and must be HTTPS. Every token is masked.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from slsa_provenance import untrusted
from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.registry.reference import Response

ACR_SCOPE = "https://containerregistry.azure.net/.default"
ACR_DOMAINS = (".azurecr.io", ".azurecr.cn", ".azurecr.us")
_PARAMETER = re.compile(r'(\w+)="([^"]*)"')
Send = Callable[..., "Response"]


@dataclass(frozen=True)
class Challenge:
    scheme: str
    parameters: Mapping[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        scheme, _, rest = header.strip().partition(" ")
        if not scheme:
            return None
        return cls(scheme.lower(), dict(_PARAMETER.findall(rest)))


@dataclass(frozen=True)
class Login:
    """A docker login: a user name and password, or an identity (refresh) token."""

    username: str = ""
    secret: str = ""
    identity_token: str = ""


class RegistryCredentials:
    """The credentials for one registry host, with the tokens obtained, cached by scope."""

    def __init__(self, host: str, run: AgentRun) -> None:
        self.host, self.run = host, run
        self._tokens: dict[str, dict[str, str]] = {}
        self._acr_refresh = ""
        self._login: Login | None = docker_login(host, run.docker_config) if run.docker_config else None

    def cached(self, scope: str) -> dict[str, str]:
        return self._tokens.get(scope, {})

    def answer(self, challenge: Challenge, scope: str, send: Send, renew: bool = False) -> dict[str, str]:
        """The Authorization header that answers `challenge` for `scope`.

        Raises Error when a token service refuses, InputError for a challenge we cannot answer.
        """
        if challenge.scheme == "basic":
            if not self._login or not self._login.username:
                raise InputError(
                    f"registry {self.host} asks for a user name and password",
                    "docker login to it first, or set DOCKER_CONFIG to the folder of a config.json with one",
                )
            raw = f"{self._login.username}:{self._login.secret}".encode()
            header = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        elif challenge.scheme == "bearer":
            header = {"Authorization": "Bearer " + self._bearer(challenge, scope, send, renew)}
        else:
            raise InputError(
                f"registry {self.host} asks for {challenge.scheme} authentication",
                "use a registry with token or basic auth",
            )
        self._tokens[scope] = header
        return header

    def _bearer(self, challenge: Challenge, scope: str, send: Send, renew: bool) -> str:
        realm, service = challenge.parameters.get("realm", ""), challenge.parameters.get("service", "")
        if not realm.startswith("https://"):
            raise Error(
                f"registry {self.host} sends token requests to {realm or 'nowhere'}",
                "token services must use HTTPS",
            )
        if self._login and self._login.identity_token:
            return self._refresh_grant(realm, service, scope, self._login.identity_token, send)
        if not self._login and self._acr(realm):
            if renew or not self._acr_refresh:
                self._acr_refresh = self._exchange(realm, service, send)
            return self._refresh_grant(realm, service, scope, self._acr_refresh, send)
        query = urlencode({"service": service, "scope": scope})
        headers = {}
        if self._login:
            raw = f"{self._login.username}:{self._login.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        response = send("GET", f"{realm}{'&' if '?' in realm else '?'}{query}", headers)
        document = _json(response, f"the token service of {self.host}")
        return _token(document.get("token") or document.get("access_token"), self.host)

    def _acr(self, realm: str) -> bool:
        """ACR's exchange: with the task's service connection, or outside a pipeline (where the
        machine's own Azure identity is the user's) for an `*.azurecr.io` host."""
        connection = self.run.service_connection
        return urlsplit(realm).path == "/oauth2/token" and (
            connection is not None or (self.host.endswith(ACR_DOMAINS) and not self.run.in_pipeline)
        )

    def _exchange(self, realm: str, service: str, send: Send) -> str:
        """Entra token → ACR refresh token, at the realm's origin."""
        from slsa_provenance.azure.credentials import from_service_connection

        entra = from_service_connection(self.run).get_token(ACR_SCOPE).token
        vso.set_secret(entra)
        parts = urlsplit(realm)
        form = {"grant_type": "access_token", "service": service, "access_token": entra}
        if self.run.service_connection and self.run.service_connection.tenant:
            form["tenant"] = self.run.service_connection.tenant
        response = send(
            "POST",
            f"{parts.scheme}://{parts.netloc}/oauth2/exchange",
            {"Content-Type": "application/x-www-form-urlencoded"},
            urlencode(form).encode(),
        )
        if response.status in (400, 401, 403):
            raise Error(
                f"registry {self.host} refused the service connection's Entra token ({response.status})",
                "give the service connection's identity the AcrPull role (AcrPush to attach) on the registry",
            )
        return _token(_json(response, f"the token exchange of {self.host}").get("refresh_token"), self.host)

    def _refresh_grant(self, realm: str, service: str, scope: str, refresh: str, send: Send) -> str:
        form = {
            "grant_type": "refresh_token",
            "service": service,
            "scope": scope,
            "refresh_token": refresh,
            "client_id": "slsa-provenance",
        }
        response = send(
            "POST", realm, {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(form).encode()
        )
        if response.status in (400, 401, 403):
            raise Error(
                f"the token service of {self.host} refused a token for {scope} ({response.status})",
                "check the identity's role on the registry (AcrPull reads, AcrPush attaches) or its login",
            )
        return _token(_json(response, f"the token service of {self.host}").get("access_token"), self.host)


def _json(response: Response, what: str) -> dict[str, Any]:
    if response.status != 200:
        raise Error(f"{what} answered {response.status}", "check the registry's credentials and status")
    try:
        document = untrusted.loads(response.body)
    except ValueError as exc:
        raise Error(f"{what} answered something other than JSON", "check the registry's URL") from exc
    if not isinstance(document, dict):
        raise Error(f"{what} answered something other than a JSON object", "check the registry's URL")
    return document


def _token(value: object, host: str) -> str:
    if not isinstance(value, str) or not value:
        raise Error(
            f"the token service of {host} answered without a token", "check the registry's credentials"
        )
    vso.set_secret(value)
    return value


def docker_login(host: str, config_folder: Path) -> Login | None:
    """The docker CLI's login for `host` in `config_folder` (DOCKER_CONFIG or ~/.docker), or None.
    Raises InputError for an unreadable config."""
    path = config_folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = untrusted.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the docker config {path}", "fix or remove the file") from exc
    if not isinstance(config, dict):
        raise InputError(f"the docker config {path} is not a JSON object", "fix or remove the file")
    names = (
        ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
        if host == "registry-1.docker.io"
        else (host,)
    )
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    for name in names:
        helper = helpers.get(name) if isinstance(helpers, dict) else None
        if isinstance(helper, str) and helper:
            return _from_helper(helper, name)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key, entry in (auths or {}).items():
        if _auth_host(key) in names and isinstance(entry, dict):
            login = _from_entry(entry)
            if login:
                return login
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        for name in names:
            login = _from_helper(store, name, missing_ok=True)
            if login:
                return login
    return None


def _auth_host(key: str) -> str:
    """The host of an `auths` key: `https://host/v1/` and `host` alike."""
    return urlsplit(key if "://" in key else f"https://{key}").netloc or key


def _from_entry(entry: Mapping[str, Any]) -> Login | None:
    login = None
    if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
        login = Login(identity_token=entry["identitytoken"])
    elif isinstance(entry.get("auth"), str) and entry["auth"]:
        username, _, secret = base64.b64decode(entry["auth"]).decode("utf-8", "replace").partition(":")
        login = Login(username, secret)
    elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        login = Login(entry["username"], entry["password"])
    if login:
        vso.set_secret(login.secret or login.identity_token)
    return login


def _from_helper(helper: str, host: str, missing_ok: bool = False) -> Login | None:
    """`docker-credential-<helper> get`, given the host on stdin, as the docker CLI calls it (in the
    step's own environment, as the docker CLI runs it in its own)."""
    import subprocess  # here: most runs call no credential helper (subprocess takes 3 ms to import)

    program = f"docker-credential-{helper}"
    try:
        run = subprocess.run(  # noqa: S603 - the program name comes from the user's own docker config
            [program, "get"], input=host.encode(), capture_output=True, timeout=60, check=False
        )
    except OSError as exc:
        raise InputError(
            f"the docker credential helper {program} cannot run: {exc.strerror}",
            "install it or fix the docker config",
        ) from exc
    if run.returncode != 0:
        if missing_ok:
            return None
        raise InputError(
            f"the docker credential helper {program} has no login for {host}", f"docker login {host} first"
        )
    try:
        answer = json.loads(run.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"the docker credential helper {program} answered something unexpected", "update the helper"
        ) from exc
    vso.set_secret(secret)
    return Login(identity_token=secret) if username == "<token>" else Login(username, secret)
