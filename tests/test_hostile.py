"""The bad-input matrix: every hostile or broken input ends in one sentence on stderr, the documented
exit code (2 bad input, 1 failure), and no new or half-written file anywhere in the test's folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    OUTPUT,
    PIPELINE_ENV,
    generate_cli,
    run_cli,
    run_unprivileged,
    unprivileged_folder,
    write_sbom,
)
from slsa_provenance.errors import Error, InputError
from slsa_provenance.provenance.hashing import Hashing, sha256_file
from slsa_provenance.provenance.subjects import select_files

pytestmark = pytest.mark.integration
Setup = Callable[[Path, Path], list[str]]


def tree(root: Path) -> set[str]:
    """Every path below root; fd-relative, so paths longer than PATH_MAX are listed too."""
    found = set()
    for folder, dirs, files, _ in os.fwalk(root):
        found |= {os.path.relpath(os.path.join(folder, name), root) for name in dirs + files}
    return found


def signed(drop: Path, key: Path) -> Path:
    assert generate_cli(drop, key).returncode == 0
    return drop / OUTPUT


def envelope_variant(edit: Callable[[dict], dict | str]) -> Setup:  # type: ignore[type-arg]
    """verify of an envelope rewritten by `edit` (returns the new JSON value or raw text)."""

    def setup(drop: Path, key: Path) -> list[str]:
        provenance = signed(drop, key)
        value = edit(json.loads(provenance.read_text()))
        provenance.write_text(value if isinstance(value, str) else json.dumps(value))
        return verify_args(provenance, key, "--artifact", str(drop / "README.txt"))

    return setup


def generate_after(change: Callable[[Path, Path], object], *extra: str) -> Setup:
    def setup(drop: Path, key: Path) -> list[str]:
        change(drop, key)
        return [
            "generate",
            "--drop",
            str(drop),
            "--signer",
            f"file:{key}",
            "--pipeline-file",
            "a.yml",
            *extra,
        ]

    return setup


def deep_folder(drop: Path) -> None:
    """A path longer than PATH_MAX, built one relative step at a time."""
    descriptor = os.open(drop, os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=descriptor)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        with open(os.open("deep.bin", os.O_WRONLY | os.O_CREAT, dir_fd=descriptor), "wb") as stream:
            stream.write(b"x")
    finally:
        os.close(descriptor)


def unix_socket(drop: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(drop / "agent.sock"))
    server.close()


def verify_args(provenance: Path, key: Path, *what: str) -> list[str]:
    return [
        "verify",
        "--provenance",
        str(provenance),
        "--key",
        str(key.with_suffix(".pub")),
        *(what or ("--digest", "sha256:" + "0" * 64)),
    ]


def signed_payload(drop: Path, key: Path, body: bytes) -> Path:
    """An envelope around `body`, signed with the trusted key: only the Statement checks can refuse it."""
    from slsa_provenance.signing import dsse
    from slsa_provenance.signing.local import LocalSigner

    path = drop.parent / "crafted.jsonl"
    path.write_bytes(dsse.sign(body, dsse.PAYLOAD_TYPE, LocalSigner.from_file(str(key))).to_json())
    return path


def huge(drop: Path, key: Path) -> list[str]:
    with open(drop.parent / "huge.jsonl", "wb") as stream:
        stream.truncate(300 << 20)  # sparse: costs no disk
    return verify_args(drop.parent / "huge.jsonl", key)


def nested_statement(drop: Path, key: Path) -> list[str]:
    prefix = b'{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","predicate":'
    return verify_args(signed_payload(drop, key, prefix + b"[" * 50_000 + b"]" * 50_000 + b"}"), key)


def duplicate_subjects(drop: Path, key: Path) -> list[str]:
    from slsa_provenance.signing import dsse

    statement = json.loads(dsse.Envelope.from_json(signed(drop, key).read_bytes()).payload)
    statement["subject"].append({"name": statement["subject"][0]["name"], "digest": {"sha256": "0" * 64}})
    return verify_args(
        signed_payload(drop, key, json.dumps(statement).encode()), key, "--artifact", str(drop / "README.txt")
    )


CASES: dict[str, tuple[Setup, int, str]] = {
    "missing drop": (generate_after(lambda d, k: shutil.rmtree(d)), 2, "does not exist"),
    "empty drop": (
        generate_after(
            lambda d, k: [p.unlink() for p in d.rglob("*") if p.is_file() and "_manifest" not in p.parts]
        ),
        2,
        "has no files outside _manifest/",
    ),
    "drop is a file": (
        lambda d, k: [
            "generate",
            "--drop",
            str(d / "README.txt"),
            "--signer",
            f"file:{k}",
            "--pipeline-file",
            "a",
        ],
        2,
        "is not a folder",
    ),
    "symlink loop": (
        generate_after(lambda d, k: ((d / "a").symlink_to("b"), (d / "b").symlink_to("a"))),
        2,
        "is a broken link",
    ),
    "file link leaving the drop": (
        generate_after(lambda d, k: (d / "passwd").symlink_to("/etc/passwd")),
        2,
        "outside the drop",
    ),
    "folder link leaving the drop": (
        generate_after(lambda d, k: (d / "etc").symlink_to("/etc")),
        2,
        "outside the drop",
    ),
    "FIFO": (generate_after(lambda d, k: os.mkfifo(d / "pipe")), 2, "pipe is not a regular file"),
    "unix socket": (generate_after(lambda d, k: unix_socket(d)), 2, "agent.sock is not a regular file"),
    "name not UTF-8": (
        generate_after(lambda d, k: Path(os.fsdecode(os.fsencode(d) + b"/caf\xe9")).write_text("x")),
        2,
        "is not valid UTF-8",
    ),
    "path longer than PATH_MAX": (generate_after(lambda d, k: deep_folder(d)), 2, "File name too long"),
    "glob matching nothing": (
        generate_after(lambda d, k: None, "--subject", "*.msi"),
        2,
        "matches --subject '*.msi'",
    ),
    "output under a file": (
        generate_after(lambda d, k: None, "--output-dir", "/etc/hostname/out"),
        1,
        "cannot write",
    ),
    "pull-request build": (generate_after(lambda d, k: None), 2, "this is a pull-request build"),
    "malformed signer URI": (
        lambda d, k: ["generate", "--drop", str(d), "--signer", "azurekms://vault"],
        2,
        "is not a Key Vault key reference",
    ),
    "unknown signer scheme": (
        lambda d, k: ["generate", "--drop", str(d), "--signer", "gcpkms://x/y"],
        2,
        "is not a signer URI",
    ),
    "key file is a public key": (
        lambda d, k: [
            "generate",
            "--drop",
            str(d),
            "--signer",
            f"file:{k.with_suffix('.pub')}",
            "--pipeline-file",
            "a",
        ],
        2,
        "is not a usable PEM private key",
    ),
    "SBOM sidecar mismatch": (
        generate_after(
            lambda d, k: (d / "_manifest/spdx_2.2/manifest.spdx.json.sha256").write_text("0" * 64)
        ),
        2,
        "does not match its sidecar",
    ),
    "malformed envelope": (envelope_variant(lambda e: "{not json"), 1, "(1) envelope: envelope is not JSON"),
    "truncated envelope": (
        envelope_variant(lambda e: json.dumps(e)[:300]),
        1,
        "(1) envelope: envelope is not JSON",
    ),
    "wrong payloadType": (
        envelope_variant(lambda e: {**e, "payloadType": "text/plain"}),
        1,
        "(1) envelope: payloadType: got 'text/plain'",
    ),
    "payload not base64": (envelope_variant(lambda e: {**e, "payload": "!!!"}), 1, "payload is not base64"),
    "signatures not a list": (
        envelope_variant(lambda e: {**e, "signatures": "x"}),
        1,
        "signatures is not a list",
    ),
    "no signatures": (
        envelope_variant(lambda e: {**e, "signatures": []}),
        1,
        "(2) signature: the envelope is unsigned",
    ),
    "huge envelope": (huge, 2, "expected at most 268435456 bytes"),
    "deeply nested statement": (nested_statement, 1, "(3) statement: the payload is not JSON"),
    "duplicate subjects": (duplicate_subjects, 1, "appears more than once"),
    "unsupported key type": (
        lambda d, k: [
            "generate",
            "--drop",
            str(d),
            "--signer",
            f"file:{d.parent / 'dsa.pem'}",
            "--pipeline-file",
            "a",
        ],
        2,
        "DSAPrivateKey",
    ),
    "verify key is not PEM": (
        lambda d, k: [
            "verify",
            "--provenance",
            str(d / "README.txt"),
            "--key",
            str(d / "README.txt"),
            "--digest",
            "sha256:" + "0" * 64,
        ],
        2,
        "is not a PEM public key",
    ),
    "digest malformed": (
        lambda d, k: [
            "verify",
            "--provenance",
            "x",
            "--key",
            str(k.with_suffix(".pub")),
            "--digest",
            "sha256:xyz",
        ],
        2,
        "is not sha256:<64 hex>",
    ),
}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa

    result = run_cli("keygen", "--out", tmp_path / "keys")
    assert result.returncode == 0
    key = tmp_path / "keys" / "slsa-signing.key"
    (tmp_path / "dsa.pem").write_bytes(
        dsa.generate_private_key(2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case: str, drop: Path, keys: Path, tmp_path: Path) -> None:
    setup, code, message = CASES[case]
    args = setup(drop, keys)
    before = tree(tmp_path)
    env = {
        **PIPELINE_ENV,
        **(
            {"BUILD_REASON": "PullRequest", "BUILD_SOURCEBRANCH": "refs/pull/7/merge"}
            if case == "pull-request build"
            else {}
        ),
    }
    started = time.monotonic()
    result = run_cli(*args, env=env)
    assert time.monotonic() - started < 60, "must not hang"
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    failure = result.stdout if code == 1 and args[0] == "verify" and not result.stderr else result.stderr
    lines = [line for line in failure.splitlines() if line.strip()]
    assert len(lines) == 1, failure
    assert message in lines[0], lines[0]
    assert tree(tmp_path) == before  # nothing new, nothing half-written


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 25


def test_an_unreadable_drop_folder() -> None:
    with unprivileged_folder() as root:
        (root / "drop" / "secret").mkdir(parents=True)
        (root / "drop" / "secret" / "a.bin").write_bytes(b"a")
        (root / "drop" / "secret").chmod(0o000)
        result = run_unprivileged(
            ["generate", "--drop", str(root / "drop"), "--signer", "none", "--pipeline-file", "a"]
        )
        (root / "drop" / "secret").chmod(0o755)
    assert (
        result.returncode == 2
        and "cannot list folder" in result.stderr
        and "Permission denied" in result.stderr
    )


def test_a_file_that_changes_while_it_is_hashed(tmp_path: Path) -> None:
    growing = tmp_path / "growing.bin"
    growing.write_bytes(os.urandom(64 << 20))
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab") as stream:
            while not stop.is_set():
                stream.write(b"x")
                stream.flush()
                time.sleep(0.0005)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        with pytest.raises(Error, match="changed while it was being hashed"):
            for _ in range(20):  # the writer is slower to start on a loaded machine
                sha256_file(growing, "growing.bin")
    finally:
        stop.set()
        writer.join()


def test_a_file_that_vanishes_after_listing(drop: Path) -> None:
    names = select_files(drop)
    (drop / "bin" / "app.dll").unlink()
    with pytest.raises(InputError, match="cannot read bin/app.dll: No such file or directory"):
        with Hashing(drop, names) as hashing:
            hashing.result()


def test_a_device_file_is_refused(drop: Path) -> None:
    try:
        os.mknod(drop / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot create device files here")
    result = run_cli("generate", "--drop", drop, "--signer", "none", "--pipeline-file", "a", env=PIPELINE_ENV)
    assert result.returncode == 2 and "null is not a regular file" in result.stderr


def test_a_full_disk_leaves_nothing_behind(drop: Path, keys: Path) -> None:
    """The output folder on a 16 KiB tmpfs (in a private mount namespace): no space for the envelope."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0
    ):
        pytest.skip("private mount namespaces are not available")
    for index in range(300):
        (drop / f"extra-{index:03}.bin").write_bytes(str(index).encode())
    write_sbom(drop, "drop")
    small = drop.parent / "small"
    small.mkdir()
    command = [
        sys.executable,
        "-m",
        "slsa_provenance",
        "generate",
        "--drop",
        str(drop),
        "--signer",
        f"file:{keys}",
        "--pipeline-file",
        "a.yml",
        "--output-dir",
        str(small / "out"),
    ]
    script = f'mount -t tmpfs -o size=16k tmpfs {small} && exec "$@"'
    env = {**PIPELINE_ENV, "PATH": os.environ["PATH"]}
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "cannot write" in result.stderr
    assert list(small.iterdir()) == []  # the tmpfs is gone with the namespace; the real folder is untouched
