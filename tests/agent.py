"""Run the packaged step the way the Azure Pipelines agent runs it, and read what it reports.

    >>> job = AgentJob(tmp_path)                                                     # doctest: +SKIP
    >>> result = job.run(task_folder, {"command": "generate", "signingMethod": "unsigned"})
    >>> result.result, result.variables["provenancePath"]
    ('Succeeded', '.../_work/1/a/_manifest/slsa_1.0/provenance.intoto.jsonl')

What the agent does before a Node task runs (its TaskRunner and Node handler; ref/platform-notes.md §2):
every input task.json declares is set, to the step's value or else its trimmed `defaultValue`; `$(Variable)`
macros are expanded from the job's variables (an unknown one stays as written); every `filePath` input is
rooted at System.DefaultWorkingDirectory, so one left empty arrives as that folder; each input becomes
`INPUT_<NAME>` (upper-case, '.' and ' ' as '_'); each endpoint arrives as `ENDPOINT_URL_<ID>`,
`ENDPOINT_AUTH_<ID>` (JSON), `ENDPOINT_AUTH_SCHEME_<ID>`, `ENDPOINT_AUTH_PARAMETER_<ID>_<KEY>` and
`ENDPOINT_DATA_<ID>_<KEY>`; `node index.js` runs in System.DefaultWorkingDirectory. Its `##vso` lines are read
back as the agent reads them: the result, the issues, the output variables and the secrets to mask.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_MACRO = re.compile(r"\$\(([^)]+)\)")
_COMMAND = re.compile(r"##vso\[(?P<name>[^\s\]]+)(?: (?P<properties>[^\]]*))?\](?P<message>.*)")
_UNESCAPES = (("%0D", "\r"), ("%0A", "\n"), ("%5D", "]"), ("%3B", ";"), ("%AZP25", "%"))


def variable_key(name: str) -> str:
    """A variable's or input's environment name, as the agent forms it (VarUtil.ConvertToEnvVariableFormat)."""
    return name.replace(".", "_").replace(" ", "_").upper()


def expand(value: str, variables: Mapping[str, str]) -> str:
    """`$(Build.SourcesDirectory)` and the like replaced with the job's value; unknown macros stay."""
    return _MACRO.sub(lambda match: variables.get(variable_key(match[1]), match[0]), value)


@dataclass(frozen=True)
class Endpoint:
    """A service connection (or SystemVssConnection) as the agent hands it to a task."""

    id: str
    url: str
    scheme: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        key = variable_key(self.id)
        env = {
            f"ENDPOINT_URL_{key}": self.url,
            f"ENDPOINT_AUTH_{key}": json.dumps({"parameters": dict(self.parameters), "scheme": self.scheme}),
            f"ENDPOINT_AUTH_SCHEME_{key}": self.scheme,
            **{f"ENDPOINT_AUTH_PARAMETER_{key}_{k.upper()}": v for k, v in self.parameters.items()},
        }
        if self.data:  # the agent sets no data for SystemVssConnection
            env[f"ENDPOINT_DATA_{key}"] = json.dumps(dict(self.data))
            env |= {f"ENDPOINT_DATA_{key}_{k.upper()}": v for k, v in self.data.items()}
        return env


def task_inputs(
    task_json: Mapping[str, Any], given: Mapping[str, str], variables: Mapping[str, str]
) -> dict[str, str]:
    """`INPUT_<NAME>` for every input task.json declares, formed as the agent's TaskRunner forms it."""
    declared = {item["name"]: item for item in task_json["inputs"]}
    unknown = sorted(set(given) - set(declared))
    assert not unknown, f"task.json declares no input {unknown}"
    root = variables["SYSTEM_DEFAULTWORKINGDIRECTORY"]
    env = {}
    for name, item in declared.items():
        value = expand(str(given.get(name, str(item.get("defaultValue", "")).strip())), variables)
        if item["type"] == "filePath":  # TranslateFilePathInput: Path.Combine(defaultWorkingDirectory, value)
            value = os.path.normpath(os.path.join(root, value))
        env[f"INPUT_{variable_key(name)}"] = value
    return env


SYSTEM = Endpoint(
    "SystemVssConnection",
    "https://dev.azure.com/contoso/",
    "OAuth",
    {"AccessToken": "job-access-token-of-an-offline-run"},
)
"""The agent always hands a task this endpoint; offline runs never use it."""


def job_folders(root: Path) -> dict[str, str]:
    """An agent's work folder for one pipeline (`_work/1/{s,a,b}`, `_work/_temp`), as its variables."""
    build = root / "_work" / "1"
    folders = {
        "AGENT_BUILDDIRECTORY": build,
        "PIPELINE_WORKSPACE": build,
        "BUILD_SOURCESDIRECTORY": build / "s",
        "SYSTEM_DEFAULTWORKINGDIRECTORY": build / "s",
        "BUILD_ARTIFACTSTAGINGDIRECTORY": build / "a",
        "SYSTEM_ARTIFACTSDIRECTORY": build / "a",
        "BUILD_BINARIESDIRECTORY": build / "b",
        "AGENT_TEMPDIRECTORY": root / "_work" / "_temp",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {name: str(folder) for name, folder in folders.items()}


@dataclass
class AgentJob:
    """One pipeline job on an agent: its folders, its variables (environment form), its endpoints and the
    rest of the agent process's environment (PATH, AGENT_TOOLSDIRECTORY, ...)."""

    root: Path
    variables: dict[str, str] = field(default_factory=dict)
    endpoints: Sequence[Endpoint] = ()
    process: dict[str, str] = field(default_factory=dict)
    task_json: Mapping[str, Any] = field(
        default_factory=lambda: json.loads((REPO / "task.json").read_text(encoding="utf-8"))
    )

    def __post_init__(self) -> None:
        from conftest import PIPELINE_ENV

        self.variables = {**PIPELINE_ENV, "TF_BUILD": "True", **job_folders(self.root), **self.variables}

    @property
    def sources(self) -> Path:
        return Path(self.variables["BUILD_SOURCESDIRECTORY"])

    @property
    def staging(self) -> Path:
        return Path(self.variables["BUILD_ARTIFACTSTAGINGDIRECTORY"])

    def environment(self, inputs: Mapping[str, str]) -> dict[str, str]:
        """The environment the agent starts the task's `node` with, for a step with these inputs."""
        env = {**self.process, **self.variables, **task_inputs(self.task_json, inputs, self.variables)}
        given = any(endpoint.id == SYSTEM.id for endpoint in self.endpoints)
        for endpoint in (*self.endpoints, *(() if given else (SYSTEM,))):
            env |= endpoint.environment()
        return env

    def run(
        self, task: Path, inputs: Mapping[str, str], *, offline: bool = True, wrap: Sequence[str] = ()
    ) -> StepResult:
        return run_step(task, self.environment(inputs), offline=offline, wrap=wrap)


@dataclass(frozen=True)
class StepResult:
    returncode: int
    stdout: str
    stderr: str
    result: str
    """task.complete's result (Succeeded, Failed, ...); '' when the step never completed."""
    message: str
    completions: int
    errors: list[str]
    warnings: list[str]
    variables: dict[str, str]
    secrets: list[str]

    @property
    def succeeded(self) -> bool:
        return self.result == "Succeeded" and self.completions == 1

    @classmethod
    def parse(cls, process: subprocess.CompletedProcess[str]) -> StepResult:
        """Every `##vso[...]` command in stdout and stderr, read as the agent reads them."""
        completions, errors, warnings, variables, secrets = [], [], [], {}, []
        for line in (process.stdout + process.stderr).splitlines():
            start = line.find("##vso[")
            match = _COMMAND.fullmatch(line[start:]) if start >= 0 else None
            if not match:
                continue
            properties = dict(
                part.split("=", 1) for part in (match["properties"] or "").split(";") if "=" in part
            )
            properties = {k.strip(): _unescape(v) for k, v in properties.items()}
            name, message = match["name"].lower(), _unescape(match["message"])
            if name == "task.complete":
                completions.append((properties.get("result", ""), message))
            elif name in ("task.logissue", "task.issue"):  # the agent takes either
                (errors if properties.get("type") == "error" else warnings).append(message)
            elif name == "task.setvariable":
                variables[properties["variable"]] = message
            elif name == "task.setsecret":
                secrets.append(message)
        result, message = completions[-1] if completions else ("", "")
        return cls(
            process.returncode,
            process.stdout,
            process.stderr,
            result,
            message,
            len(completions),
            errors,
            warnings,
            variables,
            secrets,
        )


def _unescape(text: str) -> str:
    for encoded, raw in _UNESCAPES:
        text = text.replace(encoded, raw)
    return text


def run_step(
    task: Path, env: Mapping[str, str], *, offline: bool = True, wrap: Sequence[str] = ()
) -> StepResult:
    """`node <task>/index.js` as the Node handler starts it: in System.DefaultWorkingDirectory; with
    `offline`, in a network namespace with no interface at all (when unshare may make one)."""
    node = shutil.which("node")
    assert node, "node is needed to run the task's entry"
    command = [*wrap, node, str(task / "index.js")]
    if (
        offline
        and shutil.which("unshare")
        and subprocess.run(["unshare", "-rn", "true"], check=False).returncode == 0
    ):
        command = ["unshare", "-rn", *command]
    process = subprocess.run(
        command,
        env=dict(env),
        cwd=env.get("SYSTEM_DEFAULTWORKINGDIRECTORY"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return StepResult.parse(process)
