"""The packaged entry picks the first trusted Python whose version the package ships dependencies for,
says exactly what it found when none fits, and gives Python a PATH of trusted system folders only.
Real node, real interpreters; the shipped targets narrowed in a copy of the task folder."""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import StepResult
from test_extension import TASK, completion, run_step, step_env

pytestmark = pytest.mark.integration
HERE = f"{sys.platform}-{platform.machine()}"
OWN = f"{HERE}-cp{sys.version_info[0]}{sys.version_info[1]}"


def narrowed_task(extension: Path, folder: Path, drop_targets: set[str]) -> Path:
    """The task folder with lib/index.json listing fewer targets (the shipped files shared by links)."""
    task = folder / TASK
    (task / "lib").mkdir(parents=True)
    for name in ("index.js", "launch.py", "task.json"):
        shutil.copy(extension / TASK / name, task / name)
    for shipped in (extension / TASK / "lib").iterdir():  # the payloads and their manifests
        if shipped.name != "index.json":
            (task / "lib" / shipped.name).symlink_to(shipped)
    index = json.loads((extension / TASK / "lib" / "index.json").read_text())
    kept = {target: folders for target, folders in index.items() if target not in drop_targets}
    (task / "lib" / "index.json").write_text(json.dumps(kept))
    return folder


def in_tool_cache(tmp_path: Path, interpreters: list[tuple[str, Path]]) -> tuple[Path, list[str]]:
    """An Agent.ToolsDirectory holding these interpreters (version, executable), in PATH order."""
    tools, dirs = tmp_path / "tools", []
    for version, executable in interpreters:
        bin_dir = tools / "Python" / version / "x64" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python3").symlink_to(executable)
        (bin_dir.parent.parent / "x64.complete").touch()
        dirs.append(str(bin_dir))
    return tools, dirs


def version_of(executable: Path) -> str:
    run = subprocess.run(
        [executable, "-I", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stdout.strip()


def other_python() -> Path | None:
    """A real interpreter of another shipped minor version than this one, if the machine has one."""
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    for minor in ("3.12", "3.13", "3.14"):
        if minor == own:
            continue
        found = [
            shutil.which(f"python{minor}"),
            *sorted(glob.glob(f"{pyenv}/versions/{minor}*/bin/python{minor}")),
        ]
        for candidate in filter(None, found):
            if version_of(Path(candidate)).startswith(minor + "."):
                return Path(candidate)
    return None


def unsigned_step_env(tmp_path: Path, drop: Path) -> dict[str, str]:
    return step_env(
        tmp_path / "env",
        drop,
        command="generate",
        signingMethod="unsigned",
        confirmWithServer="false",
        pipelineFile="a.yml",
    )


def run_with(extension: Path, tmp_path: Path, drop: Path, tools: Path, dirs: list[str]) -> StepResult:
    env = unsigned_step_env(tmp_path, drop)
    env["AGENT_TOOLSDIRECTORY"] = str(tools)
    env["PATH"] = os.pathsep.join([*dirs, "/usr/bin", "/bin"])
    return run_step(extension, env)


def test_the_first_interpreter_the_package_ships_for_is_taken(
    extension: Path, drop: Path, tmp_path: Path
) -> None:
    other = other_python()
    if other is None:
        pytest.skip("no Python of a second shipped version (3.12+) on this machine")
    task = narrowed_task(extension, tmp_path / "task", {OWN})
    own = Path(os.path.realpath(sys.executable))
    tools, dirs = in_tool_cache(tmp_path, [(version_of(own), own), (version_of(other), other)])
    result = run_with(task, tmp_path, drop, tools, dirs)
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert f"Python {version_of(other)} at " in result.stdout


def test_no_shipped_interpreter_names_each_one_found(extension: Path, drop: Path, tmp_path: Path) -> None:
    system = [
        Path(p)
        for p in ("/usr/bin/python3", "/usr/local/bin/python3", "/opt/homebrew/bin/python3")
        if Path(p).exists()
    ]
    shipped_here = {f"{HERE}-cp{version_of(p).replace('.', '')[:3]}" for p in [Path(sys.executable), *system]}
    task = narrowed_task(extension, tmp_path / "task", shipped_here)
    own = Path(os.path.realpath(sys.executable))
    tools, dirs = in_tool_cache(tmp_path, [(version_of(own), own)])
    result = run_with(task, tmp_path, drop, tools, dirs)
    message = completion(result.stdout).removeprefix("##vso[task.complete result=Failed]")
    versions = sorted(
        {
            t.rsplit("-cp", 1)[1]
            for t in json.loads((task / TASK / "lib" / "index.json").read_text())
            if t.startswith(HERE)
        },
        key=int,
    )
    supported = ", ".join(f"{v[0]}.{v[1:]}" for v in versions)
    assert message.startswith(
        f"SlsaProvenance@1 ships its dependencies for Python {supported} on {HERE}, and no interpreter it trusts is one of them. Found: "
    )
    found = [f"{dirs[0]}/python3 (Python {version_of(own)}, {OWN})"]
    found += [f"{p} (Python {version_of(p)}, {HERE}-cp{version_of(p).replace('.', '')[:3]})" for p in system]
    assert message.endswith(
        f"Found: {'; '.join(found)}. Add UsePythonVersion@0 with versionSpec '3.12' before this step."
    )
    assert result.stdout.splitlines() == [
        f"##vso[task.logissue type=error]{message}",
        f"##vso[task.complete result=Failed]{message}",
    ]


def private_mounts(binds: dict[str, Path]) -> list[str]:
    """A command prefix that runs in a private mount namespace with these files or folders replaced."""
    if subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0:
        pytest.skip("this machine does not allow private mount namespaces")
    mounts = " && ".join(
        f"mount --bind {source} {target}" for target, source in binds.items() if Path(target).exists()
    )
    return ["unshare", "-rm", "sh", "-c", f'{mounts or "true"} && exec "$0" "$@"']


@pytest.mark.parametrize("replacement", ["not-runnable", "too-old"])
def test_a_hidden_system_python_is_reported_as_found(
    extension: Path, drop: Path, tmp_path: Path, replacement: str
) -> None:
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho {HERE}-cp310 3.10.12\n" if replacement == "too-old" else "")
    fake.chmod(0o755 if replacement == "too-old" else 0o644)
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 to stand in for")
    env = step_env(tmp_path, drop, command="generate")
    env["AGENT_TOOLSDIRECTORY"] = str(tmp_path / "no-tools")
    result = run_step(extension, env, offline=False, wrap=private_mounts({"/usr/bin/python3": fake}))
    message = completion(result.stdout).removeprefix("##vso[task.complete result=Failed]")
    seen = f"Python 3.10.12, {HERE}-cp310" if replacement == "too-old" else "cannot run: EACCES"
    assert f"Found: /usr/bin/python3 ({seen})" in message
    assert message.endswith("Add UsePythonVersion@0 with versionSpec '3.12' before this step.")


def test_python_gets_a_path_of_trusted_system_folders(extension: Path, drop: Path, tmp_path: Path) -> None:
    """git (for submodules) is found in the system's folders, never in a folder an earlier step prepended."""
    git = shutil.which("git", path="/usr/bin:/bin")
    if git is None:
        pytest.skip("git is not installed in /usr/bin")
    sources = tmp_path / "sources"
    sources.mkdir()
    subprocess.run([git, "init", "-q", str(sources)], check=True)
    (sources / ".gitmodules").write_text("")
    local_bin = tmp_path / "local-bin"
    local_bin.mkdir()
    log = tmp_path / "git-saw-path"
    (local_bin / "git").write_text(f'#!/bin/sh\necho "$PATH" > {log}\nexec {git} "$@"\n')
    (local_bin / "git").chmod(0o755)
    env = unsigned_step_env(tmp_path, drop)
    env["BUILD_SOURCESDIRECTORY"] = str(sources)
    result = run_step(extension, env, offline=False, wrap=private_mounts({"/usr/local/bin": local_bin}))
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert log.read_text().strip() == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.parametrize(
    "planted",
    ["Python/any/bin", "Python/3.99.0/x64/bin", "Python/{version}/x64"],
    ids=["not a version", "no .complete marker", "the arch folder itself"],
)
def test_a_tool_cache_python_is_taken_only_in_use_python_version_s_layout(
    extension: Path, drop: Path, tmp_path: Path, planted: str
) -> None:
    """Other pipelines' jobs may write the tool cache: a python3 they put there outside the layout
    UsePythonVersion@0 writes (<version>/<arch>/bin beside <arch>.complete) is never run, even on PATH
    (UsePythonVersion itself puts the arch folder on PATH, before its bin)."""
    own = Path(os.path.realpath(sys.executable))
    tools, dirs = in_tool_cache(tmp_path, [(version_of(own), own)])
    mark = tmp_path / "planted-python-ran"
    folder = tools / planted.format(version=version_of(own))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python3").write_text(f'#!/bin/sh\necho ran > {mark}\nexec {own} "$@"\n')
    (folder / "python3").chmod(0o755)
    result = run_with(extension, tmp_path, drop, tools, [str(folder), *dirs])
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert not mark.exists(), f"the python3 planted in {folder} ran"
    assert f"Python {version_of(own)} at {dirs[0]}/python3" in result.stdout


def test_names_the_entry_prints_cannot_write_commands(extension: Path, drop: Path, tmp_path: Path) -> None:
    """The interpreters found are named in the failure: a folder name holding `##vso[` is neutralised."""
    system = [Path(p) for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()]
    shipped_here = {f"{HERE}-cp{version_of(p).replace('.', '')[:3]}" for p in [Path(sys.executable), *system]}
    task = narrowed_task(extension, tmp_path / "task", shipped_here)
    own = Path(os.path.realpath(sys.executable))
    hostile = tmp_path / "x##vso[task.complete result=Succeeded]forged"
    tools, dirs = in_tool_cache(hostile, [(version_of(own), own)])
    result = run_with(task, tmp_path, drop, tools, dirs)
    message = completion(result.stdout).removeprefix("##vso[task.complete result=Failed]")
    assert "x##vso\u200b[task.complete result=Succeeded]forged" in message
    assert "##vso[" not in message


def test_the_interpreter_s_path_is_printed_neutralised(extension: Path, drop: Path, tmp_path: Path) -> None:
    """The step names the Python it runs on: a tool cache under a folder holding `##vso[` stays text."""
    own = Path(os.path.realpath(sys.executable))
    tools, dirs = in_tool_cache(
        tmp_path / "x##vso[task.complete result=Failed]forged", [(version_of(own), own)]
    )
    result = run_with(extension, tmp_path, drop, tools, dirs)
    assert completion(result.stdout).startswith("##vso[task.complete result=Succeeded]"), (
        result.stdout + result.stderr
    )
    assert f"Python {version_of(own)} at {tools}" in result.stdout.replace("\u200b", "")
    assert "##vso[task.complete result=Failed]forged" not in result.stdout
