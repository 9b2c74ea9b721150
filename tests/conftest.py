from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import settings

settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packaging"))
from spdx import Package, write_sbom  # noqa: E402

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


OUTPUT = Path("_manifest/slsa_1.0/provenance.intoto.jsonl")


def generate_cli(
    drop: Path, key: Path, *extra: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`slsa-provenance generate` of a drop with a local key, outside a pipeline."""
    return run_cli(
        "generate",
        "--drop",
        drop,
        "--signer",
        f"file:{key}",
        "--pipeline-file",
        "azure-pipelines.yml",
        *extra,
        env=PIPELINE_ENV if env is None else env,
    )


def statement_of(envelope_path: Path) -> dict[str, object]:
    """The Statement inside a written envelope."""
    return dict(json.loads(base64.b64decode(json.loads(envelope_path.read_text())["payload"])))


@contextlib.contextmanager
def unprivileged_folder() -> Iterator[Path]:
    """A world-readable temporary folder, for runs as an unprivileged user (root reads everything)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    root = Path(tempfile.mkdtemp(prefix="slsa-unprivileged-"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o755)
        shutil.rmtree(root)


def run_unprivileged(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI as user 65534 when this runs as root, else as this user (tests/unprivileged.py)."""
    from unprivileged import unprivileged_cli

    command, path = unprivileged_cli(sys.executable, REPO / "src")
    env = {**PIPELINE_ENV, "PATH": os.environ["PATH"], "PYTHONPATH": path}
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def shared_ref(relative: str) -> Path:
    """A file of ../shared/ref, or skip the test with the reason."""
    path = SHARED_REF / relative
    if not path.exists():
        pytest.skip(f"reference data {relative} not present (../shared/ref is absent in this clone)")
    return path


def built_vsix() -> Path:
    """dist/*.vsix, or skip the test with the reason."""
    built = sorted((REPO / "dist").glob("*.vsix"))
    if not built:
        pytest.skip("no dist/*.vsix: run 'make vsix' (make test builds it first)")
    return built[-1]


@pytest.fixture
def under_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's output read by an agent, as vso.under_agent tells it: the masks are printed."""
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("ENDPOINT_URL_SYSTEMVSSCONNECTION", "https://dev.azure.com/contoso/")


@pytest.fixture(scope="module")
def extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built .vsix, unpacked (test_extension.py, test_python_selection.py, test_payload.py)."""
    folder = tmp_path_factory.mktemp("vsix")
    with zipfile.ZipFile(built_vsix()) as archive:
        archive.extractall(folder)
    return folder


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
    write_sbom(root, "drop", [Package("requests", "2.34.2", "a" * 64)])
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


CONNECTION_ID = "3b0f5d6e-6f6a-4b5e-9f1c-2a7e8d9c0b1a"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
ACCESS_TOKEN = "system-access-token-" + "x" * 20


def build_body(env: Mapping[str, str], **override: object) -> dict[str, object]:
    """A Builds - Get answer shaped like the recorded one (ref/ado-rest/recorded/GET_build_builds_638.json)."""
    project = {"id": env["SYSTEM_TEAMPROJECTID"], "name": env["SYSTEM_TEAMPROJECT"], "state": "wellFormed"}
    body: dict[str, object] = {
        "id": int(env["BUILD_BUILDID"]),
        "buildNumber": env["BUILD_BUILDNUMBER"],
        "status": "inProgress",
        "queueTime": "2026-11-23T09:12:31.2032421Z",
        "startTime": "2026-11-23T09:12:40.5843216Z",
        "reason": "individualCI",
        "sourceBranch": env["BUILD_SOURCEBRANCH"],
        "sourceVersion": env["BUILD_SOURCEVERSION"],
        "repository": {
            "id": "f450d1a9-29b5-4ec5-b12b-7aca7ebd6643",
            "type": "TfsGit",
            "name": env["BUILD_REPOSITORY_NAME"],
            "url": env["BUILD_REPOSITORY_URI"],
        },
        "definition": {
            "id": int(env["SYSTEM_DEFINITIONID"]),
            "name": env["BUILD_DEFINITIONNAME"],
            "path": "\\",
            "type": "build",
            "revision": 3,
            "project": project,
        },
        "project": project,
        "orchestrationPlan": {"planId": env["SYSTEM_PLANID"]},
        "uri": f"vstfs:///Build/Build/{env['BUILD_BUILDID']}",
    }
    body.update(override)
    return body


def definition_body(env: Mapping[str, str], yaml: str = "ci/azure-pipelines.yml") -> dict[str, object]:
    """A Definitions - Get answer shaped like ref/ado-rest/recorded/GET_build_definitions_47_yaml.json."""
    return {
        "id": int(env["SYSTEM_DEFINITIONID"]),
        "name": env["BUILD_DEFINITIONNAME"],
        "revision": 3,
        "process": {"yamlFilename": yaml, "type": 2},
        "repository": {
            "id": "f450d1a9-29b5-4ec5-b12b-7aca7ebd6643",
            "type": "TfsGit",
            "name": env["BUILD_REPOSITORY_NAME"],
        },
        "type": "build",
        "queueStatus": "enabled",
    }


def run_body(env: Mapping[str, str], **repositories: dict[str, object]) -> dict[str, object]:
    """A Runs - Get answer shaped by pipelines-7.1.json (Run, RunResources, RepositoryResource)."""
    resources = {
        "self": {
            "repository": {"id": "f450d1a9-29b5-4ec5-b12b-7aca7ebd6643", "type": "azureReposGit"},
            "refName": env["BUILD_SOURCEBRANCH"],
            "version": env["BUILD_SOURCEVERSION"],
        }
    }
    return {
        "id": int(env["BUILD_BUILDID"]),
        "name": env["BUILD_BUILDNUMBER"],
        "state": "inProgress",
        "createdDate": "2026-11-23T09:12:31.2032421Z",
        "pipeline": {
            "id": int(env["SYSTEM_DEFINITIONID"]),
            "name": env["BUILD_DEFINITIONNAME"],
            "folder": "\\",
            "revision": 3,
        },
        "resources": {"repositories": {**resources, **repositories}},
        "templateParameters": {},
    }


@pytest.fixture(scope="session")
def certificate_authority(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from fakes import CertificateAuthority

    return CertificateAuthority(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def vault_keys():  # type: ignore[no-untyped-def]
    """Real keys for the fake vault, generated once per session."""
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


class AzureStack:
    """Entra, Azure DevOps and Key Vault on 127.0.0.1, and the agent environment that points at them;
    with `domain`, their URLs name entra.DOMAIN, ado.DOMAIN and vault.DOMAIN instead."""

    def __init__(self, ca, vault_keys, domain: str = "") -> None:  # type: ignore[no-untyped-def]
        from agent import Endpoint
        from fakes import AzureDevOps, Entra, KeyVault

        self.entra = Entra(ca, TENANT_ID, CLIENT_ID)
        self.ado = AzureDevOps(ca, ACCESS_TOKEN, CONNECTION_ID, self.entra)
        self.vault = KeyVault(ca, self.entra)
        for name, server in (("entra", self.entra), ("ado", self.ado), ("vault", self.vault)):
            server.hostname = f"{name}.{domain}" if domain else server.hostname
            server.start()
        self.kids = {name: self.vault.add_key(name, key) for name, key in vault_keys.items()}
        collection = self.ado.collection
        self.variables: dict[str, str] = {
            **PIPELINE_ENV,
            "TF_BUILD": "True",
            "SYSTEM_COLLECTIONURI": collection,
            "BUILD_REPOSITORY_URI": f"{collection}web/_git/web",
        }
        """The job's variables, in their environment form."""
        self.endpoints = [
            Endpoint("SystemVssConnection", collection, "OAuth", {"AccessToken": ACCESS_TOKEN}),
            Endpoint(
                CONNECTION_ID,
                "https://management.azure.com/",
                "WorkloadIdentityFederation",
                {"TenantId": TENANT_ID, "ServicePrincipalId": CLIENT_ID},
                {"ActiveDirectoryAuthority": self.entra.url, "Environment": "AzureCloud"},
            ),
        ]
        self.process = {
            "REQUESTS_CA_BUNDLE": str(ca.ca_pem),
            "NO_PROXY": "127.0.0.1,localhost",
            "SLSA_HTTP_RETRIES": "1",
        }
        """The agent process's own environment that reaches the step: the local servers' CA, no proxy."""
        self.env: dict[str, str] = {
            **self.variables,
            **{k: v for endpoint in self.endpoints for k, v in endpoint.environment().items()},
            "INPUT_AZURESUBSCRIPTION": CONNECTION_ID,
            **self.process,
        }
        self.ado.bodies["build/builds/836"] = build_body(self.env)
        self.ado.bodies["build/definitions/12"] = definition_body(self.env)
        self.ado.bodies["pipelines/12/runs/836"] = run_body(self.env)

    def stop(self) -> None:
        for server in (self.entra, self.ado, self.vault):
            server.stop()


@pytest.fixture
def azure(certificate_authority, vault_keys, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh stack per test (new ports, so no SDK cache carries over), env applied to this process."""
    stack = AzureStack(certificate_authority, vault_keys)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SYSTEM_OIDCREQUESTURI", raising=False)
    yield stack
    stack.stop()
