"""Independent verifiers accept what we write: securesystemslib (PyPI) for the DSSE envelope,
@sigstore/verify (npm, pinned in package-lock.json) for the Sigstore bundle; raw r||s is refused by all."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import REPO, AzureStack
from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import InputError, VerificationError
from slsa_provenance.signing import dsse
from slsa_provenance.signing.bundle import bundle_parts, envelope_json
from slsa_provenance.signing.keys import PublicKey, public_key_pem
from slsa_provenance.signing.local import LocalSigner
from slsa_provenance.signing.signers import Signer, from_uri

pytestmark = pytest.mark.integration
PAYLOAD = (
    b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"'
    + b"a" * 64
    + b'"}}]}'
)
DETAILS = {
    "ecdsa-p256": "PKIX_ECDSA_P256_SHA_256",
    "ecdsa-p384": "PKIX_ECDSA_P384_SHA_384",
    "rsa-2048": "PKIX_RSA_PKCS1V15_2048_SHA256",
    "ed25519": "PKIX_ED25519",
}


def securesystemslib_verifies(envelope: dsse.Envelope, key: PublicKey, keyid: str) -> bool:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError as SslibError
    from securesystemslib.signer import SSlibKey

    parsed = Envelope.from_dict(json.loads(envelope.to_json()))
    try:
        scheme = "rsa-pkcs1v15-sha256" if isinstance(key, rsa.RSAPublicKey) else None  # RS256, as we sign
        parsed.verify([SSlibKey.from_crypto(key, keyid=keyid, scheme=scheme)], 1)
    except SslibError:
        return False
    return True


def raw_form(envelope: dsse.Envelope, size: int) -> dsse.Envelope:
    """The same signature left as Key Vault returns it: r||s, not DER."""
    r, s = decode_dss_signature(envelope.signatures[0].sig)
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return dsse.Envelope(
        envelope.payload, envelope.payload_type, (dsse.Signature(envelope.signatures[0].keyid, raw),)
    )


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"])
def test_securesystemslib_verifies_local_key_envelopes(key_files, key_type: str) -> None:  # type: ignore[no-untyped-def]
    signer = LocalSigner.from_file(str(key_files[key_type][0]))
    envelope = dsse.sign(PAYLOAD, dsse.PAYLOAD_TYPE, signer)
    assert securesystemslib_verifies(envelope, signer.public_key(), signer.keyid)
    tampered = dsse.Envelope(PAYLOAD.replace(b"a", b"b", 1), envelope.payload_type, envelope.signatures)
    assert not securesystemslib_verifies(tampered, signer.public_key(), signer.keyid)


@pytest.mark.parametrize("name", ["p256", "rsa"])
def test_securesystemslib_verifies_key_vault_envelopes(azure: AzureStack, name: str) -> None:
    signer = from_uri(
        f"azurekms://127.0.0.1:{azure.vault.port}/{name}", AgentRun.from_environment(os.environ)
    )
    envelope = dsse.sign(PAYLOAD, dsse.PAYLOAD_TYPE, signer)
    assert envelope.signatures[0].keyid == azure.kids[name]
    assert securesystemslib_verifies(envelope, signer.public_key(), azure.kids[name])
    if name == "p256":
        raw = raw_form(envelope, 32)
        assert not securesystemslib_verifies(raw, signer.public_key(), azure.kids[name])
        with pytest.raises(VerificationError):
            dsse.verify(raw, [signer.public_key()])


def sigstore_js(bundle: Path, key: Path, details: str) -> str:
    script = REPO / "tests" / "js" / "verify-bundle.js"
    if not (REPO / "node_modules" / "@sigstore" / "verify").is_dir() or shutil.which("node") is None:
        pytest.skip("@sigstore/verify is not installed: run 'npm ci' (make test does)")
    run = subprocess.run(
        ["node", str(script), str(bundle), str(key), details],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    return run.stdout.strip()


def write_bundle(tmp_path: Path, signer: Signer, envelope: dsse.Envelope) -> tuple[Path, Path]:
    bundle, key = tmp_path / "provenance.sigstore.json", tmp_path / "key.pem"
    bundle.write_bytes(b"".join(bundle_parts(envelope.to_json(), envelope.signatures[0].keyid)))
    key.write_bytes(public_key_pem(signer.public_key()))
    return bundle, key


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048"])
def test_sigstore_js_verifies_our_bundle_offline(key_files, tmp_path: Path, key_type: str) -> None:  # type: ignore[no-untyped-def]
    signer = LocalSigner.from_file(str(key_files[key_type][0]))
    envelope = dsse.sign(PAYLOAD, dsse.PAYLOAD_TYPE, signer)
    bundle, key = write_bundle(tmp_path, signer, envelope)
    document = json.loads(bundle.read_text())
    assert (
        document["verificationMaterial"]["publicKey"]["hint"]
        == document["dsseEnvelope"]["signatures"][0]["keyid"]
        == signer.keyid
    )
    assert sigstore_js(bundle, key, DETAILS[key_type]) == "VERIFIED"
    other = LocalSigner.from_file(
        str(key_files["ecdsa-p256" if key_type != "ecdsa-p256" else "ecdsa-p384"][0])
    )
    (tmp_path / "other.pem").write_bytes(public_key_pem(other.public_key()))
    assert sigstore_js(bundle, tmp_path / "other.pem", DETAILS[key_type]).startswith("REJECTED")


def test_sigstore_js_hashes_dsse_with_sha256_whatever_the_curve(key_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A known limit of @sigstore/verify 3.1.1 (DSSE verified with Node's default SHA-256): a P-384
    ES384 envelope, valid for us and securesystemslib, is refused. Hence docs/azure-setup.md's advice to use
    P-256 or RSA keys where Sigstore tooling must verify the bundle."""
    signer = LocalSigner.from_file(str(key_files["ecdsa-p384"][0]))
    envelope = dsse.sign(PAYLOAD, dsse.PAYLOAD_TYPE, signer)
    assert securesystemslib_verifies(envelope, signer.public_key(), signer.keyid)
    bundle, key = write_bundle(tmp_path, signer, envelope)
    assert sigstore_js(bundle, key, DETAILS["ecdsa-p384"]).startswith("REJECTED SIGNATURE_ERROR")


def test_sigstore_js_refuses_raw_and_tampered(key_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    signer = LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))
    envelope = dsse.sign(PAYLOAD, dsse.PAYLOAD_TYPE, signer)
    bundle, key = write_bundle(tmp_path, signer, raw_form(envelope, 32))
    assert sigstore_js(bundle, key, DETAILS["ecdsa-p256"]).startswith("REJECTED SIGNATURE_ERROR")
    tampered = dsse.Envelope(PAYLOAD.replace(b"a", b"b", 1), envelope.payload_type, envelope.signatures)
    bundle, key = write_bundle(tmp_path, signer, tampered)
    assert sigstore_js(bundle, key, DETAILS["ecdsa-p256"]).startswith("REJECTED SIGNATURE_ERROR")


def test_our_verifier_reads_the_reference_bundle() -> None:
    from conftest import shared_ref
    from slsa_provenance.signing.keys import load_public_key

    document = shared_ref(
        "slsa/examples/test-vectors/bundle-v0.3-publickey-p256.valid.sigstore.json"
    ).read_bytes()
    key = load_public_key(shared_ref("slsa/examples/test-vectors/p256.pub.pem").read_bytes(), "p256.pub.pem")
    envelope = dsse.Envelope.from_json(envelope_json(document))
    assert dsse.verify(envelope, [key]).keyid == "contoso-kv/slsa-signing/0123456789abcdef"


def test_bundles_of_other_kinds_are_refused() -> None:
    with pytest.raises(InputError, match="bundle mediaType is 'application/json'"):
        envelope_json(b'{"mediaType": "application/json", "dsseEnvelope": {}}')
    with pytest.raises(InputError, match="holds no dsseEnvelope"):
        envelope_json(
            json.dumps(
                {
                    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "messageSignature": {"signature": base64.b64encode(b"x").decode()},
                }
            ).encode()
        )
