"""Local HTTPS servers that speak the real protocols, so the real Azure SDK clients run against them.

- `Entra`: POST /{tenant}/oauth2/v2.0/token, client credentials with a client assertion that must be
  the ID token the fake Azure DevOps issued for the service connection, a client secret, or a JWT
  signed with the private key of a registered certificate (checked: signature, thumbprint, claims);
  managed identity as App Service (IDENTITY_ENDPOINT) and as a VM's IMDS speak them.
- `AzureDevOps`: the OIDC token route (bearer System.AccessToken, serviceConnectionId) and the REST
  routes Builds - Get, Definitions - Get, Runs - Get, serving bodies the test provides. With
  `newest_version` it is an Azure DevOps Server: a newer api-version is refused the way Server refuses
  it (HTTP 400, VssVersionOutOfRangeException, the same message), each refusal logged in `refused`;
  a release version of an endpoint still in preview at it is refused too, and there is no OIDC route.
- `KeyVault`: the 401 challenge, GET /keys/{name}[/{version}] and POST /keys/{name}/{version}/sign with a
  real key, answering ECDSA as raw r||s the way Key Vault does.

Every server logs its requests and can be told to inject faults (a status with headers, a
connection reset, a response slower than the client's timeout, a malformed body).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

Response = tuple[int, dict[str, str], bytes]
Handler = Callable[["Request"], Response]
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return (
        status,
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        json.dumps(body).encode(),
    )


class CertificateAuthority:
    """A CA made at test time and one leaf certificate for 127.0.0.1, localhost and *.slsa.test (names
    that only the proxy of the proxy tests resolves)."""

    def __init__(self, folder: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slsa-provenance test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("*.slsa.test"),
                        x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = folder / "ca.pem"
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = folder / "leaf.pem"
        self.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_file = folder / "leaf.key"
        self.key_file.write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Fault:
    """What to do instead of answering: a response, or 'reset', 'slow', 'not-json'."""

    kind: str
    response: Response | None = None
    seconds: float = 0.0


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # injected resets and clients that time out end requests abruptly, by design


@dataclass
class HttpsServer:
    ca: CertificateAuthority
    routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    faults: list[tuple[re.Pattern[str], Fault]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    hostname: str = "127.0.0.1"  # the name in its URLs; it always listens on 127.0.0.1
    client_ca: Path | None = None  # set: only clients with a certificate this CA issued get an answer

    def start(self) -> HttpsServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                server.requests.append(request)
                fault = server._take_fault(request)
                if fault and fault.kind == "reset":  # RST: linger 0, then close every reference
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.rfile.close()
                    self.wfile.close()
                    self.connection.close()
                    return
                if fault and fault.kind == "slow":
                    time.sleep(fault.seconds)
                status, headers, body = fault.response if fault and fault.response else server._route(request)
                if fault and fault.kind == "not-json":
                    headers, body = {"Content-Type": "application/json"}, b'{"truncated": '
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:  # a HEAD answer names the length of what GET sends
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _serve  # noqa: N815

        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        context = self.ca.server_context()
        if self.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"https://{self.hostname}:{self._httpd.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern, re.IGNORECASE), handler))

    def inject(self, pattern: str, fault: Fault, times: int = 1) -> None:
        """The next `times` requests whose path matches `pattern` get `fault`."""
        self.faults.extend([(re.compile(pattern, re.IGNORECASE), fault)] * times)

    def _take_fault(self, request: Request) -> Fault | None:
        for index, (pattern, fault) in enumerate(self.faults):
            if pattern.search(request.path):
                del self.faults[index]
                return fault
        return None

    def _route(self, request: Request) -> Response:
        for method, pattern, handler in self.routes:
            if method == request.method and pattern.fullmatch(request.path):
                return handler(request)
        return json_response({"message": f"no route for {request.method} {request.path}"}, 404)


class Entra(HttpsServer):
    """Issues an access token for a client assertion equal to an ID token the fake ADO issued."""

    def __init__(self, ca: CertificateAuthority, tenant: str, client_id: str) -> None:
        super().__init__(ca)
        self.tenant, self.client_id = tenant, client_id
        self.valid_assertions: set[str] = set()
        self.issued: list[str] = []
        self.client_secret = ""
        self.route("POST", rf"/{tenant}/oauth2/v2.0/token", self._token)
        self.route("GET", rf"/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        self.certificate: x509.Certificate | None = None  # a service principal's certificate credential
        self.identity_header = "identity-header-" + secrets.token_hex(8)
        self.route("GET", r"/msi/token", self._managed_identity)
        self.route("GET", r"/metadata/identity/oauth2/token", self._imds)

    def _imds(self, request: Request) -> Response:
        """A VM's instance metadata service: `Metadata: true`, api-version and resource required."""
        if request.headers.get("metadata") != "true" or not request.query.get("resource"):
            return json_response(
                {"error": "invalid_request", "error_description": "Required metadata header not specified"},
                400,
            )
        token = "imds-" + secrets.token_urlsafe(24)
        self.issued.append(token)
        now = int(time.time())
        return json_response(
            {
                "access_token": token,
                "client_id": self.client_id,
                "expires_in": "3599",
                "expires_on": str(now + 3599),
                "ext_expires_in": "3599",
                "not_before": str(now),
                "resource": request.query["resource"],
                "token_type": "Bearer",
            }
        )

    def _managed_identity(self, request: Request) -> Response:
        """App Service's managed identity endpoint (IDENTITY_ENDPOINT, X-IDENTITY-HEADER)."""
        if request.headers.get("x-identity-header") != self.identity_header or not request.query.get(
            "resource"
        ):
            return json_response({"error": "invalid_request"}, 400)
        token = "msi-" + secrets.token_urlsafe(24)
        self.issued.append(token)
        expires = str(int(time.time()) + 3600)
        return json_response(
            {
                "access_token": token,
                "expires_on": expires,
                "resource": request.query["resource"],
                "token_type": "Bearer",
            }
        )

    def _openid(self, request: Request) -> Response:
        base = f"{self.url}/{self.tenant}"
        return json_response(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": None,
            }
        )

    def _token(self, request: Request) -> Response:
        form = request.form()
        federated = form.get("client_assertion") in self.valid_assertions
        secret = bool(self.client_secret) and form.get("client_secret") == self.client_secret
        certified = self._signed_by_certificate(form)
        if not (federated or secret or certified) or form.get("client_id") != self.client_id:
            return json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS700213: No matching federated identity record found for presented assertion subject.",
                },
                401,
            )
        token = "entra-" + secrets.token_urlsafe(24)
        self.issued.append(token)
        return json_response({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _signed_by_certificate(self, form: dict[str, str]) -> bool:
        """A client assertion JWT (RFC 7523) signed with the registered certificate's key, naming it by
        thumbprint, issued by and for the client, addressed to this token endpoint, unexpired."""
        if self.certificate is None or form.get("client_assertion_type") != JWT_BEARER:
            return False
        try:
            header_part, claims_part, signature = form["client_assertion"].split(".")
            header, claims = json.loads(unb64url(header_part)), json.loads(unb64url(claims_part))
        except (KeyError, ValueError):
            return False
        named = str(header.get("x5t#S256", "")).rstrip("=") == b64url(
            self.certificate.fingerprint(hashes.SHA256())
        ) or str(header.get("x5t", "")).rstrip("=") == b64url(self.certificate.fingerprint(hashes.SHA1()))
        chosen = {
            "PS256": padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256.digest_size),
            "RS256": padding.PKCS1v15(),
        }.get(header.get("alg"))
        public = self.certificate.public_key()
        if not named or chosen is None or not isinstance(public, rsa.RSAPublicKey):
            return False
        try:
            public.verify(
                unb64url(signature), f"{header_part}.{claims_part}".encode(), chosen, hashes.SHA256()
            )
        except InvalidSignature:
            return False
        now = time.time()
        return (
            claims.get("aud") == f"{self.url}/{self.tenant}/oauth2/v2.0/token"
            and claims.get("iss") == claims.get("sub") == self.client_id
            and float(claims.get("nbf", now)) <= now + 60
            and float(claims.get("exp", 0)) > now - 60
        )


class AzureDevOps(HttpsServer):
    """The collection at /contoso/: OIDC tokens for the service connection and REST bodies."""

    def __init__(
        self,
        ca: CertificateAuthority,
        access_token: str,
        connection_id: str,
        entra: Entra,
        newest_version: str = "",
    ) -> None:
        super().__init__(ca)
        self.access_token, self.connection_id, self.entra = access_token, connection_id, entra
        self.newest_version = newest_version  # "": Azure DevOps Services; "7.0": Server 2022; "6.0": 2020
        self.refused: list[Request] = []
        self.bodies: dict[str, Any] = {}
        self.route(
            "POST",
            r"/contoso/[^/]+/_apis/distributedtask/hubs/[^/]+/plans/[^/]+/jobs/[^/]+/oidctoken",
            self._oidc,
        )
        self.route(
            "GET",
            r"/contoso/[^/]+/_apis/(build/builds/\d+|build/definitions/\d+|pipelines/\d+/runs/\d+)",
            self._rest,
        )
        self.route("GET", r"/contoso/_apis/git/repositories/[^/]+", self._rest)
        self.route("GET", r"/contoso/[^/]+/_apis/build/builds", self._rest)

    @property
    def collection(self) -> str:
        return f"{self.url}/contoso/"

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.access_token}"

    def _oidc(self, request: Request) -> Response:
        if self.newest_version:  # Server has no workload identity federation
            return json_response({"message": f"no route for {request.method} {request.path}"}, 404)
        if not self._authorized(request):
            return 401, {"Content-Type": "text/html"}, b"<html>sign in</html>"
        if (
            request.query.get("serviceConnectionId") != self.connection_id
            or request.query.get("api-version") != "7.1"
        ):
            return json_response({"message": "unknown service connection"}, 400)
        claims = {"sub": f"sc://contoso/web/{self.connection_id}", "aud": "api://AzureADTokenExchange"}
        token = ".".join(
            [b64url(b'{"alg":"RS256"}'), b64url(json.dumps(claims).encode()), b64url(secrets.token_bytes(32))]
        )
        self.entra.valid_assertions.add(token)
        return json_response({"oidcToken": token})

    def _rest(self, request: Request) -> Response:
        if not self._authorized(request):
            return json_response({"message": "TF400813: The user is not authorized"}, 401)
        key = re.sub(r"^/contoso/([^/]+/)?_apis/", "", request.path).lower()
        refusal = self._version_refusal(request, released=(7, 0) if key.startswith("pipelines/") else (1, 0))
        if refusal:
            return refusal
        if key == "build/builds":  # Builds - List, by definition and run name
            key += f"?definitions={request.query.get('definitions')}&buildNumber={request.query.get('buildNumber')}"
        if key not in self.bodies:
            return json_response({"message": f"{key} not found"}, 404)
        return json_response(self.bodies[key])

    def _version_refusal(self, request: Request, released: tuple[int, int]) -> Response | None:
        """Server's answer to an api-version newer than it knows, or to a release version of an endpoint
        that was still in preview at that version (Pipelines Runs before 7.0)."""
        asked = request.query.get("api-version", "")
        match = re.fullmatch(r"([0-9]+)\.([0-9]+)(-preview(\.[0-9]+)?)?", asked)
        if not match:
            return _vss_error("VssInvalidApiVersion", f"The API version '{asked}' is not valid.")
        version = (int(match.group(1)), int(match.group(2)))
        newest = self.newest_version or "7.2"
        if version > tuple(map(int, newest.split("."))):
            self.refused.append(request)
            return _vss_error(
                "VssVersionOutOfRangeException",
                f"The requested REST API version of {version[0]}.{version[1]} is out of range for this "
                f"server. The latest REST API version this server supports is {newest}.",
            )
        if version < released and not match.group(3):
            return _vss_error(
                "VssInvalidPreviewVersionException",
                f'The requested version "{asked}" of the resource is under preview. The -preview flag '
                f'must be supplied in the api-version for such requests. For example: "{asked}-preview"',
            )
        return None


def _vss_error(type_key: str, message: str) -> Response:
    """An Azure DevOps exception body, as Services and Server send it (status 400)."""
    return json_response(
        {
            "$id": "1",
            "innerException": None,
            "message": message,
            "typeName": f"Microsoft.VisualStudio.Services.WebApi.{type_key}, Microsoft.VisualStudio.Services.WebApi",
            "typeKey": type_key,
            "errorCode": 0,
            "eventId": 3000,
        },
        400,
    )


class KeyVault(HttpsServer):
    """A vault with real keys; answers the challenge, get-key and sign like Key Vault does."""

    def __init__(self, ca: CertificateAuthority, entra: Entra) -> None:
        super().__init__(ca)
        self.entra = entra
        self.keys: dict[str, tuple[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, str]] = {}
        self.route("GET", r"/keys/([^/]+)/?([^/]*)", self._get_key)
        self.route("POST", r"/keys/([^/]+)/([^/]+)/sign", self._sign)

    def add_key(self, name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, kty: str = "") -> str:
        """Returns the new version's kid."""
        version = secrets.token_hex(16)
        kty = kty or ("EC-HSM" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA-HSM")
        self.keys[name] = (version, key, kty)
        return f"{self.url}/keys/{name}/{version}"

    def _take_fault(self, request: Request) -> Fault | None:
        # Faults hit the requests that reach the service, not the SDK's unauthenticated probe.
        return super()._take_fault(request) if "authorization" in request.headers else None

    def _challenge(self, request: Request) -> Response | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.entra.issued:
            return None
        parent = self.hostname.split(".", 1)[
            1
        ]  # the SDK wants the vault's host to end with "." + the resource's
        challenge = f'Bearer authorization="{self.entra.url}/{self.entra.tenant}", resource="https://{parent}:{self.port}"'
        return json_response(
            {"error": {"code": "Unauthorized", "message": "AKV10000"}}, 401, {"WWW-Authenticate": challenge}
        )

    def _find(self, request: Request) -> tuple[str, str, Any, str] | Response:
        match = re.match(r"/keys/([^/]+)/?([^/]*)", request.path)
        assert match
        name, version = match.group(1), match.group(2)
        if name not in self.keys or (version and version != self.keys[name][0]):
            return json_response(
                {"error": {"code": "KeyNotFound", "message": f"A key with (name/id) {name} was not found"}},
                404,
            )
        current, key, kty = self.keys[name]
        return name, current, key, kty

    def _get_key(self, request: Request) -> Response:
        found = self._challenge(request) or self._find(request)
        if not isinstance(found, tuple) or len(found) == 3:
            return found  # type: ignore[return-value]
        name, version, key, kty = found
        jwk: dict[str, Any] = {
            "kid": f"{self.url}/keys/{name}/{version}",
            "kty": kty,
            "key_ops": ["sign", "verify"],
        }
        if isinstance(key, ec.EllipticCurvePrivateKey):
            numbers = key.public_key().public_numbers()
            size = (key.curve.key_size + 7) // 8
            jwk |= {
                "crv": {256: "P-256", 384: "P-384", 521: "P-521"}[key.curve.key_size],
                "x": b64url(numbers.x.to_bytes(size, "big")),
                "y": b64url(numbers.y.to_bytes(size, "big")),
            }
        else:
            numbers_rsa = key.public_key().public_numbers()
            jwk |= {
                "n": b64url(numbers_rsa.n.to_bytes((numbers_rsa.n.bit_length() + 7) // 8, "big")),
                "e": b64url(numbers_rsa.e.to_bytes(3, "big")),
            }
        return json_response(
            {"key": jwk, "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000}}
        )

    def _sign(self, request: Request) -> Response:
        found = self._challenge(request) or self._find(request)
        if not isinstance(found, tuple) or len(found) == 3:
            return found  # type: ignore[return-value]
        name, version, key, _ = found
        body = request.json()
        digest, algorithm = unb64url(body["value"]), body["alg"]
        chosen = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[algorithm[2:]]
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(chosen))))
            size = (key.curve.key_size + 7) // 8
            signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        elif algorithm.startswith("PS"):
            signature = key.sign(
                digest, padding.PSS(padding.MGF1(chosen), chosen.digest_size), utils.Prehashed(chosen)
            )
        else:
            signature = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(chosen))
        return json_response({"kid": f"{self.url}/keys/{name}/{version}", "value": b64url(signature)})
