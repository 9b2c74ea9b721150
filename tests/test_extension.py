"""The built .vsix: what a Marketplace upload checks, and the packaged step run by the real `node`,
with no network, from an agent-like environment."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import agent
from agent import AgentJob, Endpoint, StepResult
from conftest import REPO, AzureStack, built_vsix, shared_ref, write_sbom
from test_run_summary import attached

pytestmark = pytest.mark.integration
TASK = "SlsaProvenanceV1"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_the_package_holds_what_the_marketplace_needs(extension: Path) -> None:
    for name in (
        "extension.vsixmanifest",
        "extension.vsomanifest",
        "[Content_Types].xml",
        "overview.md",
        f"{TASK}/task.json",
        f"{TASK}/index.js",
        f"{TASK}/launch.py",
        f"{TASK}/icon.png",
    ):
        assert (extension / name).is_file(), name
    manifest = json.loads((REPO / "vss-extension.json").read_text())
    xml = (extension / "extension.vsixmanifest").read_text()
    assert f'Id="{manifest["id"]}" Publisher="{manifest["publisher"]}" Version="{manifest["version"]}"' in xml
    contributions = json.loads((extension / "extension.vsomanifest").read_text())["contributions"]
    assert [c["type"] for c in contributions] == [
        "ms.vss-distributed-task.task",
        "ms.vss-build-web.build-results-tab",
    ]
    assert (extension / contributions[1]["properties"]["uri"]).is_file()
    assert (extension / contributions[0]["properties"]["name"] / "task.json").is_file()
    assert png_size(extension / "icons" / "extension-icon.png") == (128, 128)
    assert png_size(extension / TASK / "icon.png") == (32, 32)
    task = json.loads((extension / TASK / "task.json").read_text())
    assert task["name"] == "SlsaProvenance" and task["version"]["Major"] == 1
    assert set(task["execution"]) == {"Node20_1", "Node24"}


def test_the_repository_top_level_is_the_design_card_s() -> None:
    """task.json at the root, every icon and its source in icons/ (docs/ holds small screenshots, not
    icons), each top-level folder in the layout section of docs/development.md."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.splitlines()
    if not tracked:
        pytest.skip("not a git checkout: the layout is read from git ls-files")
    assert "task.json" in tracked and "vss-extension.json" in tracked
    images = [p for p in tracked if p.endswith((".png", ".svg", ".ico"))]
    screenshots = [p for p in images if p.startswith("docs/")]  # what the README shows, not icons
    assert sorted(set(images) - set(screenshots)) == [
        "icons/extension-icon.png",
        "icons/icon.svg",
        "icons/task-icon.png",
    ]
    assert all((REPO / p).stat().st_size < 100_000 for p in screenshots)
    layout = (REPO / "docs" / "development.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    folders = {p.split("/", 1)[0] for p in tracked if "/" in p and not p.startswith(".")}
    for folder in sorted(folders):
        assert f"\n{folder}/" in layout, f"docs/development.md's layout section does not list {folder}/"


def test_manifests_match_their_schemas() -> None:
    import jsonschema

    task_schema = json.loads(shared_ref("schemas/tasks.schema.json").read_text())
    jsonschema.Draft4Validator(task_schema).validate(json.loads((REPO / "task.json").read_text()))
    extension_schema = json.loads(shared_ref("schemas/vss-extension.schema.json").read_text())
    jsonschema.Draft7Validator(extension_schema).validate(
        json.loads((REPO / "vss-extension.json").read_text())
    )


def test_the_manifests_link_to_the_repository_its_license_and_the_task_s_documentation() -> None:
    """Get started (the Marketplace) and helpUrl (every pipeline log) land on the README's YAML."""
    from markdown_links import slug

    extension = json.loads((REPO / "vss-extension.json").read_text())
    repository = extension["repository"]["uri"]
    links = {name: link["uri"] for name, link in extension["links"].items()}
    assert links["license"] == f"{repository}/blob/main/LICENSE" and (REPO / "LICENSE").is_file()
    assert links["support"] == f"{repository}/issues"
    help_url = json.loads((REPO / "task.json").read_text())["helpUrl"]
    assert links["getstarted"] == help_url
    page, _, anchor = help_url.partition("#")
    assert page == repository
    sections = {
        slug(section.split("\n", 1)[0]): section
        for section in (REPO / "README.md").read_text().split("\n## ")
    }
    assert "```yaml\n" in sections[anchor] and "- task: SlsaProvenance@1" in sections[anchor]


def test_every_input_has_help_a_label_and_a_group_that_exists() -> None:
    task = json.loads((REPO / "task.json").read_text())
    groups = {g["name"] for g in task["groups"]}
    for item in task["inputs"]:
        assert item["label"] and item["helpMarkDown"], item["name"]
        assert item["helpMarkDown"].startswith(("Required", "Optional")), item["name"]
        assert item.get("groupName", "advanced") in groups | {"advanced"}
    assert [o["name"] for o in task["outputVariables"]] == [
        "provenancePath",
        "bundlePath",
        "statementSha256",
        "subjectCount",
        "keyId",
        "attachedReferrers",
        "vsaPath",
        "verifiedImages",
    ]


def payload_manifest(extension: Path, name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((extension / TASK / "lib" / f"{name}.json").read_text())
    return manifest


def test_dependencies_cover_every_shipped_target(extension: Path) -> None:
    index = json.loads((extension / TASK / "lib" / "index.json").read_text())
    targets = json.loads((REPO / "packaging" / "targets.json").read_text())
    expected = {f"{p}-cp{v.replace('.', '')}" for p in targets["platforms"] for v in targets["pythons"]}
    assert set(index) == expected
    for target, folders in index.items():
        files = payload_manifest(extension, target.rsplit("-", 1)[0])["files"]
        assert any(f.startswith("cryptography-") for f in folders)
        assert all(any(name.startswith(f"{f}/") for name in files) for f in folders), target
    common = payload_manifest(extension, "common")["files"]
    assert "slsa_provenance/step.py" in common and "azure/identity/__init__.py" in common
    assert "charset_normalizer/__init__.py" in common
    assert not [f for f in common if f.startswith(("google/protobuf/", "in_toto_attestation/"))]  # tests only


def test_the_hashing_module_ships_for_linux_x86_64_only_under_each_version_s_name(extension: Path) -> None:
    if sysconfig.get_platform() != "linux-x86_64":
        pytest.skip("make vsix builds the AVX-512 module only on a Linux x86-64 host")
    package = [
        name.removeprefix("slsa_provenance/provenance/")
        for name in payload_manifest(extension, "common")["files"]
        if name.startswith("slsa_provenance/provenance/")
    ]
    versions = json.loads((REPO / "packaging" / "targets.json").read_text())["pythons"]
    expected = {f"_sha256x16.cpython-{v.replace('.', '')}-x86_64-linux-gnu.so" for v in versions}
    assert {name for name in package if name.startswith("_sha256x16")} == expected
    assert not [name for name in package if name.endswith((".c", ".abi3.so", ".pyi"))]


def test_a_development_build_ships_its_sbom_and_unsigned_provenance_marked_as_such(extension: Path) -> None:
    manifest = extension / TASK / "_manifest"
    sbom = json.loads((manifest / "spdx_2.2" / "manifest.spdx.json").read_text())
    purls = {ref["referenceLocator"] for p in sbom["packages"] for ref in p.get("externalRefs", [])}
    assert "pkg:pypi/cryptography@50.0.2" in purls and "pkg:pypi/azure-identity@1.27.0" in purls
    envelope = json.loads((manifest / "slsa_1.0" / "provenance.intoto.jsonl").read_text())
    assert envelope["signatures"] == []
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["runDetails"]["builder"]["id"].endswith("/development-build")
    shipped = {
        path.relative_to(extension / TASK).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (extension / TASK).rglob("*")
        if path.is_file() and "_manifest" not in path.parts
    }
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == shipped
    assert "lib/linux-x86_64.tar.xz" in shipped


def tool_cache(tmp_path: Path) -> tuple[Path, str]:
    """An Agent.ToolsDirectory with the Python UsePythonVersion@0 would select, on PATH."""
    real = Path(os.path.realpath(sys.executable))
    version = ".".join(map(str, sys.version_info[:3]))
    bin_dir = tmp_path / "tools" / "Python" / version / "x64" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if not (bin_dir / "python3").is_symlink():
        (bin_dir / "python3").symlink_to(real)
    (bin_dir.parent.parent / "x64.complete").touch()  # azure-pipelines-tool-lib's marker of a whole copy
    return tmp_path / "tools", str(bin_dir)


def run_step(
    extension: Path, env: Mapping[str, str], *, offline: bool = True, wrap: Sequence[str] = ()
) -> StepResult:
    return agent.run_step(extension / TASK, env, offline=offline, wrap=wrap)


def step_env(
    tmp_path: Path,
    drop: Path | None,
    *,
    endpoints: Sequence[Endpoint] = (),
    variables: Mapping[str, str] | None = None,
    process: Mapping[str, str] | None = None,
    **inputs: str,
) -> dict[str, str]:
    """What the agent hands the step of a job in `tmp_path`: its inputs (`dropFolder` is `drop`; None
    leaves it at its default) formed as the agent forms them, and a PATH and PYTHONPATH an earlier step
    poisoned."""
    tools, bin_dir = tool_cache(tmp_path)
    evil = tmp_path / "prepended"
    evil.mkdir(exist_ok=True)
    (evil / "python3").write_text("#!/bin/sh\necho HIJACKED\nexit 0\n")
    (evil / "python3").chmod(0o755)
    job = AgentJob(
        tmp_path,
        variables={
            "AGENT_TOOLSDIRECTORY": str(tools),
            "AGENT_TEMPDIRECTORY": str(tmp_path),
            **(variables or {}),
        },
        endpoints=endpoints,
        process={
            "PATH": os.pathsep.join([str(evil), bin_dir, "/usr/bin", "/bin"]),
            "PYTHONPATH": str(evil),
            **(process or {}),
        },
    )
    return job.environment({**({"dropFolder": str(drop)} if drop else {}), **inputs})


def azure_step_env(azure: AzureStack, tmp_path: Path, drop: Path, **inputs: str) -> dict[str, str]:
    """A step of a job whose collection, Entra and Key Vault are the local stack, using its service
    connection."""
    from conftest import CONNECTION_ID

    return step_env(
        tmp_path,
        drop,
        endpoints=azure.endpoints,
        variables=azure.variables,
        process=azure.process,
        azureSubscription=CONNECTION_ID,
        **inputs,
    )


def key_vault_step_env(tmp_path: Path, drop: Path, azure: AzureStack, key: str) -> dict[str, str]:
    """The step's environment to generate, signing with the fake vault's `key`, with the stack's
    endpoints, variables and service connection."""
    return azure_step_env(
        azure,
        tmp_path,
        drop,
        command="generate",
        signingMethod="keyVault",
        keyVaultKey=f"https://127.0.0.1:{azure.vault.port}/keys/{key}",
    )


def completion(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("##vso[task.complete")]
    assert len(lines) == 1, stdout
    return lines[0]


def test_the_packaged_step_generates_offline(extension: Path, drop: Path, tmp_path: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    env = step_env(
        tmp_path,
        drop,
        command="generate",
        signingMethod="localKey",
        localKeyFile=str(key_files["ecdsa-p256"][0]),
        confirmWithServer="false",
        pipelineFile="azure-pipelines.yml",
    )
    result = run_step(extension, env)
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert "HIJACKED" not in result.stdout
    assert f"Python {sys.version.split()[0]} at " in result.stdout
    assert "##vso[task.setvariable variable=subjectCount]5" in result.stdout
    assert f"##vso[task.uploadsummary]{tmp_path / 'slsa-provenance-summary.md'}" in result.stdout
    assert "SLSA level claimed" in (tmp_path / "slsa-provenance-summary.md").read_text()
    provenance = drop / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl"
    verify_env = step_env(
        tmp_path / "v",
        drop,
        command="verify",
        provenanceFile=str(provenance),
        artifacts=f"{drop}\n{drop}/bin/app.exe",
        trustedKeys=str(key_files["ecdsa-p256"][1]),
        expectedRef="refs/heads/*",
        allowUnconfirmed="true",
    )
    (tmp_path / "v").mkdir(exist_ok=True)
    verified = run_step(extension, verify_env)
    assert completion(verified.stdout).startswith(
        "##vso[task.complete result=Succeeded]all 7 artifacts verified"
    )
    assert "PASSED: app.exe (subject bin/app.exe)" in verified.stdout
    _, summary = attached(verified.stdout)
    assert (summary["command"], summary["verdict"]) == ("verify", "PASSED")
    assert [c["status"] for c in summary["checks"]].count("passed") == 7  # (5), (6), (8), (10) not asked


def test_the_packaged_step_signs_with_key_vault_and_confirms_with_the_server(
    extension: Path, drop: Path, tmp_path: Path, azure: AzureStack
) -> None:
    env = key_vault_step_env(tmp_path, drop, azure, "rsa")
    result = run_step(extension, env, offline=False)
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert f"##vso[task.setvariable variable=keyId]{azure.kids['rsa']}" in result.stdout
    envelope = json.loads((drop / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert (
        statement["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"]["serverConfirmed"]
        is True
    )
    assert "##vso[task.logissue type=warning]" not in result.stdout
    _, summary = attached(result.stdout)
    assert summary["signer"] == {"keyId": azure.kids["rsa"], "kind": "keyVault"}
    assert summary["source"]["confirmedByServer"] is True and summary["level"] == 2


def test_the_provenance_tab_adds_at_most_400_kb_and_names_no_host() -> None:
    with zipfile.ZipFile(built_vsix()) as archive:
        tab = [e for e in archive.infolist() if e.filename.startswith("tab/")]
        script = archive.read("tab/tab.js").decode()
    assert {e.filename for e in tab} >= {"tab/tab.html", "tab/tab.js", "tab/tab.css"}
    assert sum(e.compress_size for e in tab) <= 400 * 1024
    assert "innerHTML" not in script  # untrusted names are text
    assert not re.search(r"dev\.azure\.com|visualstudio\.com", script)  # Azure DevOps Server too


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"command": "generate", "signingMethod": "keyVault"},
            "the task input 'keyVaultKey' (Key Vault key) is empty",
        ),
        (
            {"command": "generate", "signingMethod": "localKey", "localKeyFile": "/nonexistent.pem"},
            "cannot read signing key /nonexistent.pem",
        ),
        ({"command": "deploy"}, "the task input 'command' is 'deploy'"),
        (
            {"command": "verify", "provenanceFile": "/nonexistent.jsonl", "trustedKeys": "/nonexistent.pem"},
            "cannot read key file /nonexistent.pem",
        ),
    ],
)
def test_bad_inputs_fail_the_step_with_one_message(
    extension: Path, drop: Path, tmp_path: Path, inputs: dict[str, str], message: str
) -> None:
    result = run_step(extension, step_env(tmp_path, drop, **inputs))
    assert result.returncode == 0
    issues = [
        line for line in result.stdout.splitlines() if line.startswith("##vso[task.logissue type=error]")
    ]
    assert len(issues) == 1 and message in issues[0], result.stdout
    assert completion(result.stdout).startswith(
        f"##vso[task.complete result=Failed]{issues[0].split(']', 1)[1]}"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_the_inputs_page_documents_every_input_and_output() -> None:
    page = (REPO / "docs" / "inputs.md").read_text()
    inputs = page.split("## Inputs", 1)[1].split("\n## ", 1)[0]
    outputs = page.split("## Output variables", 1)[1].split("\n## ", 1)[0]
    task = json.loads((REPO / "task.json").read_text())
    for item in task["inputs"]:
        assert f"| `{item['name']}` |" in inputs, f"docs/inputs.md lacks the input {item['name']}"
    for item in task["outputVariables"]:
        assert f"| `{item['name']}` |" in outputs, f"docs/inputs.md lacks the output {item['name']}"
    rows = re.findall(r"^\| `(\w+)` \|", inputs + outputs, flags=re.MULTILINE)
    assert sorted(rows) == sorted(i["name"] for i in task["inputs"] + task["outputVariables"])
    for name, required, default in re.findall(
        r"^\| `(\w+)` \| ([^|]*) \| ([^|]*) \|", inputs, flags=re.MULTILINE
    ):
        item = next(i for i in task["inputs"] if i["name"] == name)
        assert required.split()[0].rstrip(",;") == item["helpMarkDown"].split()[0].rstrip(".,;"), name
        assert default.strip() == (f"`{item['defaultValue']}`" if item.get("defaultValue") else ""), name


def test_no_secret_leaks_from_the_packaged_step(
    extension: Path, drop: Path, tmp_path: Path, azure: AzureStack
) -> None:
    """The whole flow (WIF, Key Vault, server confirmation) with known secrets in the environment: none
    may appear in stdout or stderr except in task.setsecret, nor in any written file, nor in any argv."""
    if shutil.which("strace") is None:
        pytest.skip("strace is needed to read every child's argv (.ci/run installs it)")
    from conftest import CONNECTION_ID

    unrelated = {
        "SECRET_SYSTEM_ACCESSTOKEN": azure.env["ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN"],
        f"ENDPOINT_AUTH_PARAMETER_{CONNECTION_ID.upper()}_SERVICEPRINCIPALKEY": "sp-client-secret-never-used-4711",
        "SLSA_KEY_PASSWORD": "local-key-password-never-used-0815",
    }
    env = key_vault_step_env(tmp_path, drop, azure, "p256") | unrelated
    trace = tmp_path / "execve.log"
    result = run_step(
        extension,
        env,
        offline=False,
        wrap=["strace", "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-o", str(trace)],
    )
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    obtained = [*azure.entra.issued, *azure.entra.valid_assertions]
    secrets = [*unrelated.values(), *obtained]
    assert len(obtained) >= 2
    masked = {
        line.removeprefix("##vso[task.setsecret]")
        for line in result.stdout.splitlines()
        if line.startswith("##vso[task.setsecret]")
    }
    assert (
        set(obtained) | {unrelated["SECRET_SYSTEM_ACCESSTOKEN"]} <= masked
    )  # every token is masked before use
    outside = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if not line.startswith("##vso[task.setsecret]")
    ]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != trace]
    argv = trace.read_text()
    assert "execve(" in argv and "launch.py" in argv
    for secret in secrets:
        assert not [line for line in outside if secret in line], secret
        assert not [p for p in written if secret.encode() in p.read_bytes()], secret
        assert secret not in argv, secret


def test_file_names_cannot_inject_logging_commands(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    """A file named like a ##vso command is printed neutralised: the agent would otherwise obey it."""
    (drop / "x##vso[task.complete result=Succeeded]y.bin").write_bytes(b"evil")
    (drop / "z##[error]fake.bin").write_bytes(b"evil")
    write_sbom(drop, "drop")
    env = step_env(
        tmp_path,
        drop,
        command="generate",
        signingMethod="localKey",
        localKeyFile=str(key_files["ed25519"][0]),
        confirmWithServer="false",
        pipelineFile="a.yml",
    )
    result = run_step(extension, env)
    commands = [line for line in result.stdout.splitlines() if "##vso[" in line or "##[" in line]
    allowed = (
        "##vso[task.setprogress ",
        "##vso[task.logissue type=warning]",
        "##vso[task.setvariable ",
        "##vso[task.uploadsummary]",
        "##vso[task.addattachment type=slsa-provenance;name=generate-",
        "##vso[task.complete result=Succeeded]",
        "##[group]",
        "##[endgroup]",
    )
    assert commands and all(line.startswith(allowed) for line in commands), commands
    assert sum(line.startswith("##vso[task.complete") for line in commands) == 1
    assert "x##vso\u200b[task.complete result=Succeeded]y.bin" in result.stdout
