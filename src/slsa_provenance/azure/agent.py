"""What the Azure Pipelines agent hands a task, read once from the environment at the entry.

    >>> run = AgentRun.from_environment({"INPUT_COMMAND": "verify", "TF_BUILD": "True"})
    >>> run.inputs.text("command"), run.in_pipeline, run.service_connection is None
    ('verify', True, True)

The pipeline step builds one `AgentRun` from `os.environ` and passes its typed parts down (the CLI
does the same; outside a pipeline most parts are empty). No module below the entries reads the
environment: the task inputs (`INPUT_<NAME>`), the run's predefined variables, the protected
SystemVssConnection endpoint and its token, the service connection (`ENDPOINT_*_<ID>`), the HTTP
settings (`SLSA_HTTP_RETRIES`, `SLSA_HTTP_TIMEOUT`, the agent's proxy and certificates), the docker
configuration, the agent's folders and the local key's password are all read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from slsa_provenance.azure import vso
from slsa_provenance.azure.network import VARIABLES as NETWORK_VARIABLES
from slsa_provenance.azure.network import AgentNetwork
from slsa_provenance.azure.transport import HttpSettings
from slsa_provenance.errors import InputError
from slsa_provenance.provenance.context import VARIABLES as RUN_VARIABLES

CONNECTION_INPUT = "azureSubscription"
KEY_PASSWORD_VARIABLE = "SLSA_KEY_PASSWORD"  # noqa: S105 (the variable's name)
OIDC_VARIABLE = "SYSTEM_OIDCREQUESTURI"
_TOKEN_VARIABLES = (
    "ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN",
    "SYSTEM_ACCESSTOKEN",
    "SECRET_SYSTEM_ACCESSTOKEN",
)
FILE_PATH_INPUTS = ("dropFolder", "localKeyFile", "sbomFile", "provenanceFile", "policyFile")
"""The inputs task.json declares `type: filePath` (tests/test_agent_run.py holds the two together)."""
_JOB_VARIABLES = ("SYSTEM_TEAMPROJECTID", "SYSTEM_HOSTTYPE", "SYSTEM_PLANID", "SYSTEM_JOBID")


@dataclass(frozen=True)
class TaskInputs:
    """The task's inputs by name (case-insensitive, as `INPUT_<NAME>` is)."""

    values: Mapping[str, str] = field(default_factory=dict)
    """Upper-case input name → value, stripped; '' for a filePath input that was not given."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str], roots: Sequence[str]) -> TaskInputs:
        """The agent roots every `filePath` input at the default working directory, so one left empty
        arrives as that folder (the sources; in a classic release, the artifacts): a value naming one of
        `roots` means "not given", as azure-pipelines-task-lib's `filePathSupplied()` decides, and is
        read as ''."""
        not_given = {_comparable(root) for root in roots if root}
        file_paths = {name.upper() for name in FILE_PATH_INPUTS}
        values = {name[6:].upper(): value.strip() for name, value in env.items() if name.startswith("INPUT_")}
        return cls(
            {
                name: "" if name in file_paths and value and _comparable(value) in not_given else value
                for name, value in values.items()
            }
        )

    def text(self, name: str, default: str = "") -> str:
        return self.values.get(name.upper(), "") or default

    def required(self, name: str, label: str) -> str:
        value = self.text(name)
        if not value:
            raise InputError(f"the task input '{name}' ({label}) is empty", f"set {name} in the step")
        return value

    def lines(self, name: str) -> list[str]:
        return [line.strip() for line in self.text(name).splitlines() if line.strip()]

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name).lower()
        return default if not value else value == "true"

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None


@dataclass(frozen=True)
class SystemConnection:
    """The protected SystemVssConnection endpoint, its token and the job's ids (for the OIDC URL)."""

    url: str = ""
    token: str = field(default="", repr=False)
    oidc_request_uri: str = ""
    """System.OidcRequestUri as the variable claims it (any step can set it)."""
    job: tuple[str, ...] = ()
    """SYSTEM_TEAMPROJECTID, SYSTEM_HOSTTYPE, SYSTEM_PLANID, SYSTEM_JOBID."""

    def collection_url(self) -> str:
        """The collection URL from the protected endpoint, never a variable. Raises InputError."""
        if not self.url.startswith("https://"):
            raise InputError(
                "ENDPOINT_URL_SYSTEMVSSCONNECTION is missing or not https",
                "run the task inside Azure Pipelines (the agent sets it)",
            )
        return self.url.rstrip("/") + "/"

    def access_token(self) -> str:
        """The job's System.AccessToken, masked. Raises InputError when there is none."""
        if not self.token:
            raise InputError(
                "the job's access token (System.AccessToken) is not available",
                "run the task inside Azure Pipelines, or map SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
            )
        vso.set_secret(self.token)
        return self.token

    def oidc_url(self) -> str:
        """Where to ask for the ID token. Built from protected values; a variable pointing elsewhere is
        refused, since an earlier step could set it to collect the bearer System.AccessToken."""
        collection = self.collection_url()
        if self.oidc_request_uri:
            got, expected = urlsplit(self.oidc_request_uri), urlsplit(collection)
            if got.scheme != "https" or got.netloc.lower() != expected.netloc.lower():
                raise InputError(
                    f"System.OidcRequestUri points at {got.scheme}://{got.netloc}, not the collection host "
                    f"{expected.netloc}; an earlier step may have overwritten it to steal the job's token",
                    "remove the step that sets System.OidcRequestUri",
                )
            return self.oidc_request_uri
        if len(self.job) != len(_JOB_VARIABLES) or not all(self.job):
            raise InputError(
                "cannot build the ID token URL: SYSTEM_TEAMPROJECTID, SYSTEM_HOSTTYPE, SYSTEM_PLANID or "
                "SYSTEM_JOBID is missing",
                "run the task inside an Azure Pipelines job",
            )
        project, hub, plan, job = self.job
        return f"{collection}{project}/_apis/distributedtask/hubs/{hub}/plans/{plan}/jobs/{job}/oidctoken"


@dataclass(frozen=True)
class ServiceConnection:
    """The AzureRM service connection the task's `azureSubscription` input names."""

    id: str
    scheme: str = ""
    tenant: str = ""
    client_id: str = ""
    secret: str = field(default="", repr=False)
    certificate: str = field(default="", repr=False)
    authority: str = ""
    """The cloud's Entra authority, when the connection names one (sovereign clouds, Azure Stack)."""

    def required(self, value: str, parameter: str) -> str:
        """`value`, or InputError naming the endpoint parameter that is missing."""
        if not value:
            raise InputError(
                f"service connection {self.id} has no {parameter.lower()} "
                f"(ENDPOINT_AUTH_PARAMETER_<ID>_{parameter} is missing)",
                "check that the task's azureSubscription input names an AzureRM service connection",
            )
        return value

    @classmethod
    def from_environment(cls, connection: str, env: Mapping[str, str]) -> ServiceConnection:
        def get(prefix: str, name: str = "") -> str:
            for key in (connection.upper(), connection.upper().replace("-", "_"), connection):
                value = env.get(f"{prefix}_{key}{'_' + name if name else ''}", "")
                if value:
                    return value.strip()
            return ""

        def parameter(name: str) -> str:
            return get("ENDPOINT_AUTH_PARAMETER", name)

        return cls(
            id=connection,
            scheme=get("ENDPOINT_AUTH_SCHEME").lower(),
            tenant=parameter("TENANTID"),
            client_id=parameter("SERVICEPRINCIPALID"),
            secret=parameter("SERVICEPRINCIPALKEY"),
            certificate=parameter("SERVICEPRINCIPALCERTIFICATE"),
            authority=get("ENDPOINT_DATA", "ACTIVEDIRECTORYAUTHORITY")
            or get("ENDPOINT_DATA", "ENVIRONMENTAUTHORITYURL"),
        )


@dataclass(frozen=True)
class Folders:
    """The agent's folders for this job; '' when not set (outside a pipeline)."""

    sources: str = ""
    default_working: str = ""
    artifacts: str = ""
    artifact_staging: str = ""
    temp: str = ""


@dataclass(frozen=True)
class StepRun:
    """Which run of which step this is: names the step's attachment and labels it on the run page."""

    display_name: str = ""
    instance_id: str = ""
    job_name: str = ""
    job_attempt: str = ""


@dataclass(frozen=True)
class AgentRun:
    inputs: TaskInputs = field(default_factory=TaskInputs)
    variables: Mapping[str, str] = field(default_factory=dict)
    """The run's predefined variables that `RunContext.from_variables` reads (claims, not facts)."""
    system: SystemConnection = field(default_factory=SystemConnection)
    service_connection: ServiceConnection | None = None
    http: HttpSettings = field(default_factory=HttpSettings)
    docker_config: Path | None = None
    """The docker CLI's configuration folder: DOCKER_CONFIG, else ~/.docker; None: no docker logins."""
    in_pipeline: bool = False
    """TF_BUILD: a claim any step can make, never a reason to trust anything."""
    folders: Folders = field(default_factory=Folders)
    step: StepRun = field(default_factory=StepRun)
    key_password: str = field(default="", repr=False)
    """SLSA_KEY_PASSWORD: the local signing key's password, when it is encrypted."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> AgentRun:
        """Raises InputError for malformed HTTP or proxy settings."""

        def get(name: str) -> str:
            return env.get(name, "").strip()

        folders = Folders(
            sources=get("BUILD_SOURCESDIRECTORY"),
            default_working=get("SYSTEM_DEFAULTWORKINGDIRECTORY"),
            artifacts=get("SYSTEM_ARTIFACTSDIRECTORY"),
            artifact_staging=get("BUILD_ARTIFACTSTAGINGDIRECTORY"),
            temp=get("AGENT_TEMPDIRECTORY"),
        )
        inputs = TaskInputs.from_environment(
            env, (folders.default_working, folders.sources, folders.artifacts)
        )
        connection = inputs.text(CONNECTION_INPUT)
        docker_folder, home = get("DOCKER_CONFIG"), get("HOME") or os.path.expanduser("~")
        return cls(
            inputs=inputs,
            variables={name: env[name] for name in RUN_VARIABLES if name in env},
            system=SystemConnection(
                url=get("ENDPOINT_URL_SYSTEMVSSCONNECTION"),
                token=next((get(name) for name in _TOKEN_VARIABLES if get(name)), ""),
                oidc_request_uri=get(OIDC_VARIABLE),
                job=tuple(get(name) for name in _JOB_VARIABLES),
            ),
            service_connection=ServiceConnection.from_environment(connection, env) if connection else None,
            http=HttpSettings.parse(
                get("SLSA_HTTP_RETRIES"),
                get("SLSA_HTTP_TIMEOUT"),
                AgentNetwork.from_variables({name: get(name) for name in NETWORK_VARIABLES}),
            ),
            docker_config=Path(docker_folder) if docker_folder else Path(home) / ".docker",
            in_pipeline=get("TF_BUILD").lower() == "true",
            folders=folders,
            step=StepRun(
                display_name=get("SYSTEM_TASKDISPLAYNAME"),
                instance_id=get("SYSTEM_TASKINSTANCEID"),
                job_name=get("SYSTEM_JOBDISPLAYNAME") or get("SYSTEM_JOBNAME"),
                job_attempt=get("SYSTEM_JOBATTEMPT"),
            ),
            key_password=env.get(KEY_PASSWORD_VARIABLE, ""),
        )


def _comparable(path: str) -> str:
    """`path` as the file system compares it: no trailing separator, and on Windows any case."""
    return os.path.normcase(os.path.normpath(path.strip()))
