"""A PEM private key on disk: the signer for use outside Azure and for the offline demo.

    >>> write_key_pair(Path("keys"), "ecdsa-p256")   # doctest: +SKIP
    (PosixPath('keys/slsa-signing.key'), PosixPath('keys/slsa-signing.pub'))
    >>> LocalSigner.from_file("keys/slsa-signing.key").keyid
    'sha256:5b1c...'

An encrypted key's password comes from the SLSA_KEY_PASSWORD environment variable (read once, by
AgentRun), never argv.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from slsa_provenance.azure.agent import KEY_PASSWORD_VARIABLE
from slsa_provenance.errors import InputError
from slsa_provenance.files import write_files
from slsa_provenance.signing import KEY_TYPES
from slsa_provenance.signing.keys import (
    SUPPORTED,
    PublicKey,
    check_supported,
    ec_hash,
    fingerprint,
    public_key_pem,
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PRIVATE_NAME, PUBLIC_NAME = "slsa-signing.key", "slsa-signing.pub"


class LocalSigner:
    def __init__(self, private_key: PrivateKey) -> None:
        self._key = private_key
        self._public = check_supported(private_key.public_key(), "the signing key")
        self._keyid = fingerprint(self._public)

    @classmethod
    def from_file(cls, path: str, password: str = "") -> LocalSigner:
        """Load a PEM private key, decrypted with `password` (SLSA_KEY_PASSWORD) when it is encrypted.
        Raises InputError for a missing, malformed or unsupported key."""
        if not path:
            raise InputError("signer 'file:' names no file", "use file:PATH to a PEM private key")
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read signing key {path}: {exc.strerror}",
                "create one with 'slsa-provenance keygen --out DIR'",
            ) from exc
        try:
            key = serialization.load_pem_private_key(pem, password.encode() if password else None)
        except TypeError as exc:
            raise InputError(
                f"signing key {path} is encrypted", f"put its password in {KEY_PASSWORD_VARIABLE}"
            ) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InputError(
                f"signing key {path} is not a usable PEM private key (or the password is wrong)",
                f"pass a PEM private key: {SUPPORTED}",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise InputError(f"signing key {path} is a {type(key).__name__}", f"use {SUPPORTED}")
        return cls(key)

    @property
    def keyid(self) -> str:
        return self._keyid

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(ec_hash(key.curve)))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise InputError(f"key type {key_type!r} is not supported", f"use one of {', '.join(KEY_TYPES)}")


def write_key_pair(folder: Path, key_type: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write PRIVATE_NAME (mode 0600) and PUBLIC_NAME into `folder`; never overwrite unless forced."""
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if not force and (private_path.exists() or public_path.exists()):
        raise InputError(
            f"{private_path} or {public_path} already exists",
            "choose another --out, or pass --force",
        )
    key = generate_key(key_type)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public_key_pem(check_supported(key.public_key(), "the new key"))
    write_files({private_path: private_pem, public_path: public_pem}, private=frozenset({private_path}))
    return private_path, public_path
