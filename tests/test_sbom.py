"""Binding the provenance to sbom-tool's SBOM: sidecars, SPDX 2.2 and 3.0, the cross-check, check (10)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import OUTPUT, run_cli, shared_ref, statement_of
from conftest import generate_cli as generate
from slsa_provenance.errors import InputError
from slsa_provenance.provenance.sbom import describe, find_sboms, load_sbom, mismatches
from slsa_provenance.provenance.statement import Subject

SAMPLE_EXE = "2dba00b048555bd12d5527d4b16d2ca110a129f5c719d8505f23dc9d87ef7640"


@pytest.mark.parametrize("version", ["spdx_2.2", "spdx_3.0"])
def test_real_sbom_tool_output_is_read_byte_exact(version: str, tmp_path: Path) -> None:
    source = shared_ref(f"sbom-tool/samples/_manifest/{version}")
    drop = tmp_path / "drop"
    shutil.copytree(source, drop / "_manifest" / version)
    body = (drop / "_manifest" / version / "manifest.spdx.json").read_bytes()
    assert b"\r\n" in body  # CRLF kept: the sidecar only matches the exact bytes
    [sbom] = find_sboms(drop)
    assert sbom.name == f"_manifest/{version}/manifest.spdx.json"
    assert sbom.sha256 == hashlib.sha256(body).hexdigest()
    assert sbom.files == {"sbom-tool-win-x64.exe": SAMPLE_EXE}
    assert len(sbom.packages) > 200
    assert any(p.uri == "pkg:nuget/Microsoft.Sbom.Adapters@4.0.3" for p in sbom.packages)
    (drop / "sbom-tool-win-x64.exe").write_bytes(b"not the released binary")
    subjects = [Subject("sbom-tool-win-x64.exe", hashlib.sha256(b"not the released binary").hexdigest())]
    assert mismatches(sbom, subjects, every_file=True) == [
        f"sbom-tool-win-x64.exe: sha256 got {subjects[0].sha256}, expected {SAMPLE_EXE} (the SBOM)"
    ]
    assert mismatches(sbom, [Subject("sbom-tool-win-x64.exe", SAMPLE_EXE)], every_file=True) == []


def test_a_final_newline_added_after_sbom_tool_is_named() -> None:
    path = shared_ref("sbom/sbom-tool-1.5.1-source-drop/_manifest/spdx_2.2/manifest.spdx.json")
    with pytest.raises(InputError, match="does not match its sidecar.*gained a final newline"):
        load_sbom(path, "_manifest/spdx_2.2/manifest.spdx.json")


def test_a_utf16_sidecar_is_read_and_a_reformatted_sbom_is_caught() -> None:
    path = shared_ref("sbom/ado-manifest-task-2.1.14-repo-drop/_manifest/spdx_2.2/manifest.spdx.json")
    with pytest.raises(
        InputError, match=r"sha256 got [0-9a-f]{64}, expected [0-9a-f]{64}; the SBOM was changed after"
    ):
        load_sbom(path, "x")
    assert load_sbom(
        path, "x", check_sidecar=False
    ).files  # lenient reader: SPDXID without prefix, PACKAGE_MANAGER


def test_generate_binds_the_sbom_and_verify_checks_it(drop: Path, key_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    result = generate(drop, private, "--sbom-packages")
    assert result.returncode == 0, result.stderr
    statement: dict = statement_of(drop / OUTPUT)  # type: ignore[type-arg]
    sbom_path = drop / "_manifest/spdx_2.2/manifest.spdx.json"
    digest = hashlib.sha256(sbom_path.read_bytes()).hexdigest()
    assert statement["predicate"]["runDetails"]["byproducts"] == [
        {
            "name": "_manifest/spdx_2.2/manifest.spdx.json",
            "digest": {"sha256": digest},
            "mediaType": "application/spdx+json",
        }
    ]
    assert statement["predicate"]["buildDefinition"]["resolvedDependencies"][1] == {
        "uri": "pkg:pypi/requests@2.34.2",
        "digest": {"sha256": "a" * 64},
    }
    ok = run_cli(
        "verify",
        "--provenance",
        drop / OUTPUT,
        "--key",
        public,
        "--artifact",
        drop,
        "--sbom",
        sbom_path,
        "--allow-unconfirmed",
    )
    assert ok.returncode == 0, ok.stdout
    other = tmp_path / "other.spdx.json"
    other.write_text("{}")
    bad = run_cli(
        "verify",
        "--provenance",
        drop / OUTPUT,
        "--key",
        public,
        "--artifact",
        drop / "README.txt",
        "--sbom",
        other,
        "--allow-unconfirmed",
    )
    assert bad.returncode == 1
    assert bad.stdout == (
        f"FAILED: README.txt: (10) sbom: byproducts sha256: got {hashlib.sha256(b'{}').hexdigest()}, "
        f"expected one of ['{digest}']\n"
    )


def test_a_binary_changed_after_the_sbom_fails_strict_and_warns_in_warn(drop: Path, key_files) -> None:  # type: ignore[no-untyped-def]
    (drop / "bin" / "app.exe").write_bytes(b"signed after sbom-tool ran")
    strict = generate(drop, key_files["ecdsa-p256"][0])
    assert strict.returncode == 2
    assert "disagrees with the drop on 1 file(s): bin/app.exe: sha256 got " in strict.stderr
    assert (
        "run sbom-tool after the last step that writes to the drop, or set the SBOM check to warn"
        in strict.stderr
    )
    assert not (drop / "_manifest" / "slsa_1.0").exists()
    warned = generate(drop, key_files["ecdsa-p256"][0], "--sbom-check", "warn")
    assert (
        warned.returncode == 0
        and "WARNING: SBOM _manifest/spdx_2.2/manifest.spdx.json disagrees" in warned.stderr
    )
    (drop / "_manifest/spdx_2.2/manifest.spdx.json.sha256").write_text("f" * 64)
    off = generate(drop, key_files["ecdsa-p256"][0], "--sbom-check", "off", "--output-dir", drop / "o")
    assert off.returncode == 0 and "WARNING" not in off.stderr


def test_files_missing_on_either_side_are_reported(drop: Path) -> None:
    [sbom] = find_sboms(drop)
    subjects = [Subject(name, digest) for name, digest in sbom.files.items() if name != "README.txt"]
    subjects.append(Subject("extra.bin", "0" * 64))
    assert mismatches(sbom, subjects, every_file=True) == [
        "extra.bin: not in the SBOM",
        "README.txt: in the SBOM but not in the drop",
    ]
    assert mismatches(sbom, subjects[:-1], every_file=False) == []


def test_the_report_shows_twenty_and_counts_the_rest(drop: Path) -> None:
    [sbom] = find_sboms(drop)
    found = [f"f{i}: not in the SBOM" for i in range(27)]
    text = describe(sbom, found)
    assert text.count("not in the SBOM") == 20 and text.endswith("; and 7 more")
    assert "disagrees with the drop on 27 file(s)" in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "is not JSON"),
        (b"[]", "is not an SPDX JSON document"),
        (b'{"name": "x"}', "neither SPDX 2.2 nor SPDX 3.0"),
        (b'{"spdxVersion": "SPDX-2.2", "files": [{"fileName": "./a"}]}', "without a name or a SHA-256"),
    ],
)
def test_malformed_sboms(tmp_path: Path, body: bytes, message: str) -> None:
    (tmp_path / "s.json").write_bytes(body)
    with pytest.raises(InputError, match=message):
        load_sbom(tmp_path / "s.json", "s.json")


def test_malformed_lists_are_read_as_empty(tmp_path: Path) -> None:
    """Found by `make fuzz`: `"files": true` once escaped as a TypeError."""
    (tmp_path / "s.json").write_bytes(b'{"spdxVersion":"","files":true,"packages":{"a":1}}')
    sbom = load_sbom(tmp_path / "s.json", "s.json")
    assert sbom.files == {} and sbom.packages == ()


def test_a_sidecar_that_is_not_a_digest(drop: Path) -> None:
    (drop / "_manifest/spdx_2.2/manifest.spdx.json.sha256").write_text("hello")
    with pytest.raises(InputError, match="does not hold a SHA-256 digest"):
        find_sboms(drop)
