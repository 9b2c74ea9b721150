"""Inputs as the agent hands them (DESIGN §3): every filePath input is rooted at the default working
directory, so one left empty arrives as the sources folder, and means "not given". The packaged step,
run the agent's way, generates and verifies with its path inputs left empty, and fails with one
sentence when a path given is wrong; Microsoft's own task test runner reads the same."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import StepResult, job_folders
from conftest import REPO
from slsa_provenance.azure.agent import FILE_PATH_INPUTS, AgentRun
from test_extension import TASK, run_step, step_env

PROVENANCE = Path("_manifest/slsa_1.0/provenance.intoto.jsonl")


def test_the_file_path_inputs_are_the_ones_task_json_declares() -> None:
    task = json.loads((REPO / "task.json").read_text(encoding="utf-8"))
    assert sorted(i["name"] for i in task["inputs"] if i["type"] == "filePath") == sorted(FILE_PATH_INPUTS)


@pytest.mark.parametrize("given", ["{s}", "{s}/", "{s}//", "{s}/.", "{a}"])
def test_a_file_path_input_naming_an_agent_root_is_not_given(tmp_path: Path, given: str) -> None:
    folders = job_folders(tmp_path)
    s, a = folders["BUILD_SOURCESDIRECTORY"], folders["SYSTEM_ARTIFACTSDIRECTORY"]
    run = AgentRun.from_environment(
        {
            **folders,
            "INPUT_SBOMFILE": given.format(s=s, a=a),
            "INPUT_POLICYFILE": f"{s}/policy.yml",
            "INPUT_BUILDERID": s,
        }
    )
    assert run.inputs.path("sbomFile") is None
    assert run.inputs.text("sbomFile") == ""
    assert run.inputs.path("policyFile") == Path(s, "policy.yml")  # below the root: given
    assert run.inputs.text("builderId") == s  # a string input is never rooted, so it is what was typed


def test_on_windows_the_roots_compare_in_any_case_and_either_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent on Windows may hand `D:\\a\\1\\s` as the input and `d:/a/1/s/` as the variable."""
    import ntpath
    import types

    from slsa_provenance.azure import agent as module

    monkeypatch.setattr(module, "os", types.SimpleNamespace(path=ntpath))
    run = AgentRun.from_environment(
        {
            "BUILD_SOURCESDIRECTORY": "d:/a/1/s/",
            "INPUT_POLICYFILE": "D:\\A\\1\\S",
            "INPUT_SBOMFILE": "D:\\a\\1\\s\\sbom.json",
            "HOME": "C:\\Users\\agent",
        }
    )
    assert run.inputs.text("policyFile") == ""
    assert run.inputs.text("sbomFile") == "D:\\a\\1\\s\\sbom.json"


def test_the_module_example_runs() -> None:
    import doctest

    from slsa_provenance.azure import agent as module

    assert doctest.testmod(module).failed == 0


def staged(tmp_path: Path, drop: Path) -> tuple[Path, Path]:
    """The agent's sources and staging folders of the job in `tmp_path`, the drop copied to staging."""
    folders = job_folders(tmp_path)
    staging = Path(folders["BUILD_ARTIFACTSTAGINGDIRECTORY"])
    shutil.copytree(drop, staging, dirs_exist_ok=True)
    return Path(folders["BUILD_SOURCESDIRECTORY"]), staging


def generate_inputs(key: Path, **more: str) -> dict[str, str]:
    return {
        "command": "generate",
        "signingMethod": "localKey",
        "localKeyFile": str(key),
        "confirmWithServer": "false",
        "pipelineFile": "azure-pipelines.yml",
        **more,
    }


def verify_inputs(staging: Path, key: Path, **more: str) -> dict[str, str]:
    return {
        "command": "verify",
        "provenanceFile": str(staging / PROVENANCE),
        "artifacts": str(staging),
        "trustedKeys": str(key),
        "expectedRef": "refs/heads/main",
        "allowUnconfirmed": "true",
        **more,
    }


def one_sentence(result: StepResult) -> str:
    """The failure, reported once as an error issue and as task.complete, without a traceback."""
    assert result.returncode == 0 and result.result == "Failed", result.stdout + result.stderr
    assert result.completions == 1 and len(result.errors) == 1, result.stdout
    assert result.message == result.errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    return result.message


@pytest.mark.integration
def test_the_path_inputs_left_empty_generate_beside_the_sbom_and_verify(
    extension: Path, drop: Path, tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """No dropFolder (its default, $(Build.ArtifactStagingDirectory)), no sbomFile, no outputFolder; then
    no vsaFile and no policyFile. Nothing is read from or written to the sources folder."""
    private, public = key_files["ecdsa-p256"]
    sources, staging = staged(tmp_path, drop)
    generated = run_step(extension, step_env(tmp_path, None, **generate_inputs(private)))
    assert generated.succeeded and generated.errors == [], generated.stdout + generated.stderr
    assert generated.variables["provenancePath"] == str(staging / PROVENANCE)
    assert (staging / PROVENANCE).is_file()
    assert "`_manifest/spdx_2.2/manifest.spdx.json`" in (tmp_path / "slsa-provenance-summary.md").read_text()

    verified = run_step(extension, step_env(tmp_path, None, **verify_inputs(staging, public)))
    assert verified.succeeded and verified.errors == [], verified.stdout + verified.stderr
    assert verified.variables["vsaPath"] == ""
    assert verified.message.startswith("all 6 artifacts verified")  # 5 files and the shipped provenance
    assert list(sources.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"sbomFile": "sbom/manifest.spdx.json"}, "SBOM {s}/sbom/manifest.spdx.json does not exist"),
        (
            {"signingMethod": "localKey", "localKeyFile": ""},
            "the task input 'localKeyFile' (Local key file) is empty",
        ),
        (
            {"command": "verify", "provenanceFile": ""},
            "the task input 'provenanceFile' (Provenance file) is empty",
        ),
        ({"command": "verify", "policyFile": "policy.yml"}, "{s}/policy.yml"),
        (
            {"command": "verify", "provenanceFile": "drop/provenance.intoto.jsonl"},
            "{s}/drop/provenance.intoto.jsonl",
        ),
    ],
)
def test_a_wrong_path_fails_with_one_sentence_and_writes_nothing(
    extension: Path,
    drop: Path,
    tmp_path: Path,
    key_files: dict[str, tuple[Path, Path]],
    inputs: dict[str, str],
    message: str,
) -> None:
    private, public = key_files["ecdsa-p256"]
    sources, staging = staged(tmp_path, drop)
    if inputs.get("command") == "verify":
        assert run_step(extension, step_env(tmp_path, None, **generate_inputs(private))).succeeded
        given = verify_inputs(staging, public, vsaFile=str(tmp_path / "vsa.intoto.jsonl"), **inputs)
        given["vsaSigner"] = f"file:{private}"
    else:
        given = generate_inputs(private, **inputs)
    before = sorted((tmp_path / "_work").rglob("*"))
    result = run_step(extension, step_env(tmp_path, None, **given))
    assert message.format(s=sources) in one_sentence(result)
    assert sorted((tmp_path / "_work").rglob("*")) == before  # the job's folders: sources, drop, temp
    assert not (tmp_path / "vsa.intoto.jsonl").exists()


def mock_test_runner(extension: Path, env: dict[str, str]) -> dict[str, object]:
    """What azure-pipelines-task-lib's MockTestRunner parses from the packaged step."""
    if not (REPO / "node_modules" / "azure-pipelines-task-lib" / "mock-test.js").is_file():
        pytest.skip("azure-pipelines-task-lib is not installed: make node_modules/.installed")
    node = shutil.which("node")
    assert node, "node is needed to run the task's entry"
    run = subprocess.run(
        [node, str(REPO / "tests" / "mock_runner.js"), str(extension / TASK)],
        env={**env, "HOME": env["AGENT_TEMPDIRECTORY"]},  # the runner names its download folder from HOME
        cwd=env["SYSTEM_DEFAULTWORKINGDIRECTORY"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    parsed: dict[str, object] = json.loads(run.stdout)
    return parsed


@pytest.mark.integration
def test_microsoft_s_task_test_runner_reads_the_result_and_the_outputs(
    extension: Path, drop: Path, tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """MockTestRunner counts an issue only when written `task.issue` (what the task-lib's own `error()`
    writes); the step writes `task.logissue`, the agent's documented form (the agent takes both), so the
    runner's errorIssues stay empty and its verdict comes from task.complete alone."""
    private, _ = key_files["ed25519"]
    _, staging = staged(tmp_path, drop)
    passed = mock_test_runner(extension, step_env(tmp_path, None, **generate_inputs(private)))
    assert passed["succeeded"] is True and passed["failed"] is False, passed["stdout"]
    assert passed["variables"] == {
        "provenancePath": str(staging / PROVENANCE),
        "bundlePath": str(staging / "_manifest/slsa_1.0/provenance.sigstore.json"),
        "statementSha256": passed["variables"]["statementSha256"],  # type: ignore[index]
        "subjectCount": "5",
        "keyId": passed["variables"]["keyId"],  # type: ignore[index]
        "attachedReferrers": "",
    }
    assert passed["errorIssues"] == [] and passed["warningIssues"] == []

    failed = mock_test_runner(
        extension, step_env(tmp_path, None, **generate_inputs(private, sbomFile="missing.spdx.json"))
    )
    assert failed["succeeded"] is False and failed["failed"] is True
    assert "##vso[task.logissue type=error]SBOM " in str(failed["stdout"])
    assert failed["errorIssues"] == []
