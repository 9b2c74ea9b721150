"""Confirm the run's claimed context with the Azure DevOps REST API.

    >>> confirmed = confirm(RunContext.from_variables(run.variables), run.system, run.http)  # doctest: +SKIP
    >>> confirmed.server_confirmed, confirmed.pipeline_file
    (True, 'azure-pipelines.yml')

The agent's variables can be overwritten by earlier steps; the server cannot. Builds - Get,
Definitions - Get and, for YAML pipelines, Runs - Get (every other checked-out repository) are read
with the job's token at the URL of the protected SystemVssConnection endpoint (never
`SYSTEM_COLLECTIONURI`); every claim is compared, and a mismatch fails naming the field, the
claimed value and the server's. The REST calls go through azure-core's PipelineClient:
one request per fact, raw JSON, bounded retries that honour Retry-After.

Azure DevOps Server answers older REST versions (Server 2022 up to 7.0, Server 2020 up to 6.0) and
refuses a newer one with HTTP 400 `VssVersionOutOfRangeException`, naming the newest it supports.
Each call asks the newest version the product needs; on that refusal it steps down once, to the
version the server names, and every later call to that collection asks that version (with
`-preview.1` where the endpoint was still in preview at it: Pipelines Runs before 7.0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from slsa_provenance import untrusted
from slsa_provenance.azure import vso
from slsa_provenance.azure.agent import SystemConnection
from slsa_provenance.azure.transport import HttpSettings
from slsa_provenance.errors import Error
from slsa_provenance.provenance.context import CheckedOutRepository, ProducingRun, RunContext

NEWEST_VERSION = "7.1"
# Pipelines Runs left preview at 7.0: Server 2020 serves Runs - Get as 6.0-preview.1.
RUNS_RELEASED = "7.0"
_OUT_OF_RANGE = "VssVersionOutOfRangeException"
_NAMED_NEWEST = re.compile(r"supports is (\S+?)\.?$")
_VERSION = re.compile(r"^([0-9]{1,4})\.([0-9]{1,4})$")
MESSAGE_LIMIT = 300
# Collection URL -> the api-version its server named when it refused a newer one, for this run.
_NEGOTIATED: dict[str, str] = {}
_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")


class AzureDevOps:
    """GET JSON from one collection with the job's token."""

    def __init__(self, collection: str, token: str, http: HttpSettings) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy, UserAgentPolicy

        options = http.client_options()
        self.collection = collection
        self._timeouts = {
            "connection_timeout": options["connection_timeout"],
            "read_timeout": options["read_timeout"],
        }
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "X-TFS-FedAuthRedirect": "Suppress",
        }
        retry = RetryPolicy(
            retry_total=options["retry_total"],
            retry_backoff_factor=options["retry_backoff_factor"],
            retry_backoff_max=options["retry_backoff_max"],
        )
        self._client: Any = PipelineClient(
            base_url=collection,
            policies=[HeadersPolicy(headers), UserAgentPolicy(options["user_agent"]), retry],
            transport=options.get("transport"),
        )

    @property
    def api_version(self) -> str:
        """The version this collection's server answers: the newest the product needs, or the one
        the server named when it refused that."""
        return _NEGOTIATED.get(_url(self.collection), NEWEST_VERSION)

    def get(self, path: str, what: str, *, preview_before: str = "") -> dict[str, Any]:
        """GET `{collection}{path}` at the collection's api-version, `-preview.1` when that is below
        `preview_before` (the version the endpoint left preview). Raises Error naming `what`, the
        cause and the server's own message."""
        response = self._send(path, what, preview_before)
        named = _newest_named(response)
        if named is not None and _url(self.collection) not in _NEGOTIATED:
            _NEGOTIATED[_url(self.collection)] = self._lower(named, what, response)
            response = self._send(path, what, preview_before)
        return _json_object(response, what)

    def _lower(self, named: str, what: str, response: Any) -> str:
        """`named` when it is a version below the one asked. Raises Error otherwise: an answer that
        would make the task ask a newer or unparsable version is not followed."""
        asked = self.api_version
        version = _VERSION.match(named)
        if version and tuple(map(int, version.groups())) < _parts(asked):
            return named
        raise Error(
            f"Azure DevOps at {self.collection} refused api-version {asked} for {what} as out of range "
            f"but names {vso.neutralize(named[:40])!r} as the newest it supports, which is not a version "
            f"below {asked} (its message: {_server_message(response)})",
            "check that ENDPOINT_URL_SYSTEMVSSCONNECTION leads to Azure DevOps and that no proxy between "
            "the agent and the server rewrites its answers",
        )

    def _send(self, path: str, what: str, preview_before: str) -> Any:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        version = self.api_version
        if preview_before and _parts(version) < _parts(preview_before):
            version += "-preview.1"
        request = HttpRequest("GET", self.collection + path, params={"api-version": version})
        try:
            return self._client.send_request(request, **self._timeouts)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise Error(
                f"cannot reach Azure DevOps at {self.collection} for {what}: {_first_line(exc)}",
                "check the agent's network access and proxy settings; disable server confirmation only "
                "if the server cannot be reached by design",
            ) from exc


def _json_object(response: Any, what: str) -> dict[str, Any]:
    """The JSON object of a 200 answer. Raises Error for any other, with the server's message."""
    status = response.status_code
    said = _server_message(response)
    because = f"{status}: {said}" if said else str(status)
    if status in (401, 403):
        raise Error(
            f"Azure DevOps refused the job's token for {what} ({because})",
            "give the build service identity 'View builds' on this pipeline, and check that the "
            "job authorization scope allows this project",
        )
    if status == 404:
        raise Error(
            f"Azure DevOps has no {what} ({because})", "the pipeline variables name a run that does not exist"
        )
    if status == 429 or status >= 500:
        raise Error(
            f"Azure DevOps kept answering {because} for {what} after retrying with back-off",
            "try again later; raise SLSA_HTTP_RETRIES if the server is often busy",
        )
    if said and status != 200:
        raise Error(
            f"Azure DevOps answered {what} with {because}",
            "the server's message says what it refused; report it with the run's id if it persists",
        )
    if status != 200 or "json" not in response.headers.get("Content-Type", ""):
        raise Error(
            f"Azure DevOps answered {what} with {status} {response.headers.get('Content-Type', '')!r}, "
            "not JSON",
            "a proxy or sign-in page may be in the way; check the agent's network settings",
        )
    try:
        body = untrusted.loads(response.content)
    except ValueError as exc:
        raise Error(f"Azure DevOps answered {what} with malformed JSON", "try again later") from exc
    if not isinstance(body, dict):
        raise Error(f"Azure DevOps answered {what} with JSON that is not an object", "try again later")
    return body


def _newest_named(response: Any) -> str | None:
    """What follows "supports is" in a VssVersionOutOfRangeException ('' when the message names
    nothing), or None for any other answer."""
    if response.status_code != 400:
        return None
    body = _error_body(response)
    if body.get("typeKey") != _OUT_OF_RANGE:
        return None
    named = _NAMED_NEWEST.search(str(body.get("message") or "").strip())
    return named.group(1) if named else ""


def _error_body(response: Any) -> dict[str, Any]:
    """An error answer's JSON object, or an empty one when it is not JSON."""
    if "json" not in response.headers.get("Content-Type", ""):
        return {}
    try:
        return _object(untrusted.loads(response.content))
    except ValueError:
        return {}


def _server_message(response: Any) -> str:
    """The `message` of an Azure DevOps error answer on one line, neutralised and bounded, or ''."""
    message = _error_body(response).get("message")
    if not isinstance(message, str):
        return ""
    line = "".join(c for c in " ".join(message.split()) if c.isprintable())
    if len(line) > MESSAGE_LIMIT:
        line = line[: MESSAGE_LIMIT - 1] + "\u2026"
    return vso.neutralize(line)


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def confirm(claimed: RunContext, system: SystemConnection, http: HttpSettings) -> RunContext:
    """The server's view of the run. Raises Error listing every claim the server contradicts."""
    server = AzureDevOps(system.collection_url(), system.access_token(), http)
    project = quote(claimed.project_id or claimed.project, safe="")
    build = server.get(f"{project}/_apis/build/builds/{claimed.build_id}", f"build {claimed.build_id}")
    definition_id = str(_at(build, "definition", "id"))
    definition = server.get(
        f"{project}/_apis/build/definitions/{definition_id}", f"definition {definition_id}"
    )
    repository = _at(build, "repository")
    checks = [
        ("collection", "SYSTEM_COLLECTIONURI", _url(claimed.collection_uri), _url(server.collection)),
        ("build id", "BUILD_BUILDID", claimed.build_id, str(_at(build, "id"))),
        ("commit", "BUILD_SOURCEVERSION", claimed.source_version, str(_at(build, "sourceVersion")).lower()),
        ("branch", "BUILD_SOURCEBRANCH", claimed.source_branch, str(_at(build, "sourceBranch"))),
        (
            "repository",
            "BUILD_REPOSITORY_URI",
            _url(claimed.repository_uri),
            _url(str(_at(repository, "url"))),
        ),
        ("repository name", "BUILD_REPOSITORY_NAME", claimed.repository_name, str(_at(repository, "name"))),
        ("definition", "SYSTEM_DEFINITIONID", claimed.definition_id, definition_id),
        (
            "definition name",
            "BUILD_DEFINITIONNAME",
            claimed.definition_name,
            str(_at(build, "definition", "name")),
        ),
        ("project", "SYSTEM_TEAMPROJECT", claimed.project, str(_at(build, "project", "name"))),
    ]
    if claimed.project_id:
        checks.append(
            ("project id", "SYSTEM_TEAMPROJECTID", claimed.project_id, str(_at(build, "project", "id")))
        )
    if claimed.reason:
        checks.append(
            ("reason", "BUILD_REASON", claimed.reason.lower(), str(build.get("reason", "")).lower())
        )
    mismatches = [
        f"{field}: got {got!r} from {variable}, expected {expected!r}"
        for field, variable, got, expected in checks
        if got != expected
    ]
    if mismatches:
        raise Error(
            f"the server contradicts the pipeline variables for build {claimed.build_id} ("
            + "; ".join(mismatches)
            + ")",
            "an earlier step may have overwritten these variables; find and remove it",
        )
    process = _object(definition.get("process"))
    started = str(build.get("startTime") or "")
    repositories: tuple[CheckedOutRepository, ...] = ()
    pipelines: tuple[ProducingRun, ...] = ()
    if process.get("type") == 2:
        run = server.get(
            f"{project}/_apis/pipelines/{definition_id}/runs/{claimed.build_id}",
            f"run {claimed.build_id}",
            preview_before=RUNS_RELEASED,
        )
        repositories = _other_repositories(server, run, claimed)
        pipelines = _producing_runs(server, run, project)
    return replace(
        claimed,
        collection_uri=server.collection,
        repository_uri=_strip_userinfo(str(_at(repository, "url"))),
        build_number=str(build.get("buildNumber") or claimed.build_number),
        reason=str(build.get("reason") or claimed.reason),
        project_id=str(_at(build, "project", "id")),
        pipeline_file=str(process.get("yamlFilename") or "").lstrip("/") if process.get("type") == 2 else "",
        started_on=started if _TIMESTAMP.match(started) else "",
        server_confirmed=True,
        repositories=repositories,
        pipelines=pipelines,
    )


def _other_repositories(
    server: AzureDevOps, run: Mapping[str, Any], claimed: RunContext
) -> tuple[CheckedOutRepository, ...]:
    """`resources.repositories` of Runs - Get, but `self`, whose commit must be the build's."""
    resources = _object(run.get("resources"))
    found = []
    for alias, resource in sorted(_object(resources.get("repositories")).items()):
        version = str(_at(resource, "version")).lower()
        ref = str(resource.get("refName") or "")
        if alias == "self":
            if version != claimed.source_version:
                got = claimed.source_version
                raise Error(
                    f"the server contradicts the pipeline variables for build {claimed.build_id} (self "
                    f"repository: got {got!r} from BUILD_SOURCEVERSION, expected {version!r})",
                    "an earlier step may have overwritten these variables; find and remove it",
                )
            continue
        found.append(
            CheckedOutRepository(
                alias=alias, url=_repository_url(server, _at(resource, "repository")), ref=ref, commit=version
            )
        )
    return tuple(found)


def _producing_runs(server: AzureDevOps, run: Mapping[str, Any], project: str) -> tuple[ProducingRun, ...]:
    """`resources.pipelines` of Runs - Get, each resolved by Builds - List to its build id and commit."""
    found = []
    for alias, resource in sorted(_object(_object(run.get("resources")).get("pipelines")).items()):
        pipeline = _at(resource, "pipeline")
        definition, number = str(_at(pipeline, "id")), str(_at(resource, "version"))
        where = _project_of(str(pipeline.get("url") or "")) or project
        builds = server.get(
            f"{where}/_apis/build/builds?definitions={definition}&buildNumber={quote(number, safe='')}",
            f"the run {number} of pipeline resource {alias}",
        )
        value = builds.get("value")
        matches = [b for b in value if isinstance(b, dict)] if isinstance(value, list) else []
        if len(matches) != 1:
            raise Error(
                f"pipeline resource {alias} names run {number} of pipeline {definition}, and Azure DevOps "
                f"finds {len(matches)} such runs",
                "pin the resource to one run (a unique run name) or check the pipeline permissions",
            )
        build_id = str(_at(matches[0], "id"))
        url = f"{server.collection.rstrip('/')}/{where}/_build/results?buildId={build_id}"
        found.append(ProducingRun(alias=alias, url=url, commit=str(_at(matches[0], "sourceVersion")).lower()))
    return tuple(found)


def _project_of(url: str) -> str:
    """The project segment of a REST URL such as {collection}{project}/_apis/pipelines/1."""
    parts = urlsplit(url).path.split("/_apis/")[0].rstrip("/").split("/")
    return parts[-1] if len(parts) > 2 else ""


def _repository_url(server: AzureDevOps, repository: Mapping[str, Any]) -> str:
    kind = str(repository.get("type", ""))
    if repository.get("url"):
        return _strip_userinfo(str(repository["url"]))
    if kind.startswith("azureReposGit"):
        identifier = str(_at(repository, "id"))
        found = server.get(f"_apis/git/repositories/{quote(identifier, safe='')}", f"repository {identifier}")
        return _strip_userinfo(str(_at(found, "remoteUrl")))
    if kind == "gitHub":
        return f"https://github.com/{_at(repository, 'fullName')}"
    raise Error(
        f"Runs - Get names a {kind or 'typeless'} repository without a URL", "report this with the run's id"
    )


def _object(value: object) -> dict[str, Any]:
    """A JSON object of the server's answer, or an empty one when the field is absent or malformed."""
    return value if isinstance(value, dict) else {}


def _at(body: Mapping[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, Mapping) or value.get(key) in (None, ""):
            raise Error(
                f"Azure DevOps answered without {'.'.join(path)}",
                "the server's answer is incomplete; try again later",
            )
        value = value[key]
    return value


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.hostname or ''}{port}"))


def _url(url: str) -> str:
    """Compare URLs without user info, case of scheme and host, a trailing slash or '.git'."""
    parts = urlsplit(_strip_userinfo(url.strip()))
    path = parts.path.rstrip("/").removesuffix(".git")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))
