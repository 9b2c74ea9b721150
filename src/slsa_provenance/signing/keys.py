"""Public-key facts shared by the signers and the verifier; pure, bytes in and out.

>>> key = load_public_key(pem_bytes, "keys/slsa.pub")   # doctest: +SKIP
>>> fingerprint(key)
'sha256:2f9c...'
>>> verify_signature(key, signature, pae_bytes)
True
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from slsa_provenance.errors import InputError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
SUPPORTED = "EC P-256/P-384/P-521, RSA (2048 bits or more) or Ed25519"
_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    """The hash that goes with a curve (ES256/ES384/ES512). Raises InputError for other curves."""
    try:
        return _CURVE_HASHES[curve.name]()
    except KeyError:
        raise InputError(f"EC curve {curve.name} is not supported", f"use {SUPPORTED}") from None


def check_supported(key: object, where: str) -> PublicKey:
    """Raises InputError unless `key` is a public key of a supported type and size."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        ec_hash(key.curve)
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InputError(f"{where} is a {key.key_size}-bit RSA key", f"use {SUPPORTED}")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise InputError(f"{where} holds an unsupported key type {type(key).__name__}", f"use {SUPPORTED}")


def load_public_key(pem: bytes, where: str) -> PublicKey:
    """Parse a PEM public key. Raises InputError for anything else, naming `where`."""
    if b"PRIVATE KEY" in pem:
        raise InputError(
            f"{where} is a private key",
            "give the verifier the public key (keygen writes it beside)",
        )
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{where} is not a PEM public key", f"pass a PEM public key: {SUPPORTED}") from exc
    return check_supported(key, where)


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: PublicKey) -> str:
    """`sha256:` + hex SHA-256 of the DER SubjectPublicKeyInfo: a local key's DSSE keyid."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def verify_signature(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """ECDSA (DER only) with the curve's hash, RSA PKCS#1 v1.5 or PSS with SHA-256, or Ed25519."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(ec_hash(key.curve)))
        elif isinstance(key, rsa.RSAPublicKey):
            return _verify_rsa(key, signature, data)
        else:
            key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _verify_rsa(key: rsa.RSAPublicKey, signature: bytes, data: bytes) -> bool:
    schemes: list[padding.AsymmetricPadding] = [
        padding.PKCS1v15(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
    ]
    for scheme in schemes:
        try:
            key.verify(signature, data, scheme, hashes.SHA256())
            return True
        except InvalidSignature:
            continue
    return False
