"""The package's folders are its architecture (DESIGN §2): every import, lazy ones included, runs
downward through the layers below, and no module reaches itself again through its imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PIPELINE_ENV
from test_run_summary import generate_env

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "slsa_provenance"

# Lowest first. A module may import its own layer's modules and any layer below, never one above.
LAYERS = [
    {"errors", "untrusted", "globs", "files"},
    {"provenance"},
    {"azure"},
    {"signing"},
    {"registry"},
    {"gate"},
    {"generate"},
    {"step", "run_summary"},
    {"cli", "usage", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, *, lazy: bool = True) -> set[str]:
    """What `path` imports from the package; `lazy=False` leaves out imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slsa_provenance"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(
                    candidate
                    if (PACKAGE.parent / candidate.replace(".", "/")).exists()
                    or (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                    else node.module
                )
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("slsa_provenance")}
    return found - {"slsa_provenance"}


def graph(*, lazy: bool = True) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports_of(path, lazy=lazy) if i in modules} for name, path in modules.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = [
        m for m in graph() if m != "slsa_provenance" and not any(m.split(".")[1] in layer for layer in LAYERS)
    ]
    assert unplaced == [], "add these to a layer of tests/test_layout.py (and to DESIGN's tree)"


def test_imports_run_downward_only() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module != "slsa_provenance"
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_floors_stay_few() -> None:
    """The longest chain of imports made when a module loads (the flat package had 13)."""
    edges = graph(lazy=False)
    depth: dict[str, int] = {}

    def floors(module: str) -> int:
        if module not in depth:
            depth[module] = 1 + max((floors(t) for t in edges[module]), default=0)
        return depth[module]

    assert max(floors(m) for m in edges) <= 9


# Records the modules loaded when the first hashing worker is forked (the audit event of os.fork),
# then runs `python -m slsa_provenance ARGS` as it is.
AT_FORK = """
import os, runpy, sys
loaded = []
sys.addaudithook(lambda event, _: event == "os.fork" and not loaded and loaded.append(sorted(sys.modules)))
sys.argv = ["slsa_provenance", *sys.argv[1:]]
try:
    runpy.run_module("slsa_provenance", run_name="__main__", alter_sys=True)
finally:
    with open(os.environ["LOADED_AT_FORK"], "w") as out:
        out.write(" ".join(loaded[0]) if loaded else "no fork")
"""
NOT_BEFORE_HASHING = ("cryptography", "pickle", "tempfile", "subprocess", "difflib", "azure")
NOT_BEFORE_HASHING_OURS = ("registry", "signing.dsse", "signing.keys", "run_summary", "gate")


@pytest.mark.parametrize("entry", ["cli", "step"])
def test_the_hashing_starts_before_what_it_does_not_need_is_imported(
    entry: str, tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """What runs before the workers start delays the whole run (docs/performance.md): signing
    (cryptography), registries, the run summary, and what only an error or the final write needs
    are imported while the drop is hashed, by the CLI and by the pipeline step alike."""
    drop = tmp_path / "drop"
    for index in range(600):  # enough files for forked workers
        (drop / f"d{index % 7}").mkdir(parents=True, exist_ok=True)
        (drop / f"d{index % 7}" / f"f{index}.bin").write_bytes(b"x" * index)
    key = key_files["ecdsa-p256"][0]
    if entry == "cli":
        args = ["generate", "--drop", str(drop), "--signer", f"file:{key}", "--pipeline-file", "ci.yml"]
        env = {**os.environ, **PIPELINE_ENV, "TF_BUILD": "", "SYSTEM_OIDCREQUESTURI": ""}
    else:
        args, env = ["task"], {**os.environ, **generate_env(tmp_path / "job", drop, key)}
    env["LOADED_AT_FORK"] = str(tmp_path / "loaded")
    run = subprocess.run([sys.executable, "-c", AT_FORK, *args], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    if entry == "step":
        assert "##vso[task.complete result=Succeeded]" in run.stdout, run.stdout
    loaded = (tmp_path / "loaded").read_text().split()
    assert "slsa_provenance.provenance.hashing" in loaded
    early = [
        module
        for module in loaded
        if module.split(".")[0] in NOT_BEFORE_HASHING
        or module.removeprefix("slsa_provenance.").startswith(NOT_BEFORE_HASHING_OURS)
    ]
    assert early == []
