"""The package's own evidence passes the official tools (DESIGN §10): the SBOM in the .vsix validates
with spdx-tools' `pyspdxtools`, names every file of the task folder with its SHA-256 and carries a real
creation time; a warning of `tfx extension create` about task.json fails the build."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_sbom

TASK = "SlsaProvenanceV1"
SBOM = Path("_manifest/spdx_2.2/manifest.spdx.json")


def pyspdxtools(document: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / "pyspdxtools"
    assert tool.is_file(), "pyspdxtools is missing: requirements.lock pins spdx-tools"
    return subprocess.run(
        [str(tool), "--infile", str(document)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.integration
def test_the_vsix_sbom_passes_pyspdxtools(extension: Path) -> None:
    result = pyspdxtools(extension / TASK / SBOM)
    assert result.returncode == 0 and "invalid" not in result.stderr, result.stdout + result.stderr


@pytest.mark.integration
def test_the_vsix_sbom_names_every_file_of_the_task_folder_with_its_sha256(extension: Path) -> None:
    document = json.loads((extension / TASK / SBOM).read_text())
    named = {
        entry["fileName"]: next(c["checksumValue"] for c in entry["checksums"] if c["algorithm"] == "SHA256")
        for entry in document["files"]
    }
    shipped = {
        "./" + path.relative_to(extension / TASK).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (extension / TASK).rglob("*")
        if path.is_file() and path.relative_to(extension / TASK).parts[0] != "_manifest"
    }
    assert named == shipped
    assert "./lib/common.tar.xz" in named and "./index.js" in named
    root = next(p for p in document["packages"] if p["SPDXID"] == "SPDXRef-RootPackage")
    assert sorted(root["hasFiles"]) == sorted(entry["SPDXID"] for entry in document["files"])


def test_a_written_sbom_passes_pyspdxtools_and_lists_its_packages(tmp_path: Path) -> None:
    from spdx import Package

    (tmp_path / "drop" / "bin").mkdir(parents=True)
    (tmp_path / "drop" / "bin" / "app.exe").write_bytes(b"app")
    path = write_sbom(tmp_path / "drop", "drop", [Package("requests", "2.34.2", "a" * 64)])
    result = pyspdxtools(path)
    assert result.returncode == 0 and "invalid" not in result.stderr, result.stdout + result.stderr
    document = json.loads(path.read_text())
    assert document["documentDescribes"] == ["SPDXRef-RootPackage"]
    assert {
        (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
        for r in document["relationships"]
    } == {
        ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-RootPackage"),
        ("SPDXRef-RootPackage", "DEPENDS_ON", "SPDXRef-Package-0"),
    }


def test_the_creation_time_is_source_date_epoch_or_the_time_of_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "a.txt").write_text("a")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764547200")
    created = json.loads(write_sbom(tmp_path / "drop", "drop").read_text())["creationInfo"]["created"]
    assert created == "2025-12-01T00:00:00Z"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    created = json.loads(write_sbom(tmp_path / "drop", "drop").read_text())["creationInfo"]["created"]
    after = datetime.datetime.now(datetime.UTC)
    assert before <= datetime.datetime.fromisoformat(created) <= after
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(SystemExit, match="SOURCE_DATE_EPOCH is 'yesterday', not a count of seconds"):
        write_sbom(tmp_path / "drop", "drop")


def test_make_vsix_takes_the_sbom_s_time_from_the_last_commit() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "vsix"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    ).stdout
    assert 'SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct' in dry_run


@pytest.fixture
def assembled(tmp_path: Path) -> Path:
    """What `make vsix` stages for tfx, without the payloads (build.assemble)."""
    if not (REPO / "node_modules" / ".bin" / "tfx").exists():
        pytest.skip("no node_modules/.bin/tfx: run 'make node_modules/.installed'")
    import build

    stage = tmp_path / "extension"
    build.assemble(stage)
    return stage


def test_tfx_s_output_is_shown_and_a_clean_stage_packs(
    assembled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import build

    vsix = build.pack(assembled, tmp_path / "dist")
    assert vsix.is_file()
    assert "=== Completed operation: create extension ===" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("defect", "named"),
    [
        (
            {"friendlyName": "SLSA Provenance for Azure Pipelines and Server"},
            "friendlyName is a required string <= 40 chars",
        ),
        (
            {"execution": {"Node20_1": {"target": "missing.js"}}},
            "execution.Node20_1.target references file that does not exist: missing.js",
        ),
    ],
    ids=["friendly-name-over-40", "missing-execution-target"],
)
def test_a_tfx_warning_about_task_json_fails_the_build(
    assembled: Path, tmp_path: Path, defect: dict[str, object], named: str
) -> None:
    import build

    task_json = assembled / TASK / "task.json"
    task_json.write_text(json.dumps(json.loads(task_json.read_text()) | defect, indent=2))
    with pytest.raises(SystemExit) as failed:
        build.pack(assembled, tmp_path / "dist")
    assert named in str(failed.value) and str(failed.value).startswith("error: tfx extension create warned")
    assert not list((tmp_path / "dist").glob("*.vsix"))  # nothing half-made is left to upload
