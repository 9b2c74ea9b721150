"""Validate pipeline YAML the way Azure DevOps does: the official schema plus this extension's task.

    schema = with_tasks(official_schema(SCHEMA_PATH), [load_manifest(task_manifest(REPO))])
    assert schema_problems(schema, load_pipeline(Path("docs/pipelines/azure-pipelines.yml"))) == []
    assert reference_problems(Path("docs/pipelines/azure-pipelines.yml"), REPO) == []

The official schema (microsoft/azure-pipelines-vscode's service-schema.json) lists built-in tasks only.
Azure DevOps generates a Marketplace task's entry from its task.json; `task_entry` follows the
generator's rules, read off the built-in entries and their task.json files:
- the input's YAML key is its first alias (the name and any other aliases go in `aliases`);
- an input is required only when `required` is true, it has no `visibleRule` and no `defaultValue`
  (a group's `visibleRule` does not count);
- pickList and radio inputs with fixed options are enums, booleans booleans, ints integers, and
  everything else (editable pick lists included) a string.
jsonschema knows nothing of `aliases`, so every alias also becomes a property of its own here, and a
required input may be given under any of its names, as Azure DevOps accepts.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# Marketplace tasks the examples use whose task.json is not public: the inputs their publishers
# document (sbom-tool's ADO guide, dotnet/arcade's generate-sbom.yml), in task.json form.
MANIFEST_GENERATOR = {
    "name": "ManifestGeneratorTask",
    "friendlyName": "Manifest Generator",
    "description": "Generates an SPDX SBOM of a build drop with sbom-tool.",
    "version": {"Major": 0},
    "inputs": [
        {"name": "BuildDropPath", "type": "filePath", "label": "Build drop path"},
        {"name": "BuildComponentPath", "type": "filePath", "label": "Build components path"},
        {"name": "PackageName", "type": "string", "label": "Package name"},
        {"name": "PackageVersion", "type": "string", "label": "Package version"},
        {"name": "ManifestDirPath", "type": "filePath", "label": "Manifest directory path"},
        {"name": "DockerImagesToScan", "type": "string", "label": "Docker images to scan"},
    ],
}

PARAMETER = re.compile(r"\$\{\{\s*parameters\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SCRIPT_KEYS = ("script", "bash", "pwsh", "powershell")
SCRIPT_FILE = re.compile(r"(?:^|\s)(\.{1,2}/[^\s;|&]+|[^\s;|&$]+\.(?:sh|ps1|py|cmd|bat))(?=\s|$)")


def task_manifest(repo: Path) -> Path:
    """task.json at the repository root, or in task/ where older trees keep it."""
    root = repo / "task.json"
    return root if root.is_file() else repo / "task" / "task.json"


def load_manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8-sig")))


def official_schema(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8-sig")))


def load_pipeline(path: Path) -> Any:
    """The YAML as Azure DevOps reads it: every scalar a string (`true` is the string "true")."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)


def _boolean(_: object, value: object) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))


def _integer(_: object, value: object) -> bool:
    integral = isinstance(value, int) and not isinstance(value, bool)
    return integral or (isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value) is not None)


# Task inputs arrive as strings and the task converts them: a boolean input takes "true"/"false".
PipelineValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine_many(
        {"boolean": _boolean, "integer": _integer}
    ),
)


def generated_required(item: Mapping[str, Any]) -> bool:
    """Whether Azure DevOps' generated schema demands the input in every step."""
    return (
        bool(item.get("required")) and not item.get("visibleRule") and item.get("defaultValue") in (None, "")
    )


def _input_schema(item: Mapping[str, Any]) -> dict[str, Any]:
    kind = item["type"]
    options = item.get("options")
    editable = str(item.get("properties", {}).get("EditableOptions", "")).lower() == "true"
    schema: dict[str, Any]
    if kind in ("pickList", "radio") and options and not editable:
        schema = {"description": item.get("label", ""), "ignoreCase": "all", "enum": list(options)}
    else:
        json_type = {"boolean": "boolean", "int": "integer"}.get(kind, "string")
        schema = {"type": json_type, "description": item.get("label", ""), "ignoreCase": "key"}
    return schema


def task_entry(manifest: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The task's `Name@Major` and its `definitions.task.anyOf` entry, aliases honoured."""
    reference = f"{manifest['name']}@{manifest['version']['Major']}"
    properties: dict[str, Any] = {}
    required: list[list[str]] = []
    for item in manifest.get("inputs", []):
        names = [*item.get("aliases", []), item["name"]]
        schema = _input_schema(item)
        properties[names[0]] = {**schema, "aliases": names[1:]} if names[1:] else schema
        for alias in names[1:]:
            properties[alias] = schema
        if generated_required(item):
            required.append(names)
    inputs: dict[str, Any] = {
        "description": f"{manifest['friendlyName']} inputs",
        "properties": properties,
        "additionalProperties": False,
        "required": [names[0] for names in required if len(names) == 1],
    }
    either = [{"anyOf": [{"required": [name]} for name in names]} for names in required if len(names) > 1]
    if either:
        inputs["allOf"] = either
    entry = {
        "properties": {
            "task": {
                "description": f"{manifest['friendlyName']}\n\n{manifest['description']}",
                "ignoreCase": "value",
                "pattern": f"^{re.escape(reference)}$",
            },
            "inputs": inputs,
        },
        "doNotSuggest": False,
        "firstProperty": ["task"],
        "required": ["task", "inputs"] if required else ["task"],
    }
    return reference, entry


def with_tasks(schema: Mapping[str, Any], manifests: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of the official schema that also knows the given tasks, as Azure DevOps would list them."""
    extended = copy.deepcopy(dict(schema))
    task = extended["definitions"]["task"]
    for manifest in manifests:
        reference, entry = task_entry(manifest)
        task["anyOf"].append(entry)
        task["properties"]["task"]["anyOf"].append(
            {
                "description": manifest["description"],
                "doNotSuggest": False,
                "ignoreCase": "value",
                "enum": [reference],
            }
        )
    return extended


def _other_task(error: jsonschema.ValidationError) -> bool:
    """The error says the step names another task: that anyOf branch is not the one meant."""
    path = list(error.absolute_path)
    return bool(path) and path[-1] == "task" and error.validator in ("pattern", "enum")


def _leaves(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    if not error.context:
        yield error
        return
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for inner in error.context:
        branches.setdefault(inner.relative_schema_path[0], []).append(inner)
    meant = [errors for errors in branches.values() if not any(map(_other_task, errors))]
    for errors in meant or list(branches.values()):
        for inner in errors:
            yield from _leaves(inner)


def schema_problems(schema: Mapping[str, Any], document: Any) -> list[str]:
    """Each way the document breaks the schema, as `path: message`, told by its deepest cause (an
    anyOf's branches fail in many ways; the one that got furthest into the document is the one meant)."""
    problems = []
    for error in PipelineValidator(schema).iter_errors(document):
        deepest = max(_leaves(error), key=lambda leaf: len(leaf.absolute_path))
        where = "/".join(str(part) for part in deepest.absolute_path) or "(root)"
        problems.append(f"{where}: {deepest.message}")
    return problems


def declared_parameters(document: Any) -> dict[str, Any]:
    """A template's parameters: name → default (`...` when it has none)."""
    declared = document.get("parameters", []) if isinstance(document, dict) else []
    if isinstance(declared, dict):
        return dict(declared)
    return {item["name"]: item.get("default", ...) for item in declared}


def expand(value: Any, parameters: Mapping[str, Any]) -> Any:
    """`${{ parameters.X }}` replaced by its value (a whole-string reference keeps the value's type)."""
    if isinstance(value, str):
        whole = PARAMETER.fullmatch(value.strip())
        if whole and whole.group(1) in parameters:
            return parameters[whole.group(1)]
        return PARAMETER.sub(
            lambda m: str(parameters[m.group(1)]) if m.group(1) in parameters else m.group(0), value
        )
    if isinstance(value, list):
        return [expand(item, parameters) for item in value]
    if isinstance(value, dict):
        return {key: expand(item, parameters) for key, item in value.items()}
    return value


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


class _Expansion:
    """A pipeline with its templates expanded, and the problems met on the way."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.problems: list[str] = []

    def template(self, including: Path, reference: str, passed: Any) -> Any:
        """The template's document, parameters applied; None (and a problem) when it cannot be used."""
        if "@" in reference:
            return None  # a template in another repository resource: not checkable here
        path = (including.parent / reference).resolve()
        shown = path.relative_to(self.repo) if path.is_relative_to(self.repo) else path
        if not path.is_file():
            self.problems.append(f"{including.name}: template {reference} does not exist ({shown})")
            return None
        document = load_pipeline(path)
        declared = declared_parameters(document)
        passed = dict(passed or {})
        for name in sorted(set(passed) - set(declared)):
            self.problems.append(
                f"{including.name}: passes parameter {name} that {reference} does not declare"
            )
        for name in sorted(
            name for name, default in declared.items() if default is ... and name not in passed
        ):
            self.problems.append(f"{including.name}: does not pass {reference}'s required parameter {name}")
        values = {name: default for name, default in declared.items() if default is not ...}
        values.update(passed)
        unresolved = {m.group(1) for m in PARAMETER.finditer(json.dumps(document))} - set(declared)
        for name in sorted(unresolved):
            self.problems.append(f"{reference}: uses parameters.{name}, which it does not declare")
        body = {key: value for key, value in document.items() if key != "parameters"}
        return self.items(path, expand(body, values))

    def items(self, path: Path, node: Any) -> Any:
        """The node with every `template:` list item replaced by that template's items."""
        if isinstance(node, dict):
            return {key: self.items(path, value) for key, value in node.items()}
        if not isinstance(node, list):
            return node
        expanded: list[Any] = []
        for item in node:
            if isinstance(item, dict) and "template" in item:
                included = self.template(path, item["template"], item.get("parameters"))
                if isinstance(included, dict):
                    for key in ("stages", "jobs", "steps", "variables"):
                        expanded.extend(included.get(key) or [])
                continue
            expanded.append(self.items(path, item))
        return expanded


def _job_problems(name: str, jobs: list[Any]) -> list[str]:
    problems = []
    job_names = [job.get("job") or job.get("deployment") for job in jobs if isinstance(job, dict)]
    for job in jobs:
        for needed in _names(job.get("dependsOn")):
            if needed not in job_names:
                problems.append(
                    f"{name}: job {job.get('job') or job.get('deployment')} depends on {needed}, not a job of its stage"
                )
    return problems


def _dependency_problems(name: str, pipeline: Any) -> list[str]:
    if not isinstance(pipeline, dict):
        return []
    stages = pipeline.get("stages") or []
    stage_names = [stage.get("stage") for stage in stages if isinstance(stage, dict)]
    problems = _job_problems(name, pipeline.get("jobs") or [])
    for stage in stages:
        for needed in _names(stage.get("dependsOn")):
            if needed not in stage_names:
                problems.append(
                    f"{name}: stage {stage.get('stage')} depends on {needed}, which no stage is named"
                )
        problems += _job_problems(name, stage.get("jobs") or [])
    return problems


def _script_problems(name: str, pipeline: Any, repo: Path) -> list[str]:
    """Scripts the steps run from the repository must be there (inline commands are not checked)."""
    problems = []
    for node in walk(pipeline):
        inputs = node.get("inputs") if isinstance(node.get("task"), str) else None
        for key in ("filePath", "scriptPath"):
            script = inputs.get(key) if isinstance(inputs, dict) else None
            if isinstance(script, str) and "$(" not in script and not (repo / script).is_file():
                problems.append(f"{name}: {node['task']} runs {script}, which is not in the repository")
        for key in SCRIPT_KEYS:
            text = node.get(key)
            if not isinstance(text, str):
                continue
            for line in text.splitlines():
                for match in SCRIPT_FILE.finditer(line):
                    if "$(" not in match.group(1) and not (repo / match.group(1)).is_file():
                        problems.append(
                            f"{name}: a step runs {match.group(1)}, which is not in the repository"
                        )
    return problems


def reference_problems(path: Path, repo: Path) -> list[str]:
    """Templates that are missing or given undeclared parameters, dependsOn naming no stage or job,
    and scripts run from the repository that are not in it."""
    expansion = _Expansion(repo)
    document = load_pipeline(path)
    declared = declared_parameters(document)
    defaults = {key: value for key, value in declared.items() if value is not ...}
    pipeline = expansion.items(path, expand(document, defaults))
    return (
        expansion.problems
        + _dependency_problems(path.name, pipeline)
        + _script_problems(path.name, pipeline, repo)
    )


def included_templates(paths: list[Path]) -> set[Path]:
    """The files other pipelines include as templates (local references only)."""
    included = set()
    for path in paths:
        for node in walk(load_pipeline(path)):
            reference = node.get("template")
            if isinstance(reference, str) and "@" not in reference and "${{" not in reference:
                included.add((path.parent / reference).resolve())
    return included
