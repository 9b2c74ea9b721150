"""The real CLI in a child process: real files, real keys, exit codes, nothing half-written."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import OUTPUT, PIPELINE_ENV, run_cli, run_unprivileged, statement_of, unprivileged_folder
from conftest import generate_cli as generate

pytestmark = pytest.mark.integration


def verify(provenance: Path, key: Path, *extra: str | Path):  # type: ignore[no-untyped-def]
    """Outside a pipeline nothing confirms the run, so the gate must be told to accept that."""
    return run_cli("verify", "--provenance", provenance, "--key", key, "--allow-unconfirmed", *extra)


def assert_nothing_written(drop: Path) -> None:
    assert not (drop / "_manifest" / "slsa_1.0").exists()
    assert not [p for p in drop.rglob(".*") if p.is_file()]


def test_generate_then_verify(drop: Path, key_files: dict[str, tuple[Path, Path]]) -> None:
    private, public = key_files["ecdsa-p256"]
    result = generate(drop, private)
    assert result.returncode == 0, result.stderr
    assert "subjects:  5 files" in result.stdout
    assert "NOT confirmed by the server" in result.stdout
    assert "sbom:      _manifest/spdx_2.2/manifest.spdx.json sha256:" in result.stdout
    assert f"wrote:     {drop / OUTPUT}" in result.stdout
    text = (drop / OUTPUT).read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    statement = statement_of(drop / OUTPUT)
    assert [s["name"] for s in statement["subject"]] == [
        "README.txt",
        "bin/app.dll",
        "bin/app.exe",
        "lib/plugins/auth.so",
        "web.tar.gz",
    ]
    sbom = (drop / "_manifest/spdx_2.2/manifest.spdx.json").read_bytes()
    assert (
        statement["predicate"]["runDetails"]["byproducts"][0]["digest"]["sha256"]
        == hashlib.sha256(sbom).hexdigest()
    )
    checked = verify(
        drop / OUTPUT,
        public,
        "--artifact",
        drop,
        "--artifact",
        drop / "bin" / "app.exe",
        "--digest",
        "sha256:" + hashlib.sha256(b"hello\n").hexdigest(),
        "--builder-id",
        "https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/main",
        "--source-uri",
        "https://dev.azure.com/contoso/web/_git/web",
        "--source-ref",
        "refs/heads/main",
        "--commit",
        PIPELINE_ENV["BUILD_SOURCEVERSION"],
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 8 and all(line.startswith("PASSED: ") for line in lines)
    assert "PASSED: _manifest/spdx_2.2/manifest.spdx.json" in lines  # the shipped SBOM is the byproduct
    assert "PASSED: app.exe (subject bin/app.exe)" in lines


def test_same_inputs_same_bytes(drop: Path, key_files: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    private = key_files["ed25519"][0]  # Ed25519 signatures are deterministic: whole files compare
    outputs = []
    for name in ("one", "two"):
        result = generate(drop, private, "--output-dir", tmp_path / name)
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name / "provenance.intoto.jsonl").read_bytes())
    assert outputs[0] == outputs[1]


def test_tampered_artifact_and_missing_artifact_fail(
    drop: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    private, public = key_files["ecdsa-p256"]
    assert generate(drop, private).returncode == 0
    (drop / "bin" / "app.dll").write_bytes(b"backdoored")
    (drop / "extra.exe").write_bytes(b"smuggled in")
    result = verify(drop / OUTPUT, public, "--artifact", drop)
    assert result.returncode == 1
    assert "FAILED: bin/app.dll: (9) subject: bin/app.dll sha256 got " in result.stdout
    assert "FAILED: extra.exe: (9) subject: no subject is named 'extra.exe'" in result.stdout
    assert "PASSED: bin/app.exe" in result.stdout


@pytest.mark.parametrize("part", ["payload", "sig"])
def test_flipped_byte_fails_the_signature_check(
    drop: Path, key_files: dict[str, tuple[Path, Path]], part: str
) -> None:
    private, public = key_files["rsa-2048"]
    assert generate(drop, private).returncode == 0
    envelope = json.loads((drop / OUTPUT).read_text())
    holder = envelope if part == "payload" else envelope["signatures"][0]
    raw = bytearray(base64.b64decode(holder[part]))
    raw[len(raw) // 2] ^= 0x01
    holder[part] = base64.b64encode(raw).decode()
    (drop / OUTPUT).write_text(json.dumps(envelope))
    result = verify(drop / OUTPUT, public, "--artifact", drop / "README.txt")
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED: README.txt: (2) signature: no signature verifies")


def test_wrong_key_and_unsigned(drop: Path, key_files: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    assert generate(drop, key_files["ecdsa-p256"][0]).returncode == 0
    wrong = verify(drop / OUTPUT, key_files["ecdsa-p384"][1], "--artifact", drop)
    assert wrong.returncode == 1 and "(2) signature" in wrong.stdout
    unsigned = run_cli(
        "generate",
        "--drop",
        drop,
        "--signer",
        "none",
        "--pipeline-file",
        "a.yml",
        "--output-dir",
        tmp_path,
        env=PIPELINE_ENV,
    )
    assert unsigned.returncode == 0
    assert "UNSIGNED" in unsigned.stderr
    refused = verify(tmp_path / "provenance.intoto.jsonl", key_files["ecdsa-p256"][1], "--artifact", drop)
    assert refused.returncode == 1 and "(2) signature: the envelope is unsigned" in refused.stdout


def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(tmp_path: Path, drop: Path) -> None:
    result = run_cli("keygen", "--out", tmp_path / "keys", "--type", "ecdsa-p384")
    assert result.returncode == 0, result.stderr
    private, public = tmp_path / "keys" / "slsa-signing.key", tmp_path / "keys" / "slsa-signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    before = private.read_bytes()
    again = run_cli("keygen", "--out", tmp_path / "keys")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert private.read_bytes() == before
    assert generate(drop, private).returncode == 0
    assert verify(drop / OUTPUT, public, "--artifact", drop).returncode == 0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d, t: shutil.rmtree(d), "error: drop folder .* does not exist"),
        (
            lambda d, t: (d / "bin" / "link").symlink_to("/etc/passwd"),
            "bin/link is a symbolic link to /etc/passwd, outside the drop",
        ),
        (lambda d, t: os.mkfifo(d / "fifo"), "fifo is not a regular file"),
        (
            lambda d, t: [p.unlink() for p in d.rglob("*") if p.is_file() and "_manifest" not in p.parts],
            "has no files outside _manifest/",
        ),
        (
            lambda d, t: (d / "_manifest/spdx_2.2/manifest.spdx.json.sha256").write_text("0" * 64),
            "SBOM _manifest/spdx_2.2/manifest.spdx.json does not match its sidecar",
        ),
    ],
)
def test_bad_drops_exit_2_with_one_sentence_and_write_nothing(
    drop: Path, tmp_path: Path, key_files, setup, message
) -> None:  # type: ignore[no-untyped-def]
    setup(drop, tmp_path)
    result = generate(drop, key_files["ecdsa-p256"][0])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    if drop.exists():
        assert_nothing_written(drop)


def test_missing_variables_are_named(drop: Path, key_files: dict[str, tuple[Path, Path]]) -> None:
    env = {k: v for k, v in PIPELINE_ENV.items() if k not in ("BUILD_SOURCEBRANCH", "SYSTEM_JOBID")}
    result = generate(drop, key_files["ecdsa-p256"][0], env=env)
    assert result.returncode == 2
    assert "missing pipeline variables BUILD_SOURCEBRANCH, SYSTEM_JOBID" in result.stderr
    assert_nothing_written(drop)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "is not a usable PEM private key"),
        (
            b"-----BEGIN "
            + b"PRIVATE KEY-----\nAAAA\n-----END "
            + b"PRIVATE KEY-----\n",  # garbage, not a key
            "is not a usable PEM private key",
        ),
        (None, "cannot read signing key"),
    ],
)
def test_malformed_signing_key(drop: Path, tmp_path: Path, content: bytes | None, message: str) -> None:
    key = tmp_path / "bad.pem"
    if content is not None:
        key.write_bytes(content)
    result = generate(drop, key)
    assert result.returncode == 2 and message in result.stderr
    assert_nothing_written(drop)


def test_unsupported_key_type(drop: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa

    key = dsa.generate_private_key(2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "dsa.pem").write_bytes(key)
    result = generate(drop, tmp_path / "dsa.pem")
    assert result.returncode == 2 and "DSAPrivateKey" in result.stderr


def test_encrypted_key_password_comes_from_the_environment(drop: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    )
    (tmp_path / "enc.pem").write_bytes(pem)
    without = generate(drop, tmp_path / "enc.pem")
    assert without.returncode == 2 and "is encrypted: put its password in SLSA_KEY_PASSWORD" in without.stderr
    wrong = generate(drop, tmp_path / "enc.pem", env={**PIPELINE_ENV, "SLSA_KEY_PASSWORD": "wrong"})
    assert wrong.returncode == 2 and "password is wrong" in wrong.stderr
    right = generate(drop, tmp_path / "enc.pem", env={**PIPELINE_ENV, "SLSA_KEY_PASSWORD": "correct horse"})
    assert right.returncode == 0, right.stderr


def test_unwritable_output_exits_1_and_leaves_nothing(
    drop: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    result = generate(drop, key_files["ecdsa-p256"][0], "--output-dir", drop / "README.txt" / "out")
    assert result.returncode == 1
    assert "error: cannot write" in result.stderr
    assert (drop / "README.txt").read_text() == "hello\n"
    assert_nothing_written(drop)


def test_verify_bad_inputs(drop: Path, key_files: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    private, public = key_files["ecdsa-p256"]
    assert generate(drop, private).returncode == 0
    no_artifact = verify(drop / OUTPUT, public)
    assert no_artifact.returncode == 2 and "no artifact to verify" in no_artifact.stderr
    as_private = verify(drop / OUTPUT, private, "--artifact", drop)
    assert as_private.returncode == 2 and "is a private key" in as_private.stderr
    (tmp_path / "junk.pem").write_text("junk")
    junk = verify(drop / OUTPUT, tmp_path / "junk.pem", "--artifact", drop)
    assert junk.returncode == 2 and "is not a PEM public key" in junk.stderr
    bad_digest = verify(drop / OUTPUT, public, "--digest", "sha1:abc")
    assert bad_digest.returncode == 2 and "is not sha256:<64 hex>" in bad_digest.stderr
    missing = verify(tmp_path / "none.jsonl", public, "--artifact", drop)
    assert missing.returncode == 2 and "cannot read provenance file" in missing.stderr
    (tmp_path / "truncated.jsonl").write_bytes((drop / OUTPUT).read_bytes()[:100])
    truncated = verify(tmp_path / "truncated.jsonl", public, "--artifact", drop / "README.txt")
    assert truncated.returncode == 1
    assert truncated.stdout == "FAILED: README.txt: (1) envelope: envelope is not JSON\n"


def test_unreadable_file_in_the_drop(key_files: dict[str, tuple[Path, Path]]) -> None:
    with unprivileged_folder() as root:
        drop = root / "drop"
        drop.mkdir()
        (drop / "ok.bin").write_bytes(b"ok")
        (drop / "secret.bin").write_bytes(b"no")
        (drop / "secret.bin").chmod(0o000)
        key = root / "key.pem"
        shutil.copy(key_files["ecdsa-p256"][0], key)
        key.chmod(0o644)
        result = run_unprivileged(
            ["generate", "--drop", str(drop), "--signer", f"file:{key}", "--pipeline-file", "a.yml"]
        )
        assert result.returncode == 2, result.stderr
        assert "error: cannot read secret.bin: Permission denied" in result.stderr
        assert not (drop / "_manifest").exists()


def test_the_azure_sdks_stay_off_the_local_paths(drop: Path, key_files: dict[str, tuple[Path, Path]]) -> None:
    """verify with a PEM key and generate with a local key never import the Azure SDKs (start-up time)."""
    private, public = key_files["ecdsa-p256"]
    env = {**PIPELINE_ENV, "PATH": os.environ["PATH"]}
    for args in (
        ["generate", "--drop", str(drop), "--signer", f"file:{private}", "--pipeline-file", "a.yml"],
        ["verify", "--provenance", str(drop / OUTPUT), "--key", str(public), "--artifact", str(drop)]
        + ["--allow-unconfirmed"],
    ):
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "slsa_provenance", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        imported = [
            line.rsplit("|", 1)[-1].strip()
            for line in run.stderr.splitlines()
            if line.startswith("import time:")
        ]
        assert "slsa_provenance.cli" in imported
        assert not [m for m in imported if m.startswith(("azure", "msal", "requests"))], args[0]


def test_the_installed_command_is_the_cli(tmp_path: Path) -> None:
    """`slsa-provenance` (pyproject's script) runs what `python -m slsa_provenance` runs."""
    command = Path(sys.executable).parent / "slsa-provenance"
    if not command.exists():
        pytest.skip(f"the package is not installed beside {sys.executable}")
    made = subprocess.run([str(command), "keygen", "--out", str(tmp_path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slsa-signing.key", "slsa-signing.pub"]
