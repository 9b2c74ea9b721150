"""A small OCI distribution client (distribution-spec v1.1) over azure-core: one request per fact.

    >>> with Registries(AgentRun.from_environment(os.environ)) as registries:   # doctest: +SKIP
    ...     repository = registries.repository(parse_reference("myacr.azurecr.io/app:v1"), push=True)
    ...     subject = repository.manifest_descriptor("v1")
    ...     layer = repository.push_blob(b"{}", "application/vnd.oci.empty.v1+json")

HTTPS only. Every request goes through azure-core's pipeline (bounded retries honouring
Retry-After, timeouts, redirects without the Authorization header, the agent's HTTP settings from
transport.py). A 401 is answered once with credentials for the challenge (`auth.py`) and
the request repeated; tokens are cached per scope, so a second request to the same repository
costs no token round trip. `requests` counts every HTTP exchange: token calls, retries and
redirects included.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from slsa_provenance import untrusted
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.registry.auth import Challenge, RegistryCredentials
from slsa_provenance.registry.reference import Descriptor, ImageReference, Response

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_LIST)
MAX_MANIFEST = 4 << 20
MAX_PAGES = 10
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
PUSH_REMEDY = (
    "grant the identity push rights on the repository: on Azure Container Registry the AcrPush role "
    "for the service connection's identity (AcrPull only reads); elsewhere a docker login that may push"
)
PULL_REMEDY = (
    "grant the identity read rights: on Azure Container Registry the AcrPull role for the service "
    "connection's identity; elsewhere a docker login (DOCKER_CONFIG) for this registry"
)


@dataclass
class Registries:
    """Connections to registries with one credential cache; a context manager that closes them."""

    run: AgentRun
    requests: int = 0
    """HTTP exchanges sent, retries and redirects included."""
    _credentials: dict[str, RegistryCredentials] = field(default_factory=dict)
    _client: Any = None

    def __enter__(self) -> Registries:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    def repository(self, reference: ImageReference, *, push: bool = False) -> Repository:
        credentials = self._credentials.setdefault(
            reference.host, RegistryCredentials(reference.host, self.run)
        )
        return Repository(self, reference, credentials, push)

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        limit: int = MAX_MANIFEST,
    ) -> Response:
        """One HTTP exchange; the body is read up to `limit` bytes. Raises Error when unreachable."""
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        if not url.startswith("https://"):
            raise InputError(f"refusing the plain-HTTP URL {url}", "registries are reached over HTTPS only")
        client = self._pipeline()
        request = HttpRequest(method, url, headers=dict(headers), content=body)
        options = self.run.http.client_options()
        try:
            response = client.send_request(
                request,
                stream=True,
                connection_timeout=options["connection_timeout"],
                read_timeout=options["read_timeout"],
            )
            if not request.url.startswith("https://"):  # redirected: anyone on the path could answer
                response.close()
                raise Error(
                    f"{url.split('?')[0]} redirected to the plain-HTTP URL {request.url.split('?')[0]}",
                    "registries are reached over HTTPS only: correct the registry's redirects",
                )
            data = bytearray()
            for chunk in response.iter_bytes() if method != "HEAD" else ():
                data += chunk
                if len(data) > limit:
                    response.close()
                    raise Error(
                        f"{url} answered more than {limit} bytes", "this is not a registry answer we expect"
                    )
        except AzureError as exc:
            raise Error(
                f"cannot reach {url.split('/v2/')[0]}: {str(exc).splitlines()[0]}",
                "check the registry's name and the agent's network, proxy and CA settings",
            ) from exc
        return Response(method, response.status_code, response.headers, bytes(data), request.url)

    def _pipeline(self) -> Any:
        if self._client is None:
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import (
                ProxyPolicy,
                RedirectPolicy,
                RetryPolicy,
                SansIOHTTPPolicy,
                UserAgentPolicy,
            )

            registries = self

            class _Count(SansIOHTTPPolicy):  # type: ignore[type-arg]
                def on_request(self, request: Any) -> None:  # every attempt: retries and redirects too
                    registries.requests += 1

            options = self.run.http.client_options()
            self._client = PipelineClient(
                base_url="https://registry.invalid",
                policies=[
                    UserAgentPolicy(options["user_agent"]),
                    ProxyPolicy(**options),
                    RetryPolicy(**options),
                    RedirectPolicy(),
                    _Count(),
                ],
                transport=options.get("transport"),
            )
        return self._client


class Repository:
    """One repository of one registry, read (pull) or written (pull and push)."""

    def __init__(
        self, registries: Registries, reference: ImageReference, credentials: RegistryCredentials, push: bool
    ) -> None:
        self.registries, self.reference, self.credentials = registries, reference, credentials
        self.scope = f"repository:{reference.repository}:{'pull,push' if push else 'pull'}"
        self.base = f"https://{reference.host}/v2/{reference.repository}"

    def manifest_descriptor(self, reference: str) -> Descriptor:
        """The manifest a tag or digest names, fetched and hashed (a `Docker-Content-Digest` header is
        only a claim: a tag could be answered with another image's digest). Raises InputError when it
        is not there, Error when the registry answers a digest with other content."""
        found = self.get_manifest(reference)
        if found is None:
            separator = "@" if reference.startswith("sha256:") else ":"
            raise InputError(
                f"image {self.reference.name}{separator}{reference} is not in its registry",
                "attest the image after it is pushed, and check its name, tag or digest",
            )
        if found[1].media_type not in MANIFEST_TYPES:
            raise Error(
                f"registry {self.reference.registry} served {reference} as {found[1].media_type!r}, "
                "not an image manifest or index",
                "use a registry that follows the OCI distribution spec",
            )
        return found[1]

    def get_manifest(
        self, reference: str, accept: tuple[str, ...] = MANIFEST_TYPES
    ) -> tuple[bytes, Descriptor] | None:
        """The manifest's bytes and descriptor, or None for a 404; the digest is checked when pinned."""
        response = self._call("GET", f"/manifests/{reference}", {"Accept": ", ".join(accept)})
        if response.status == 404:
            return None
        self._expect(response, (200,), f"the manifest {reference}")
        digest = "sha256:" + hashlib.sha256(response.body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise Error(
                f"registry {self.reference.registry} served {reference} with digest {digest}",
                "do not trust this registry's answers",
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.body, Descriptor(media_type, digest, len(response.body))

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> tuple[Descriptor, str]:
        """PUT a manifest by digest or tag: its descriptor and the `OCI-Subject` header ('' if none)."""
        response = self._call("PUT", f"/manifests/{reference}", {"Content-Type": media_type}, body)
        self._expect(response, (201,), f"the manifest {reference}")
        descriptor = Descriptor(media_type, "sha256:" + hashlib.sha256(body).hexdigest(), len(body))
        answered = response.headers.get("Docker-Content-Digest", descriptor.digest)
        if answered != descriptor.digest:
            raise Error(
                f"registry stored {reference} as {answered}, expected {descriptor.digest}",
                "do not trust this registry",
            )
        return descriptor, response.headers.get("OCI-Subject", "")

    def push_blob(self, data: bytes, media_type: str, *, new: bool = False) -> Descriptor:
        """Upload a blob unless the repository has it (HEAD; skipped for `new` content that cannot be
        there yet, such as a fresh signature), with a POST and a monolithic PUT."""
        descriptor = Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        if not new and self._call("HEAD", f"/blobs/{descriptor.digest}", {}).status == 200:
            return descriptor
        started = self._call("POST", "/blobs/uploads/", {"Content-Length": "0"}, b"")
        self._expect(started, (202,), "a blob upload")
        location = urljoin(f"{self.base}/blobs/uploads/", started.headers.get("Location", ""))
        joiner = "&" if "?" in location else "?"
        url = f"{location}{joiner}digest={descriptor.digest}"
        done = self._call("PUT", url, {"Content-Type": "application/octet-stream"}, data, absolute=True)
        self._expect(done, (201,), f"the blob {descriptor.digest}")
        return descriptor

    def get_blob(self, descriptor: Descriptor, limit: int) -> bytes:
        """A blob's bytes, checked against its digest. Raises Error for a missing or altered blob."""
        if descriptor.size > limit:
            raise Error(
                f"blob {descriptor.digest} is {descriptor.size} bytes", f"expected at most {limit} bytes"
            )
        response = self._call("GET", f"/blobs/{descriptor.digest}", {}, limit=limit)
        self._expect(response, (200,), f"the blob {descriptor.digest}")
        if "sha256:" + hashlib.sha256(response.body).hexdigest() != descriptor.digest:
            raise Error(
                f"blob {descriptor.digest} does not match its digest", "the registry served altered content"
            )
        return response.body

    def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        """The referrers API's descriptors, or None when the registry has no such API (a 404, 400 or
        406, or an answer that is not an image index: the spec's fallback rule)."""
        response = self._call("GET", f"/referrers/{digest}", {"Accept": OCI_INDEX})
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if response.status != 200 or content_type != OCI_INDEX:
            if response.status in (401, 403):
                self._expect(response, (200,), "the referrers of " + digest)
            return None
        found = manifests_of(response.body, f"the referrers of {digest}")
        for _ in range(MAX_PAGES):  # the spec lets a registry paginate with `Link: <…>; rel="next"`
            following = _NEXT.search(response.headers.get("Link", ""))
            if not following:
                break
            url = urljoin(self.base + "/", following.group(1))
            response = self._call("GET", url, {"Accept": OCI_INDEX}, absolute=True)
            self._expect(response, (200,), f"the referrers of {digest}")
            found += manifests_of(response.body, f"the referrers of {digest}")
        return found

    def _call(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        absolute: bool = False,
        limit: int = MAX_MANIFEST,
    ) -> Response:
        url = path if absolute else self.base + path
        authorization = self.credentials.cached(self.scope)
        response = self.registries.send(method, url, {**headers, **authorization}, body, limit)
        if response.status != 401 or urlsplit(response.url).netloc != urlsplit(url).netloc:
            return response  # a host we were redirected to gets no credentials, whatever it asks
        challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return response
        fresh = self.credentials.answer(
            challenge, self.scope, self.registries.send, renew=bool(authorization)
        )
        return self.registries.send(method, url, {**headers, **fresh}, body, limit)

    def _expect(self, response: Response, statuses: tuple[int, ...], what: str) -> None:
        if response.status in statuses:
            return
        name = self.reference.name
        registry, detail = self.reference.registry, f"{response.status}{_registry_error(response.body)}"
        if response.status in (401, 403):
            writing = response.method not in ("GET", "HEAD")
            action = "push to" if writing else "read"
            raise Error(
                f"registry {registry} refused to let these credentials {action} {name} ({detail})",
                PUSH_REMEDY if writing else PULL_REMEDY,
            )
        raise Error(
            f"registry {registry} answered {detail} for {what} of {name}",
            "check the registry's status; retry later if it is busy",
        )


def manifests_of(index: bytes, what: str) -> list[dict[str, Any]]:
    """An image index's `manifests` descriptors. Raises Error when it is not an index."""
    try:
        document = untrusted.loads(index)
    except ValueError as exc:
        raise Error(f"{what} is not JSON", "the registry served something other than an image index") from exc
    entries = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise Error(
            f"{what} is not an image index", "the registry served something other than an image index"
        )
    return entries


def _registry_error(body: bytes) -> str:
    """`: CODE message` from a registry's error body, when it has one."""
    try:
        errors = untrusted.loads(body).get("errors") or []
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
