"""Every pipeline YAML the repository tracks validates against the official Azure Pipelines schema (with
this task's entry generated from task.json), and its stages, jobs, templates and parameters line up."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, shared_ref
from pipeline_schema import (
    MANIFEST_GENERATOR,
    PipelineValidator,
    included_templates,
    load_manifest,
    load_pipeline,
    official_schema,
    reference_problems,
    schema_problems,
    task_entry,
    task_manifest,
    walk,
    with_tasks,
)

SCHEMA = "schemas/azure-pipelines-service-schema.json"


def tracked_pipelines() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--", "docs/pipelines/*.yml", "docs/pipelines/*.yaml", "azure-pipelines.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if listed:
        return [REPO / name for name in listed]
    pipelines = sorted((REPO / "docs" / "pipelines").glob("*.y*ml"))  # not a git checkout
    return pipelines + [path for path in [REPO / "azure-pipelines.yml"] if path.is_file()]


PIPELINES = tracked_pipelines()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    manifest = load_manifest(task_manifest(REPO))
    return with_tasks(official_schema(shared_ref(SCHEMA)), [manifest, MANIFEST_GENERATOR])


def step(**inputs: Any) -> dict[str, Any]:
    """A one-step pipeline running SlsaProvenance@1 with these inputs."""
    return {
        "steps": [{"task": "SlsaProvenance@1", "inputs": inputs} if inputs else {"task": "SlsaProvenance@1"}]
    }


def test_the_examples_are_there() -> None:
    names = {path.relative_to(REPO).as_posix() for path in PIPELINES}
    assert {"docs/pipelines/azure-pipelines.yml", "docs/pipelines/single-job-l2.yml"} <= names


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.relative_to(REPO).as_posix())
def test_pipeline_validates_against_the_official_schema(path: Path, schema: dict[str, Any]) -> None:
    assert schema_problems(schema, load_pipeline(path)) == []


@pytest.mark.parametrize(
    "path",
    [path for path in PIPELINES if path.resolve() not in included_templates(PIPELINES)],
    ids=lambda path: path.relative_to(REPO).as_posix(),
)
def test_stages_templates_and_parameters_line_up(path: Path) -> None:
    assert reference_problems(path, REPO) == []


def test_every_template_is_included_by_a_pipeline() -> None:
    templates = {path for path in PIPELINES if "parameters" in (load_pipeline(path) or {})}
    included = included_templates(PIPELINES)
    assert [
        path.name
        for path in templates
        if path.resolve() not in included and "trigger" not in load_pipeline(path)
    ] == []


def test_a_generate_step_needs_no_verify_inputs(schema: dict[str, Any]) -> None:
    assert schema_problems(schema, step()) == []
    assert (
        schema_problems(schema, step(command="generate", keyVaultKey="https://kv.vault.azure.net/keys/k"))
        == []
    )


def test_the_generated_entry_refuses_unknown_inputs_and_values(schema: dict[str, Any]) -> None:
    assert schema_problems(schema, step(comand="verify")) != []
    assert schema_problems(schema, step(command="attest")) != []
    assert schema_problems(schema, step(confirmWithServer="yes")) != []
    assert schema_problems(schema, {"steps": [{"task": "SlsaProvenance@2"}]}) != []


def test_an_alias_is_as_good_as_the_name(schema: dict[str, Any]) -> None:
    assert schema_problems(schema, step(azureSubscription="c")) == []
    assert schema_problems(schema, step(azureServiceConnection="c")) == []


def test_required_inputs_follow_azure_devops_rules() -> None:
    """required, no visibleRule, no defaultValue; the YAML key is the first alias."""
    manifest = {
        "name": "Demo",
        "friendlyName": "Demo",
        "description": "d",
        "version": {"Major": 3},
        "inputs": [
            {"name": "plain", "type": "string", "label": "p", "required": True},
            {"name": "shown", "type": "string", "label": "s", "required": True, "visibleRule": "a = b"},
            {"name": "dflt", "type": "string", "label": "d", "required": True, "defaultValue": "x"},
            {"name": "old", "aliases": ["new"], "type": "string", "label": "n", "required": True},
            {"name": "pick", "type": "pickList", "label": "k", "options": {"a": "A"}},
            {
                "name": "edit",
                "type": "pickList",
                "label": "e",
                "options": {"a": "A"},
                "properties": {"EditableOptions": "True"},
            },
        ],
    }
    reference, entry = task_entry(manifest)
    inputs = entry["properties"]["inputs"]
    assert reference == "Demo@3"
    assert inputs["required"] == ["plain"]
    assert inputs["allOf"] == [{"anyOf": [{"required": ["new"]}, {"required": ["old"]}]}]
    assert inputs["properties"]["new"]["aliases"] == ["old"]
    assert inputs["properties"]["pick"]["enum"] == ["a"]
    assert inputs["properties"]["edit"]["type"] == "string"
    assert entry["required"] == ["task", "inputs"]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_the_checker_finds_names_that_do_not_line_up(tmp_path: Path) -> None:
    write(
        tmp_path,
        "stage.yml",
        "parameters:\n- name: dependsOn\n  type: object\n- name: artifact\n  type: string\n"
        "stages:\n- stage: Attest\n  dependsOn: ${{ parameters.dependsOn }}\n  jobs:\n  - job: a\n"
        "    dependsOn: b\n    steps:\n    - script: echo ${{ parameters.missing }}\n",
    )
    root = write(
        tmp_path,
        "root.yml",
        "stages:\n- stage: Build\n  jobs:\n  - job: b\n    steps:\n    - script: ./build.sh\n"
        "- template: stage.yml\n  parameters:\n    dependsOn: Biuld\n    artefact: drop\n"
        "- template: gone.yml\n"
        "- stage: Deploy\n  dependsOn: [Attest, Test]\n  jobs:\n  - job: d\n    steps:\n"
        "    - task: Bash@3\n      inputs:\n        filePath: deploy.sh\n",
    )
    problems = reference_problems(root, tmp_path)
    assert sorted(problems) == sorted(
        [
            "root.yml: passes parameter artefact that stage.yml does not declare",
            "root.yml: does not pass stage.yml's required parameter artifact",
            "stage.yml: uses parameters.missing, which it does not declare",
            "root.yml: template gone.yml does not exist (gone.yml)",
            "root.yml: stage Attest depends on Biuld, which no stage is named",
            "root.yml: stage Deploy depends on Test, which no stage is named",
            "root.yml: job a depends on b, not a job of its stage",
            "root.yml: a step runs ./build.sh, which is not in the repository",
            "root.yml: Bash@3 runs deploy.sh, which is not in the repository",
        ]
    )


def test_documented_pipelines_use_only_real_inputs() -> None:
    """Without ../shared: every SlsaProvenance@1 step's inputs are task.json's (names, values, types)."""
    _, entry = task_entry(load_manifest(task_manifest(REPO)))
    steps = [
        node
        for path in PIPELINES
        for node in walk(load_pipeline(path))
        if node.get("task") == "SlsaProvenance@1"
    ]
    for node in steps:
        PipelineValidator({"type": "object", **entry}).validate(node)
    assert len(steps) >= 3


def yaml_blocks(markdown: Path) -> list[Any]:
    text = markdown.read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [yaml.load(block, Loader=yaml.BaseLoader) for block in blocks]


DOC_PAGES = [
    "overview.md",
    "README.md",
    *sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("docs/*.md")),
]


@pytest.mark.parametrize("name", DOC_PAGES)
def test_the_steps_shown_in_the_docs_use_real_inputs(name: str) -> None:
    """The YAML of the Marketplace page, the README and docs/: every SlsaProvenance@1 step fits task.json."""
    _, entry = task_entry(load_manifest(task_manifest(REPO)))
    checked = 0
    for block in yaml_blocks(REPO / name):
        for node in walk(block):
            if node.get("task") == "SlsaProvenance@1":
                PipelineValidator({"type": "object", **entry}).validate(node)
                checked += 1
            script = " ".join(str(node.get(key, "")) for key in ("script", "bash", "pwsh"))
            assert "latest" not in script and "./" not in script, f"{name}: a step runs {script}"
    assert checked >= 2 or name.startswith("docs/")  # the landing pages show generate and verify


def test_the_readme_s_pipeline_validates_and_lines_up(schema: dict[str, Any], tmp_path: Path) -> None:
    """The README's YAML is a whole pipeline: the official schema accepts it, and its stages line up."""
    (pipeline,) = [block for block in yaml_blocks(REPO / "README.md") if "stages" in block]
    assert schema_problems(schema, pipeline) == []
    copy = tmp_path / "azure-pipelines.yml"
    copy.write_text(yaml.safe_dump(pipeline))
    assert reference_problems(copy, tmp_path) == []


def test_the_checker_follows_jobs_of_a_stageless_pipeline(tmp_path: Path) -> None:
    root = write(tmp_path, "jobs.yml", "jobs:\n- job: build\n- job: sign\n  dependsOn: biuld\n")
    assert reference_problems(root, tmp_path) == [
        "jobs.yml: job sign depends on biuld, not a job of its stage"
    ]
