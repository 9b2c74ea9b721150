"""The package's size and payloads: the budget, no key of any kind, every platform x Python folder, and the
cache the real node entry unpacks into (concurrent jobs, a tampered cache, a tampered archive)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from build import BUDGET, size_report

from agent import StepResult
from conftest import REPO, built_vsix
from test_extension import TASK, completion, payload_manifest, run_step, step_env

pytestmark = pytest.mark.integration
TARGETS = json.loads((REPO / "packaging" / "targets.json").read_text())
# A PEM key block with its base64 body (parsers that merely name the header do not match).
KEY_MATERIAL = re.compile(rb"-----BEGIN [A-Z ]*(PRIVATE|PUBLIC) KEY-----\r?\n[A-Za-z0-9+/=]{40,}")


def this_platform() -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(os.uname().machine.lower(), os.uname().machine)
    return f"{sys.platform}-{machine}"


def test_the_package_is_within_the_budget_and_says_what_weighs() -> None:
    vsix = built_vsix()
    assert vsix.stat().st_size <= BUDGET
    report = size_report(vsix)
    assert report[0].startswith(f"{vsix.name}: {vsix.stat().st_size:,} bytes")
    assert f"{TASK}/lib/linux-x86_64.tar.xz" in report[1] + report[2]  # the largest payload leads


def test_no_key_of_any_kind_ships_not_even_inside_the_payloads(extension: Path) -> None:
    found = []
    for path in extension.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix in {".pem", ".key", ".pub"} or KEY_MATERIAL.search(path.read_bytes()):
            found.append(path.relative_to(extension).as_posix())
        if path.name.endswith(".tar.xz"):
            with tarfile.open(path, "r:xz") as tar:
                for member in tar:
                    stream = tar.extractfile(member)
                    data = stream.read() if stream else b""
                    if member.name.endswith((".key", ".pub")) or KEY_MATERIAL.search(data):
                        found.append(f"{path.name}:{member.name}")
    assert found == []


@pytest.mark.parametrize("platform", sorted(TARGETS["platforms"]))
def test_every_python_of_every_platform_has_its_compiled_modules(extension: Path, platform: str) -> None:
    index = json.loads((extension / TASK / "lib" / "index.json").read_text())
    files = payload_manifest(extension, platform)["files"]
    suffix = {"win32": ".pyd", "linux": ".so", "darwin": ".so"}[platform.split("-")[0]]
    for python in TARGETS["pythons"]:
        version = python.replace(".", "")
        folders = index[f"{platform}-cp{version}"]
        modules = [f.split("/", 1)[1] for f in files if f.split("/")[0] in folders and f.endswith(suffix)]
        assert any(m.startswith("cryptography/hazmat/bindings/_rust") for m in modules), (platform, python)
        for package in ("_cffi_backend", "rpds/rpds"):
            built = [m for m in modules if m.startswith(package)]
            assert built and all(f"cp{version}" in m or f"cpython-{version}" in m for m in built), built


def interpreter(version: str) -> str | None:
    """This machine's CPython of that version: the running one, pythonX.Y on PATH, or one pyenv installed."""
    if sys.version_info[:2] == tuple(map(int, version.split("."))):
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False).stdout.strip()
        candidates += [str(p) for p in sorted(Path(root).glob(f"versions/{version}.*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        real = subprocess.run(
            [candidate, "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if real.returncode == 0:
            return real.stdout.strip()
    return None


def packaged_env(tmp_path: Path, drop: Path, key: Path, python: str | None = None) -> dict[str, str]:
    env = step_env(
        tmp_path,
        drop,
        command="generate",
        signingMethod="localKey",
        localKeyFile=str(key),
        confirmWithServer="false",
        pipelineFile="azure-pipelines.yml",
    )
    if python:  # the tool cache the entry trusts holds this interpreter instead
        bin_dir = next((tmp_path / "tools" / "Python").glob("*/x64/bin"))
        (bin_dir / "python3").unlink()
        (bin_dir / "python3").symlink_to(python)
    return env


def succeeded(result: StepResult) -> bool:
    return completion(result.stdout).startswith("##vso[task.complete result=Succeeded]")


@pytest.mark.parametrize("version", TARGETS["pythons"])
def test_each_shipped_python_runs_the_packaged_step_through_node(
    extension: Path, drop: Path, tmp_path: Path, key_files, version: str
) -> None:  # type: ignore[no-untyped-def]
    if this_platform() not in TARGETS["platforms"]:
        pytest.skip(f"the package ships nothing for {this_platform()}")
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine to run the {this_platform()} folder with")
    result = run_step(extension, packaged_env(tmp_path, drop, key_files["ecdsa-p256"][0], python))
    assert succeeded(result), result.stdout + result.stderr
    assert f"Python {version}." in result.stdout


def cached(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tools" / "slsa-provenance").iterdir())


def test_two_jobs_unpacking_at_once_leave_one_whole_cache(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    second = tmp_path / "second"
    shutil.copytree(drop, second)
    envs = [packaged_env(tmp_path, d, key_files["ed25519"][0]) for d in (drop, second)]
    results: list[StepResult] = []
    jobs = [threading.Thread(target=lambda env=env: results.append(run_step(extension, env))) for env in envs]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert len(results) == 2 and all(succeeded(r) for r in results), [r.stdout + r.stderr for r in results]
    names = [p.name for p in cached(tmp_path)]
    assert len(names) == 2 and {n.split("-")[0] for n in names} == {"common", this_platform().split("-")[0]}
    assert not any("warning" in r.stdout and "cached" in r.stdout for r in results)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda common: (common / "slsa_provenance" / "cli.py").write_text(
                "raise SystemExit('TAMPERED')\n"
            ),
            "slsa_provenance/cli.py was changed",
        ),
        (
            lambda common: (common / "json.py").write_text("raise SystemExit('TAMPERED')\n"),
            "json.py is not part of the payload",
        ),
        (lambda common: (common / "jwt" / "api_jwt.py").unlink(), "jwt/api_jwt.py is missing"),
    ],
    ids=["changed", "added", "removed"],
)
def test_a_tampered_cache_is_detected_and_unpacked_again(
    extension: Path, drop: Path, tmp_path: Path, key_files, change, reason: str
) -> None:  # type: ignore[no-untyped-def]
    env = packaged_env(tmp_path, drop, key_files["ed25519"][0])
    assert succeeded(run_step(extension, env))
    common = next(p for p in cached(tmp_path) if p.name.startswith("common-"))
    change(common)
    again = run_step(extension, env)
    assert succeeded(again), again.stdout + again.stderr
    assert "TAMPERED" not in again.stdout + again.stderr
    warnings = [
        line for line in again.stdout.splitlines() if line.startswith("##vso[task.logissue type=warning]")
    ]
    assert any(f"the cached {common} differs from the task's payload ({reason})" in w for w in warnings)
    assert not (common / "json.py").exists() and (common / "jwt" / "api_jwt.py").is_file()
    assert "TAMPERED" not in (common / "slsa_provenance" / "cli.py").read_text()
    third = run_step(extension, env)
    assert succeeded(third) and "differs from the task's payload" not in third.stdout


def test_a_tampered_archive_is_refused(extension: Path, drop: Path, tmp_path: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "extension"
    shutil.copytree(extension / TASK, copy / TASK)
    archive = copy / TASK / "lib" / "common.tar.xz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = run_step(copy, packaged_env(tmp_path, drop, key_files["ed25519"][0]))
    message = f"{archive} does not match the digest its manifest records; reinstall the extension"
    assert completion(result.stdout).startswith(f"##vso[task.complete result=Failed]{message}")
    assert not any(p.name.startswith("common-") for p in cached(tmp_path))


def test_without_a_tool_folder_the_cache_is_the_task_s_own(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "extension"
    shutil.copytree(extension / TASK, copy / TASK)
    env = packaged_env(tmp_path, drop, key_files["ed25519"][0])
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin"])
    del env["AGENT_TOOLSDIRECTORY"]
    if subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; assert sys.version_info >= (3, 11)"]
    ).returncode:
        pytest.skip("this machine's /usr/bin/python3 is older than 3.11")
    result = run_step(copy, env)
    assert succeeded(result), result.stdout + result.stderr
    assert {p.name.split("-")[0] for p in (copy / TASK / "cache").iterdir()} == {"common", sys.platform}


def release_build(*args: str, signer: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLSA_SIGNER"}
    if signer:
        env["SLSA_SIGNER"] = signer
    return subprocess.run(
        [sys.executable, str(REPO / "packaging" / "build.py"), *args, "--release"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("signer", ["", "file:/tmp/throwaway.pem", "none"])
def test_a_release_build_refuses_to_start_without_a_key_vault_signer(signer: str) -> None:
    result = release_build(signer=signer)
    assert result.returncode == 2, result.stderr
    assert "a release build signs its provenance with a Key Vault key" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_release_pack_refuses_the_development_build_s_unsigned_provenance(extension: Path) -> None:
    staged = REPO / "build" / "extension" / TASK / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl"
    if not staged.is_file():
        pytest.skip("no staged build/extension: run 'make vsix' (make test builds it first)")
    assert json.loads(staged.read_text())["signatures"] == []
    result = release_build("--pack")
    assert result.returncode == 2, result.stderr
    assert f"error: {staged} is unsigned; run `build.py --stage`" in result.stderr


def test_a_yaml_policy_is_read_by_the_pure_python_yaml_shipped_once(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    """PyYAML ships as the Python files of one wheel (its C module is optional): a YAML policy works."""
    index = json.loads((extension / TASK / "lib" / "index.json").read_text())
    assert not any(f.startswith("pyyaml-") for folders in index.values() for f in folders)
    common = payload_manifest(extension, "common")["files"]
    assert "yaml/__init__.py" in common and not [f for f in common if f.startswith("yaml/_yaml")]
    private, public = key_files["ecdsa-p256"]
    assert succeeded(run_step(extension, packaged_env(tmp_path, drop, private)))
    policy = tmp_path / "policy.yml"
    policy.write_text(f"# reviewed\ntrustedKeys:\n  - {public}\nallowUnconfirmed: true\n")
    env = step_env(
        tmp_path / "verify",
        drop,
        command="verify",
        provenanceFile=str(drop / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl"),
        artifacts=str(drop),
        policyFile=str(policy),
    )
    result = run_step(extension, env)
    assert succeeded(result), result.stdout + result.stderr
    assert "PASSED: bin/app.dll" in result.stdout


def test_a_python_without_lzma_is_told_what_to_do(extension: Path, tmp_path: Path) -> None:
    """launch.py itself, in a Python whose lzma module cannot be imported: one sentence, no traceback."""
    launcher = extension / TASK / "launch.py"
    hide_lzma = (
        "import runpy, sys; sys.modules['lzma'] = sys.modules['_lzma'] = None; "
        f"sys.argv = [{str(launcher)!r}, 'task']; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    env = step_env(tmp_path, None, command="generate")  # tools folder tmp_path/tools, every input
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", hide_lzma], env=env, capture_output=True, text=True, check=False
    )
    message = f"this Python ({sys.executable}) was built without the lzma module the task's payloads need"
    assert result.stdout.startswith(f"##vso[task.logissue type=error]{message}"), (
        result.stdout + result.stderr
    )
    assert completion(result.stdout).startswith(f"##vso[task.complete result=Failed]{message}")
    assert "Traceback" not in result.stderr
    assert not [p for p in (tmp_path / "tools" / "slsa-provenance").iterdir() if not p.name.startswith(".")]


def hostile_module(mark: Path) -> str:
    """Python that records it ran, the way a pipeline sharing the tools folder would plant it."""
    return f"import pathlib\npathlib.Path({str(mark)!r}).write_text('ran')\n"


def warm_cache(extension: Path, drop: Path, tmp_path: Path, key: Path) -> tuple[dict[str, str], Path]:
    env = packaged_env(tmp_path, drop, key)
    first = run_step(extension, env)
    assert succeeded(first), first.stdout + first.stderr
    return env, next(p for p in cached(tmp_path) if p.name.startswith("common-"))


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line for line in result.stdout.splitlines() if line.startswith("##vso[task.logissue type=warning]")
    ]


def test_an_unchecked_hash_pyc_planted_in_the_shared_cache_never_runs(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    """Python runs an unchecked hash-based .pyc without reading its source: one in the cache's __pycache__
    would make the next pipeline's signing step run another pipeline's code."""
    env, common = warm_cache(extension, drop, tmp_path, key_files["ed25519"][0])
    mark, hostile = tmp_path / "pyc-ran", tmp_path / "hostile.py"
    hostile.write_text(hostile_module(mark))
    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
    planted = common / "slsa_provenance" / "__pycache__" / f"cli.{tag}.pyc"
    py_compile.compile(
        str(hostile), cfile=str(planted), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    again = run_step(extension, env)
    assert succeeded(again), again.stdout + again.stderr
    assert not mark.exists(), "the planted bytecode ran"
    reason = "slsa_provenance/__pycache__ is not part of the payload"
    assert any(
        f"the cached {common} differs from the task's payload ({reason})" in w for w in warnings_of(again)
    )
    assert not list(common.rglob("__pycache__")), "the step writes no bytecode into the shared cache"


@pytest.mark.parametrize("kind", ["folder link", "empty folder"])
def test_nothing_in_the_shared_cache_shadows_the_standard_library(
    extension: Path, drop: Path, tmp_path: Path, key_files, kind: str
) -> None:  # type: ignore[no-untyped-def]
    """A folder named like a standard module (argparse, which the CLI imports first): a link, which the
    digest check's walk did not enter, or an empty folder (a namespace package to Python), which held
    no file for the check to find."""
    env, common = warm_cache(extension, drop, tmp_path, key_files["ed25519"][0])
    mark, package = tmp_path / "argparse-ran", tmp_path / "planted" / "argparse"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(hostile_module(mark))
    if kind == "folder link":
        (common / "argparse").symlink_to(package, target_is_directory=True)
        reason = "argparse is a symbolic link"
    else:
        (common / "argparse").mkdir()
        reason = "argparse is not part of the payload"
    again = run_step(extension, env)
    assert succeeded(again), again.stdout + again.stderr
    assert not mark.exists(), "a module planted in the cache ran"
    assert any(
        f"the cached {common} differs from the task's payload ({reason})" in w for w in warnings_of(again)
    )
    assert not (common / "argparse").exists()


def test_file_names_in_the_cache_cannot_write_commands(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    """launch.py names the unlisted file in its warning: a name with a line break and a command in it
    stays one neutralised line."""
    env, common = warm_cache(extension, drop, tmp_path, key_files["ed25519"][0])
    (common / "x\n##vso[task.complete result=Succeeded]forged").write_text("")
    again = run_step(extension, env)
    assert succeeded(again), again.stdout + again.stderr
    assert not [line for line in again.stdout.splitlines() if line.startswith("##vso[task.complete")][1:]
    assert "forged" not in completion(again.stdout)
    assert any("x%0A##vso\u200b[task.complete result=Succeeded]forged" in w for w in warnings_of(again))


def launch_module(extension: Path) -> Any:
    """The packaged launch.py, imported as a module (its loaders are what the step imports through)."""
    spec = importlib.util.spec_from_file_location("launch_under_test", extension / TASK / "launch.py")
    assert spec and spec.loader
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    return launch


def test_a_source_swapped_after_the_cache_was_checked_is_refused_at_import(
    extension: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check and the import are two moments: a job sharing the cache could swap a file between
    them. launch.py compiles the bytes it read only when they are the manifest's."""
    launch = launch_module(extension)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "path_hooks", list(sys.path_hooks))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    folder = tmp_path / "common-0123456789abcdef"
    folder.mkdir()
    checked, swapped = b"ANSWER = 42\n", b"ANSWER = 'swapped'\n"
    (folder / "checked_module.py").write_bytes(checked)
    (folder / "swapped_module.py").write_bytes(swapped)
    digest = hashlib.sha256(checked).hexdigest()
    launch.import_from([folder], {str(folder / f"{n}_module.py"): digest for n in ("checked", "swapped")})
    try:
        assert importlib.import_module("checked_module").ANSWER == 42
        with pytest.raises(
            ImportError, match=r"swapped_module\.py changed after the task's cache was checked"
        ):
            importlib.import_module("swapped_module")
    finally:
        sys.modules.pop("checked_module", None)
        sys.path_importer_cache.clear()
    assert not (folder / "__pycache__").exists()


def test_a_cached_folder_that_is_a_link_is_unpacked_afresh(
    extension: Path, drop: Path, tmp_path: Path, key_files
) -> None:  # type: ignore[no-untyped-def]
    """The payload's folder itself swapped for a link to a copy another job controls (whole now,
    changed later): refused, and the link removed."""
    env, common = warm_cache(extension, drop, tmp_path, key_files["ed25519"][0])
    elsewhere = tmp_path / "elsewhere"
    common.rename(elsewhere)
    common.symlink_to(elsewhere, target_is_directory=True)
    again = run_step(extension, env)
    assert succeeded(again), again.stdout + again.stderr
    reason = f"{common.name} is a symbolic link"
    assert any(
        f"the cached {common} differs from the task's payload ({reason})" in w for w in warnings_of(again)
    )
    assert common.is_dir() and not common.is_symlink()
    assert not [p for p in cached(tmp_path) if p.is_symlink()]


def test_a_compiled_module_added_after_the_cache_was_checked_is_refused_at_import(
    extension: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiled module dropped into a checked folder (for a name some library imports if it can):
    loaded only when the manifest lists it."""
    native = next((REPO / "src" / "slsa_provenance" / "provenance").glob("_sha256x16*.so"), None)
    if native is None:
        pytest.skip("no built _sha256x16 module in src/ (make .venv/.installed builds it)")
    launch = launch_module(extension)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "path_hooks", list(sys.path_hooks))
    listed, added = tmp_path / "listed", tmp_path / "added"
    for folder in (listed, added):
        folder.mkdir()
        shutil.copy(native, folder / native.name)
    launch.import_from([added], {})
    try:
        with pytest.raises(ImportError, match=rf"{re.escape(native.name)} is not part of the task's payload"):
            importlib.import_module("_sha256x16")
        sys.path_importer_cache.clear()
        launch.import_from([listed], {str(listed / native.name): "checked before the import"})
        sys.path.remove(str(added))
        assert importlib.import_module("_sha256x16").__file__ == str(listed / native.name)
    finally:
        sys.modules.pop("_sha256x16", None)
        sys.path_importer_cache.clear()
