from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

REPO = Path(__file__).resolve().parents[1]
SHARED_REF = Path(os.environ.get("SLSA_SHARED_REF", REPO.parent / "shared" / "ref"))
COMMIT = "c27d339ee6075c1f744c5d4b200f7901aad2c369"

PIPELINE_ENV = {
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/contoso/",
    "SYSTEM_TEAMPROJECT": "web",
    "SYSTEM_TEAMPROJECTID": "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c",
    "BUILD_BUILDID": "836",
    "BUILD_BUILDNUMBER": "20261123.4",
    "SYSTEM_DEFINITIONID": "12",
    "BUILD_DEFINITIONNAME": "web-ci",
    "BUILD_REPOSITORY_URI": "https://dev.azure.com/contoso/web/_git/web",
    "BUILD_REPOSITORY_NAME": "web",
    "BUILD_REPOSITORY_PROVIDER": "TfsGit",
    "BUILD_SOURCEBRANCH": "refs/heads/main",
    "BUILD_SOURCEVERSION": COMMIT,
    "BUILD_REASON": "IndividualCI",
    "SYSTEM_JOBID": "5b694ae9-86cc-5057-d72a-30cde2f12d73",
    "SYSTEM_JOBDISPLAYNAME": "Build",
    "SYSTEM_JOBATTEMPT": "2",
    "SYSTEM_PLANID": "0e2d4f6a-1b3c-4d5e-8f70-112233445566",
    "SYSTEM_HOSTTYPE": "build",
    "AGENT_OS": "Linux",
    "AGENT_OSARCHITECTURE": "X64",
    "AGENT_NAME": "Hosted Agent",
    "AGENT_ISSELFHOSTED": "0",
}


def shared_ref(relative: str) -> Path:
    """A file of ../shared/ref, or skip the test with the reason."""
    path = SHARED_REF / relative
    if not path.exists():
        pytest.skip(f"reference data {relative} not present (../shared/ref is absent in this clone)")
    return path


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    """A realistic drop: binaries, nested folders, an archive, and sbom-tool's _manifest."""
    root = tmp_path / "drop"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "plugins").mkdir(parents=True)
    (root / "bin" / "app.exe").write_bytes(os.urandom(200_000))
    (root / "bin" / "app.dll").write_bytes(os.urandom(50_000))
    (root / "lib" / "plugins" / "auth.so").write_bytes(os.urandom(3000))
    (root / "README.txt").write_text("hello\n")
    (root / "web.tar.gz").write_bytes(os.urandom(10_000))
    manifest = root / "_manifest" / "spdx_2.2"
    manifest.mkdir(parents=True)
    (manifest / "manifest.spdx.json").write_text('{"spdxVersion": "SPDX-2.2", "files": []}')
    return root


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """(private PEM, public PEM) per key type, generated once per session."""
    folder = tmp_path_factory.mktemp("keys")
    keys = {
        "ecdsa-p256": ec.generate_private_key(ec.SECP256R1()),
        "ecdsa-p384": ec.generate_private_key(ec.SECP384R1()),
        "ecdsa-p521": ec.generate_private_key(ec.SECP521R1()),
        "rsa-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    out = {}
    for name, key in keys.items():
        private, public = folder / f"{name}.key", folder / f"{name}.pub"
        private.write_bytes(_pem(key))
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        out[name] = (private, public)
    return out


def run_cli(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, with only the given variables (plus PATH and HOME)."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "SYSTEMROOT") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "slsa_provenance", *map(str, args)],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
