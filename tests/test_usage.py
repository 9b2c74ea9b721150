"""The command line's help and its messages, read from the real CLI in a child process: each command
says what it does, shows an example, names the variables it reads (each one the package really
reads) and the exit codes; a mistyped option is answered with the closest real one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import OUTPUT, REPO, generate_cli, run_cli

PACKAGE = REPO / "src" / "slsa_provenance"
COMMANDS = ["generate", "verify", "keygen", "task"]


def help_of(*command: str) -> str:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def variables_named(text: str) -> set[str]:
    section = text.split("environment variables:\n", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b", section))


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]], ids=lambda c: " ".join(c) or "top")
def test_every_help_has_a_description_an_example_the_variables_and_the_exit_codes(command: list[str]) -> None:
    text = help_of(*command)
    usage, description = text.split("\n\n", 2)[:2]
    assert usage.startswith(f"usage: {' '.join(['slsa-provenance', *command])} ")
    assert len(description.split()) >= 8, description  # a sentence, not the option list
    example = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    assert f"slsa-provenance {command[0]} " in example if command and command[0] != "task" else example
    assert "\nenvironment variables:\n  " in text
    if command == ["task"]:
        assert "exit code: 0" in text
    else:
        assert (
            "exit codes:\n  0  ok\n  1  failed (verification or operation)\n  2  usage or bad input" in text
        )


def test_verify_help_names_what_the_gate_reads() -> None:
    assert {
        "SLSA_VSA_SIGNER",
        "SLSA_KEY_PASSWORD",
        "SLSA_HTTP_RETRIES",
        "SLSA_HTTP_TIMEOUT",
        "DOCKER_CONFIG",
        "AGENT_PROXYURL",
        "HTTPS_PROXY",
        "REQUESTS_CA_BUNDLE",
        "INPUT_AZURESUBSCRIPTION",
        "TF_BUILD",
    } <= variables_named(help_of("verify"))


def test_generate_help_names_the_signer_and_the_run_s_variables() -> None:
    named = variables_named(help_of("generate"))
    assert {
        "SLSA_SIGNER",
        "SLSA_KEY_PASSWORD",
        "BUILD_ARTIFACTSTAGINGDIRECTORY",
        "SYSTEM_COLLECTIONURI",
    } <= named
    assert "SLSA_VSA_SIGNER" not in named


def test_every_variable_the_help_names_is_read_by_the_package() -> None:
    """The help may not promise a variable nothing reads (the Azure SDK's and requests' own aside)."""
    read_by_libraries = {"HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"}
    inputs = {
        f"INPUT_{item['name'].upper()}" for item in json.loads((REPO / "task.json").read_text())["inputs"]
    }
    source = "\n".join(path.read_text() for path in PACKAGE.rglob("*.py") if path.name != "usage.py")
    for command in COMMANDS:
        for name in variables_named(help_of(command)) - read_by_libraries - inputs:
            assert f'"{name}' in source or f"{name}_" in source, f"{command} --help names {name}"


def test_a_mistyped_option_gets_the_closest_real_one() -> None:
    result = run_cli("verify", "--provenace", "p.jsonl")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "slsa-provenance verify: error: unrecognized option --provenace: did you mean --provenance?\n"
    )


def test_an_abbreviated_option_is_refused_and_named_in_full() -> None:
    result = run_cli("generate", "--sign", "none")
    assert result.returncode == 2
    assert "unrecognized option --sign: did you mean --signer?" in result.stderr


def test_a_mistyped_option_before_the_command_gets_the_closest_too() -> None:
    result = run_cli("--verison")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "slsa-provenance: error: unrecognized option --verison: did you mean --version?\n"
    )


def test_an_option_like_no_other_points_at_the_help() -> None:
    result = run_cli("keygen", "--out", "k", "--zzzz")
    assert result.returncode == 2
    assert "unrecognized option --zzzz: slsa-provenance keygen --help lists the options" in result.stderr


def test_provenance_and_image_together_say_so(tmp_path: Path) -> None:
    result = run_cli(
        "verify", "--provenance", tmp_path / "p.jsonl", "--key", tmp_path / "k.pub", "--image", "r.io/a:1"
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: --provenance and --image cannot be used together (--image reads each image's provenance "
        "from its registry): verify the images with --image alone, and a provenance file in a run of its "
        "own\n"
    )


def test_nothing_to_verify_names_both_ways(tmp_path: Path) -> None:
    result = run_cli("verify", "--key", tmp_path / "k.pub")
    assert result.returncode == 2
    assert result.stderr == "error: nothing to verify: pass --provenance FILE, or --image REF for an image\n"


def test_a_folder_given_as_the_sbom_is_called_a_folder(
    drop: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    private, public = key_files["ecdsa-p256"]
    folder = drop / "_manifest" / "spdx_2.2"
    generated = generate_cli(drop, private, "--sbom", folder)
    assert generated.returncode == 2
    assert generated.stderr.startswith(f"error: SBOM {folder} is a folder, not a file: pass the manifest")
    assert generate_cli(drop, private).returncode == 0
    verified = run_cli(
        "verify", "--provenance", drop / OUTPUT, "--key", public, "--artifact", drop, "--sbom", folder
    )
    assert verified.returncode == 2
    assert verified.stderr.startswith(f"error: SBOM {folder} is a folder, not a file: pass the manifest")


def test_a_key_that_is_not_pem_is_told_what_is(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    result = run_cli("verify", "--provenance", junk, "--key", junk, "--artifact", junk)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {junk} is not a PEM public key: pass a PEM public key: EC P-256/P-384/P-521, "
        "RSA (2048 bits or more) or Ed25519\n"
    )


def synopsis_flags() -> dict[str, set[str]]:
    """The options docs/cli.md's synopsis shows, per command."""
    page = (REPO / "docs" / "cli.md").read_text()
    block = page.split("```\n", 2)[1]
    shown: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("slsa-provenance "):
            command = line.split()[1]
        shown.setdefault(command, set()).update(re.findall(r"(--[a-z][a-z0-9-]*)", line))
    return shown


def test_the_cli_page_shows_every_option_and_only_real_ones() -> None:
    from slsa_provenance.cli import _parser

    commands = next(a for a in _parser()._actions if a.choices and "verify" in a.choices).choices
    shown = synopsis_flags()
    assert set(shown) == {"generate", "verify", "keygen"}
    for name, flags in shown.items():
        real = {o for o in commands[name]._option_string_actions if o.startswith("--") and o != "--help"}
        assert flags == real, f"docs/cli.md's synopsis of {name}"


def test_every_slsa_variable_the_docs_name_is_read() -> None:
    source = "\n".join(path.read_text() for path in PACKAGE.rglob("*.py"))
    tests = "\n".join(path.read_text() for path in (REPO / "tests").glob("*.py"))
    for page in [REPO / "README.md", REPO / "overview.md", *(REPO / "docs").rglob("*.md")]:
        for name in set(re.findall(r"\bSLSA_[A-Z_]*[A-Z]\b", page.read_text())):
            assert f'"{name}"' in source or f'"{name}"' in tests, f"{page.name} names {name}"


def test_a_signing_key_that_is_not_pem_is_told_what_is(drop: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    result = generate_cli(drop, junk)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: signing key {junk} is not a usable PEM private key (or the password is wrong): pass a PEM "
        "private key: EC P-256/P-384/P-521, RSA (2048 bits or more) or Ed25519\n"
    )
