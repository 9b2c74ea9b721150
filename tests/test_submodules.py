"""Submodules of a real git repository made in the test, recorded as resolved dependencies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import OUTPUT, PIPELINE_ENV, generate_cli, statement_of
from slsa_provenance.errors import Error
from slsa_provenance.provenance.statement import ResourceDescriptor
from slsa_provenance.provenance.submodules import submodules

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(folder: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "HOME": str(folder),
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.strip()


@pytest.fixture
def superproject(tmp_path: Path) -> tuple[Path, str, str]:
    commits = []
    for name in ("lib", "proto"):
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q")
        (repo / "README").write_text(name)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "init")
        commits.append(git(repo, "rev-parse", "HEAD"))
    app = tmp_path / "app"
    app.mkdir()
    git(app, "init", "-q")
    git(app, "submodule", "add", "-q", "../lib", "libs/lib")
    git(app, "submodule", "add", "-q", str(tmp_path / "proto"), "proto")
    git(app, "commit", "-qm", "add submodules")
    return app, commits[0], commits[1]


def test_pinned_commits_and_urls(superproject: tuple[Path, str, str], tmp_path: Path) -> None:
    app, lib_commit, proto_commit = superproject
    found = submodules(app, "https://dev.azure.com/contoso/web/_git/app")
    assert found == [
        ResourceDescriptor(
            uri="git+https://dev.azure.com/contoso/web/_git/lib",
            name="libs/lib",
            digest={"gitCommit": lib_commit},
        ),
        ResourceDescriptor(uri=f"git+{tmp_path / 'proto'}", name="proto", digest={"gitCommit": proto_commit}),
    ]


def test_the_pinned_commit_is_read_without_a_checkout(superproject: tuple[Path, str, str]) -> None:
    app, lib_commit, _ = superproject
    git(app, "submodule", "deinit", "-q", "--all", "-f")
    assert [d.digest["gitCommit"] for d in submodules(app, "https://x/y")][0] == lib_commit


def test_generate_records_them(superproject: tuple[Path, str, str], drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    app, lib_commit, _ = superproject
    result = generate_cli(
        drop, key_files["ecdsa-p256"][0], env={**PIPELINE_ENV, "BUILD_SOURCESDIRECTORY": str(app)}
    )
    assert result.returncode == 0, result.stderr
    dependencies = statement_of(drop / OUTPUT)["predicate"]["buildDefinition"]["resolvedDependencies"]  # type: ignore[index]
    assert dependencies[1] == {
        "uri": "git+https://dev.azure.com/contoso/web/_git/lib",
        "name": "libs/lib",
        "digest": {"gitCommit": lib_commit},
    }


def test_no_gitmodules_means_none(tmp_path: Path) -> None:
    assert submodules(tmp_path, "https://x/y") == []


def test_a_broken_repository_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".gitmodules").write_text('[submodule "x"]\n\tpath = x\n\turl = ../x\n')
    with pytest.raises(Error, match="git cannot read"):
        submodules(tmp_path, "https://x/y")
