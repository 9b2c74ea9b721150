"""A real registry for the tests: Debian's docker-registry (distribution 2.8.2) on 127.0.0.1 with TLS
from the test CA and token auth from `AcrTokens`, a local token service speaking ACR's protocol.

- `AcrTokens`: POST /oauth2/exchange (an Entra token from the fake Entra → a refresh token), POST
  /oauth2/token (refresh grant → an access token for the scope, cut down to what the identity may do),
  GET /oauth2/token (the distribution token protocol: Basic auth for a docker login, or anonymous).
  Tokens are ES256 JWTs with an `x5c` certificate the registry trusts (`rootcertbundle`).
- `DockerRegistry`: the `docker-registry serve` process with a config written at test time.
- `push_image`: a small image (config + one layer) pushed with plain `requests` and a token minted
  here, independent of the client under test; `raw_get` reads manifests back the same way.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from fakes import CertificateAuthority, Entra, HttpsServer, Request, Response, b64url, json_response

ISSUER = "Azure Container Registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class AcrTokens(HttpsServer):
    def __init__(self, ca: CertificateAuthority, folder: Path) -> None:
        super().__init__(ca)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.signer_pem = folder / "token-signer.crt"
        self.signer_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.service = ""
        self.entra: Entra | None = None
        self.identity_actions: dict[str, set[str]] = {}
        """What each identity may do; the service connection's identity is 'sp'."""
        self.logins: dict[str, str] = {}
        """Docker logins: user name → password (pull and push)."""
        self.refresh_tokens: dict[str, str] = {}
        self.exchanges: list[dict[str, str]] = []
        self.route("POST", r"/oauth2/exchange", self._exchange)
        self.route("POST", r"/oauth2/token", self._refresh)
        self.route("GET", r"/oauth2/token", self._basic)

    def mint(self, access: list[dict[str, Any]], subject: str = "test") -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": self.service,
            "nbf": now - 5,
            "iat": now,
            "exp": now + 3600,
            "jti": str(uuid.uuid4()),
            "sub": subject,
            "access": access,
        }
        head = b64url(json.dumps({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}).encode())
        body = b64url(json.dumps(claims).encode())
        r, s = decode_dss_signature(self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
        return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def token_for(self, repository: str, actions: str = "pull,push") -> str:
        return self.mint([{"type": "repository", "name": repository, "actions": actions.split(",")}])

    def _access(self, scopes: list[str], allowed: set[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        return access

    def _exchange(self, request: Request) -> Response:
        form = request.form()
        self.exchanges.append(form)
        issued = self.entra.issued if self.entra else []
        if (
            form.get("grant_type") != "access_token"
            or form.get("service") != self.service
            or form.get("access_token") not in issued
        ):
            return json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad exchange"}]}, 401)
        refresh = "refresh-" + uuid.uuid4().hex
        self.refresh_tokens[refresh] = "sp"
        return json_response({"refresh_token": refresh})

    def _refresh(self, request: Request) -> Response:
        form = request.form()
        identity = self.refresh_tokens.get(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or form.get("service") != self.service or not identity:
            return json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad refresh"}]}, 401)
        allowed = self.identity_actions.get(identity, {"pull", "push"})
        scopes = [v for k, v in _pairs(request.body.decode()) if k == "scope"]
        return json_response({"access_token": self.mint(self._access(scopes, allowed), identity)})

    def _basic(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        allowed: set[str] = set()
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.logins.get(user) != password:
                return json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]}, 401)
            allowed = {"pull", "push"}
        scope = request.query.get("scope", "")
        token = self.mint(self._access([scope] if scope else [], allowed))
        return json_response({"token": token, "access_token": token})


def _pairs(form: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(form)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DockerRegistry:
    """`docker-registry serve` with TLS and token auth, storage in `folder`."""

    def __init__(self, ca: CertificateAuthority, tokens: AcrTokens, folder: Path) -> None:
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.ca, self.tokens = ca, tokens
        tokens.service = self.host
        config = folder / "config.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "version": 0.1,
                    "log": {"level": "error", "accesslog": {"disabled": True}},
                    "storage": {
                        "filesystem": {"rootdirectory": str(folder / "data")},
                        "delete": {"enabled": True},
                    },
                    "http": {
                        "addr": self.host,
                        "tls": {"certificate": str(ca.cert_file), "key": str(ca.key_file)},
                    },
                    "auth": {
                        "token": {
                            "realm": f"{tokens.url}/oauth2/token",
                            "service": self.host,
                            "issuer": ISSUER,
                            "rootcertbundle": str(tokens.signer_pem),
                        }
                    },
                }
            )
        )
        self.log = (folder / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [shutil.which("docker-registry") or "docker-registry", "serve", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "")},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {(folder / 'registry.log').read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def _session(self, repository: str) -> requests.Session:
        session = requests.Session()
        session.verify = str(self.ca.ca_pem)
        session.headers["Authorization"] = f"Bearer {self.tokens.token_for(repository)}"
        return session

    def push_blob(self, repository: str, data: bytes) -> dict[str, Any]:
        session = self._session(repository)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = session.post(f"https://{self.host}/v2/{repository}/blobs/uploads/", timeout=10)
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        done = session.put(
            f"{location}{'&' if '?' in location else '?'}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert done.status_code == 201, done.text
        return {"digest": digest, "size": len(data)}

    def push_image(self, repository: str, tag: str = "v1") -> str:
        """A small image made here; returns its manifest digest."""
        layer = self.push_blob(repository, os.urandom(512))
        config = self.push_blob(
            repository,
            json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
                }
            ).encode(),
        )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
            }
        ).encode()
        return self.put_manifest(repository, tag, manifest, OCI_MANIFEST)

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        answer = self._session(repository).put(
            f"https://{self.host}/v2/{repository}/manifests/{reference}",
            data=body,
            headers={"Content-Type": media_type},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get(
        self, repository: str, path: str, accept: str = f"{OCI_MANIFEST}, {OCI_INDEX}"
    ) -> requests.Response:
        return self._session(repository).get(
            f"https://{self.host}/v2/{repository}/{path}", headers={"Accept": accept}, timeout=10
        )


class ReferrersProxy(HttpsServer):
    """In front of the registry, the part of distribution-spec v1.1 that 2.8.2 lacks: `OCI-Subject` on
    a manifest PUT with a `subject` (unless `oci_subject` is off) and `GET /v2/<repo>/referrers/<digest>`
    answered with an image index (authorised by the registry itself). `after_tag_put`, when set, runs
    once after the next tag-index PUT: a concurrent writer."""

    def __init__(self, ca: CertificateAuthority, registry: DockerRegistry) -> None:
        super().__init__(ca)
        self.registry = registry
        self.oci_subject = True
        self.referrers: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.after_tag_put: Any = None
        self.page_size = 100
        self.route("GET", r"/v2/(.+)/referrers/(sha256:[0-9a-f]{64})", self._referrers)
        for method in ("GET", "HEAD", "POST", "PUT"):
            self.route(method, r"/v2/.*", self._forward)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _upstream(self, request: Request, method: str, path: str) -> requests.Response:
        query = "&".join(f"{k}={v}" for k, v in request.query.items())
        headers = {
            k: v for k, v in request.headers.items() if k in ("authorization", "accept", "content-type")
        }
        return requests.request(
            method,
            f"https://{self.registry.host}{path}{'?' + query if query else ''}",
            headers=headers,
            data=request.body or None,
            verify=str(self.registry.ca.ca_pem),
            allow_redirects=False,
            timeout=10,
        )

    def _forward(self, request: Request) -> Response:
        answer = self._upstream(request, request.method, request.path)
        keep = (
            "content-type",
            "docker-content-digest",
            "location",
            "www-authenticate",
            "etag",
            "content-length",
        )
        headers = {k: v for k, v in answer.headers.items() if k.lower() in keep}
        if request.method == "PUT" and "/manifests/" in request.path and answer.status_code == 201:
            document = json.loads(request.body)
            repository = request.path[4 : request.path.index("/manifests/")]
            if "subject" in document:
                entry = {
                    "mediaType": request.headers.get("content-type", ""),
                    "digest": "sha256:" + hashlib.sha256(request.body).hexdigest(),
                    "size": len(request.body),
                    "artifactType": document.get("artifactType") or document["config"]["mediaType"],
                    "annotations": document.get("annotations", {}),
                }
                self.referrers.setdefault((repository, document["subject"]["digest"]), []).append(entry)
                if self.oci_subject:
                    headers["OCI-Subject"] = document["subject"]["digest"]
            elif "/manifests/sha256-" in request.path and self.after_tag_put:
                hook, self.after_tag_put = self.after_tag_put, None
                hook(repository, request.path.rsplit("/", 1)[1])
        return answer.status_code, headers, answer.content

    def _referrers(self, request: Request) -> Response:
        repository, _, digest = request.path[4:].partition("/referrers/")
        probe = self._upstream(request, "HEAD", f"/v2/{repository}/manifests/{digest}")
        if probe.status_code == 401:
            return 401, {"WWW-Authenticate": probe.headers["WWW-Authenticate"]}, b""
        entries = self.referrers.get((repository, digest), [])
        start = int(request.query.get("last", "0"))
        headers = {"Content-Type": OCI_INDEX}
        if start + self.page_size < len(entries):  # the next page, as a path relative to the host
            headers["Link"] = (
                f'</v2/{repository}/referrers/{digest}?last={start + self.page_size}>; rel="next"'
            )
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries[start : start + self.page_size],
        }
        return 200, headers, json.dumps(index).encode()
