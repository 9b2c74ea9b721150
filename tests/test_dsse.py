from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import shared_ref
from slsa_provenance.errors import Error, InputError, VerificationError
from slsa_provenance.signing import dsse
from slsa_provenance.signing.keys import PublicKey, load_public_key
from slsa_provenance.signing.local import LocalSigner

KEY_TYPES = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "ed25519"]


def test_pae_matches_the_dsse_spec_vector() -> None:
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert dsse.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_round_trip_per_key_type(key_type: str, key_files: dict[str, tuple[Path, Path]]) -> None:
    private, public = key_files[key_type]
    signer = LocalSigner.from_file(str(private))
    envelope = dsse.sign(b'{"a":1}', dsse.PAYLOAD_TYPE, signer)
    parsed = dsse.Envelope.from_json(envelope.to_json())
    assert parsed == envelope
    verified = dsse.verify(parsed, [load_public_key(public.read_bytes(), str(public))])
    assert verified.keyid == signer.keyid.lower()
    if key_type.startswith("ecdsa"):
        assert envelope.signatures[0].sig[0] == 0x30  # ASN.1 DER SEQUENCE, not raw r||s


def test_verify_tries_every_key_and_ignores_the_keyid(key_files: dict[str, tuple[Path, Path]]) -> None:
    signer = LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))
    envelope = dsse.sign(b"x", dsse.PAYLOAD_TYPE, signer)
    relabelled = dsse.Envelope(
        envelope.payload,
        envelope.payload_type,
        (dsse.Signature("not-the-keyid", envelope.signatures[0].sig),),
    )
    keys = [load_public_key(key_files[k][1].read_bytes(), k) for k in ("rsa-2048", "ed25519", "ecdsa-p256")]
    assert dsse.verify(relabelled, keys).keyid == "not-the-keyid"


def test_tampered_payload_and_signature_and_wrong_key_fail(key_files: dict[str, tuple[Path, Path]]) -> None:
    signer = LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))
    good = dsse.sign(b'{"a":1}', dsse.PAYLOAD_TYPE, signer)
    key = signer.public_key()
    sig = good.signatures[0]
    bad_payload = dsse.Envelope(b'{"a":2}', good.payload_type, good.signatures)
    flipped = bytes([sig.sig[0], sig.sig[1], sig.sig[2], sig.sig[3] ^ 1]) + sig.sig[4:]
    bad_sig = dsse.Envelope(good.payload, good.payload_type, (dsse.Signature(sig.keyid, flipped),))
    other_type = dsse.Envelope(good.payload, "application/json", good.signatures)
    for envelope in (bad_payload, bad_sig, other_type):
        with pytest.raises(VerificationError, match=r"^\(2\) signature"):
            dsse.verify(envelope, [key])
    wrong = load_public_key(key_files["ecdsa-p384"][1].read_bytes(), "p384")
    with pytest.raises(VerificationError, match="no signature verifies with the 1 trusted key"):
        dsse.verify(good, [wrong])


def test_unsigned_envelope_is_refused() -> None:
    with pytest.raises(VerificationError, match="unsigned"):
        dsse.verify(dsse.Envelope(b"{}", dsse.PAYLOAD_TYPE, ()), [])


def test_accepts_url_safe_unpadded_base64_and_unknown_fields(key_files: dict[str, tuple[Path, Path]]) -> None:
    signer = LocalSigner.from_file(str(key_files["rsa-2048"][0]))
    payload = b"\xfb\xff\xfe" * 50  # encodes to '+' and '/' in standard base64
    envelope = dsse.sign(payload, dsse.PAYLOAD_TYPE, signer)
    raw = json.loads(envelope.to_json())
    raw["payload"] = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    raw["signatures"][0]["sig"] = base64.urlsafe_b64encode(envelope.signatures[0].sig).decode()
    raw["signatures"][0]["cert"] = "ignored"
    raw["extra"] = {"ignored": True}
    parsed = dsse.Envelope.from_json(json.dumps(raw))
    assert parsed == envelope
    dsse.verify(parsed, [signer.public_key()])


def test_writes_standard_base64_on_one_line(key_files: dict[str, tuple[Path, Path]]) -> None:
    signer = LocalSigner.from_file(str(key_files["ed25519"][0]))
    text = dsse.sign(b"\xfb\xff" * 40, dsse.PAYLOAD_TYPE, signer).to_json().decode()
    assert "\n" not in text
    assert "-" not in json.loads(text)["payload"] and "_" not in json.loads(text)["payload"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"payload": "e30="}', "payloadType is missing"),
        ('{"payloadType": "t", "payload": "%%%"}', "payload is not base64"),
        ('{"payloadType": "t"}', "payload is missing"),
        ('{"payloadType": "t", "payload": "e30=", "signatures": {}}', "signatures is not a list"),
        ('{"payloadType": "t", "payload": "e30=", "signatures": [{"sig": 5}]}', r"signatures\[0\].sig"),
        ('{"payloadType": "t", "payload": "e30=", "signatures": [{"keyid": 1, "sig": "AA=="}]}', "keyid"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ],
)
def test_malformed_envelopes_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dsse.Envelope.from_json(text)


def test_reference_vectors_der_verify_and_raw_is_rejected() -> None:
    key_path = shared_ref("slsa/examples/test-vectors/p256.pub.pem")
    key = load_public_key(key_path.read_bytes(), str(key_path))
    for name in ("dsse-p256-der.valid.json", "dsse-p256-der-kvkid.valid.json"):
        envelope = dsse.Envelope.from_json(shared_ref(f"slsa/examples/test-vectors/{name}").read_bytes())
        assert dsse.verify(envelope, [key]).keyid == envelope.signatures[0].keyid
    raw = dsse.Envelope.from_json(
        shared_ref("slsa/examples/test-vectors/dsse-p256-p1363-raw.invalid.json").read_bytes()
    )
    assert len(raw.signatures[0].sig) == 64
    with pytest.raises(VerificationError, match=r"\(2\) signature"):
        dsse.verify(raw, [key])


def test_real_google_cloud_build_kms_envelope_verifies() -> None:
    document = json.loads(shared_ref("slsa/examples/real/gcb-v1.0-kms-signed-dsse.json").read_bytes())
    envelope_json = json.dumps(document["provenance_summary"]["provenance"][0]["envelope"])
    envelope = dsse.Envelope.from_json(envelope_json)
    key_path = shared_ref("slsa/examples/real/gcb-google-hosted-worker-v1.pub.pem")
    key = load_public_key(key_path.read_bytes(), str(key_path))
    verified = dsse.verify(envelope, [key])
    assert verified.keyid.endswith("cryptoKeys/google-hosted-worker/cryptoKeyVersions/1")
    statement = json.loads(envelope.payload)
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    tampered = dsse.Envelope(
        envelope.payload.replace(b"sha256", b"sha257", 1), envelope.payload_type, envelope.signatures
    )
    with pytest.raises(VerificationError):
        dsse.verify(tampered, [key])


class SigningServiceWithAnotherKey:
    """A signer whose signing service answers with another key than the public key it reports
    (a misconfigured Key Vault key version, say)."""

    def __init__(self, reported: LocalSigner, signing: LocalSigner) -> None:
        self.keyid = reported.keyid
        self._reported, self._signing = reported, signing

    def sign(self, data: bytes) -> bytes:
        return self._signing.sign(data)

    def public_key(self) -> PublicKey:
        return self._reported.public_key()


def test_sign_checked_refuses_a_signature_its_own_public_key_does_not_verify(
    key_files: dict[str, tuple[Path, Path]],
) -> None:
    p256 = LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))
    other = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    envelope = dsse.sign_checked(b'{"a":1}', dsse.PAYLOAD_TYPE, p256)
    assert dsse.verify(envelope, [p256.public_key()]).keyid == p256.keyid
    with pytest.raises(Error, match="the new signature does not verify with the signer's own public key"):
        dsse.sign_checked(b'{"a":1}', dsse.PAYLOAD_TYPE, SigningServiceWithAnotherKey(p256, other))
