"""The run's context as the agent's predefined variables claim it.

    >>> ctx = RunContext.from_variables(run.variables)   # doctest: +SKIP
    >>> ctx.server_url, ctx.build_id
    ('https://dev.azure.com/contoso', '836')

Many of these variables can be overwritten by an earlier step of the same job, so a RunContext
read here is a claim. `azdo.confirm` replaces it with the server's answer; until then
`server_confirmed` is False and the provenance says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slsa_provenance.errors import InputError

_REQUIRED = {
    "collection_uri": "SYSTEM_COLLECTIONURI",
    "project": "SYSTEM_TEAMPROJECT",
    "build_id": "BUILD_BUILDID",
    "definition_id": "SYSTEM_DEFINITIONID",
    "definition_name": "BUILD_DEFINITIONNAME",
    "repository_uri": "BUILD_REPOSITORY_URI",
    "repository_name": "BUILD_REPOSITORY_NAME",
    "source_branch": "BUILD_SOURCEBRANCH",
    "source_version": "BUILD_SOURCEVERSION",
    "job_id": "SYSTEM_JOBID",
    "job_attempt": "SYSTEM_JOBATTEMPT",
}
_OPTIONAL = {
    "project_id": "SYSTEM_TEAMPROJECTID",
    "build_number": "BUILD_BUILDNUMBER",
    "repository_provider": "BUILD_REPOSITORY_PROVIDER",
    "reason": "BUILD_REASON",
    "plan_id": "SYSTEM_PLANID",
    "host_type": "SYSTEM_HOSTTYPE",
    "agent_os": "AGENT_OS",
    "agent_architecture": "AGENT_OSARCHITECTURE",
    "agent_name": "AGENT_NAME",
    "agent_self_hosted": "AGENT_ISSELFHOSTED",
}
_JOB_NAMES = ("SYSTEM_JOBDISPLAYNAME", "SYSTEM_JOBNAME")
VARIABLES = (*_REQUIRED.values(), *_OPTIONAL.values(), *_JOB_NAMES, "TF_BUILD")
"""Every variable `RunContext.from_variables` reads."""
_COMMIT = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")
_NUMBER = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class CheckedOutRepository:
    """Another repository the run checked out (a `resources.repositories` entry of Runs - Get)."""

    alias: str
    url: str
    ref: str
    commit: str


@dataclass(frozen=True)
class ProducingRun:
    """A pipeline resource of the run: the run that produced what this one consumes."""

    alias: str
    url: str
    commit: str


@dataclass(frozen=True)
class RunContext:
    collection_uri: str
    project: str
    build_id: str
    definition_id: str
    definition_name: str
    repository_uri: str
    repository_name: str
    source_branch: str
    source_version: str
    job_id: str
    job_attempt: str
    job_name: str = ""
    project_id: str = ""
    build_number: str = ""
    repository_provider: str = ""
    reason: str = ""
    plan_id: str = ""
    host_type: str = ""
    agent_os: str = ""
    agent_architecture: str = ""
    agent_name: str = ""
    agent_self_hosted: str = ""
    in_pipeline: bool = False
    pipeline_file: str = ""
    """The pipeline's YAML path: from Definitions-Get when confirmed, else as the user claims."""
    started_on: str = ""
    """RFC 3339 start time from the server; empty when not confirmed."""
    server_confirmed: bool = False
    repositories: tuple[CheckedOutRepository, ...] = ()
    """Every other repository the server says the run checked out."""
    pipelines: tuple[ProducingRun, ...] = ()
    """Every pipeline resource, resolved to its run."""

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> RunContext:
        """From the agent's variables (`VARIABLES`). Raises InputError naming every missing or
        malformed one."""
        missing = [name for name in _REQUIRED.values() if not variables.get(name, "").strip()]
        if missing:
            raise InputError(
                f"missing pipeline variable{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                "run inside Azure Pipelines, or export these variables to describe the build",
            )
        values: dict[str, Any] = {field: variables[name].strip() for field, name in _REQUIRED.items()}
        values |= {field: variables.get(name, "").strip() for field, name in _OPTIONAL.items()}
        values["source_version"] = values["source_version"].lower()
        for field in ("build_id", "definition_id", "job_attempt"):
            if not _NUMBER.match(values[field]):
                raise InputError(
                    f"{_REQUIRED[field]} is {values[field]!r}, not a number",
                    "check the variable is not overwritten by an earlier step",
                )
        if not _COMMIT.match(values["source_version"]):
            raise InputError(
                f"BUILD_SOURCEVERSION is {values['source_version']!r}, not a git commit id",
                "provenance needs a git repository; TFVC and Subversion sources are not supported",
            )
        job_name = variables.get(_JOB_NAMES[0], "") or variables.get(_JOB_NAMES[1], "")
        return cls(
            **values,
            job_name=job_name.strip(),
            in_pipeline=variables.get("TF_BUILD", "").lower() == "true",
        )

    @property
    def server_url(self) -> str:
        return self.collection_uri.rstrip("/")
