"""Sign with an Azure Key Vault or Managed HSM key; the private key never leaves the vault.

    >>> signer = KeyVaultSigner.from_uri("azurekms://contoso.vault.azure.net/slsa", run)  # doctest: +SKIP
    >>> signer.keyid
    'https://contoso.vault.azure.net/keys/slsa/0123456789abcdef0123456789abcdef'

The PAE is hashed here with the curve's hash and Key Vault signs the digest (ES256/384/512 for
P-256/384/521, RS256 or, with `?alg=PS256`, PS256 for RSA). Key Vault returns ECDSA signatures
as raw r||s; DSSE verifiers expect ASN.1 DER, so they are converted with fixed-width halves.
RSA signatures are used as returned.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.azure.credentials import from_service_connection
from slsa_provenance.errors import Error, InputError
from slsa_provenance.signing.keys import PublicKey, check_supported

_NAME = r"[0-9A-Za-z-]{1,127}"
_VERSION = r"[0-9A-Za-z]{1,64}"
_AZUREKMS = re.compile(rf"^azurekms://([^/?#]+)/(?:keys/)?({_NAME})(?:/({_VERSION}))?/?$")
_HTTPS = re.compile(rf"^https://([^/?#]+)/keys/({_NAME})(?:/({_VERSION}))?/?$")
_EC_ALGORITHMS = {"P-256": ("ES256", 32), "P-384": ("ES384", 48), "P-521": ("ES512", 66)}
_RSA_ALGORITHMS = ("RS256", "PS256")


@dataclass(frozen=True)
class KeyReference:
    vault_url: str
    name: str
    version: str
    algorithm: str = ""

    @classmethod
    def parse(cls, uri: str) -> KeyReference:
        """Accepts azurekms://HOST/KEY[/VERSION], azurekms://HOST/keys/KEY/VERSION and the key's
        https URL, each optionally with `?alg=PS256`. Raises InputError otherwise."""
        base, _, query = uri.strip().partition("?")
        match = _AZUREKMS.match(base) or _HTTPS.match(base)
        if not match:
            raise InputError(
                f"{uri!r} is not a Key Vault key reference",
                "use azurekms://VAULT.vault.azure.net/KEY[/VERSION] or the key's identifier "
                "https://VAULT.vault.azure.net/keys/KEY[/VERSION]",
            )
        host, name, version = match.group(1), match.group(2), match.group(3) or ""
        algorithm = parse_qs(query).get("alg", [""])[0].upper()
        if algorithm and algorithm not in _RSA_ALGORITHMS:
            raise InputError(f"alg={algorithm} is not supported", "use alg=RS256 or alg=PS256 for RSA keys")
        return cls(vault_url=f"https://{host}", name=name, version=version, algorithm=algorithm)


class KeyVaultSigner:
    def __init__(self, key: Any, crypto: Any, reference: KeyReference) -> None:
        self._kid: str = key.id
        self._crypto = crypto
        self._reference = reference
        self._public, self._algorithm, self._half = _public_key(key.key, reference.algorithm)

    @classmethod
    def from_uri(cls, uri: str, run: AgentRun) -> KeyVaultSigner:
        """Resolve the key (and its current version). Raises Error with the cause and its remedy."""
        from azure.keyvault.keys import KeyClient
        from azure.keyvault.keys.crypto import CryptographyClient

        reference = KeyReference.parse(uri)
        credential = from_service_connection(run)
        options = run.http.client_options()
        with translate_errors(reference):
            key = KeyClient(reference.vault_url, credential, **options).get_key(
                reference.name, reference.version or None
            )
            if "sign" not in (key.key_operations or ["sign"]):
                raise InputError(
                    f"Key Vault key {key.id} does not permit 'sign'", "enable the sign operation"
                )
            crypto = CryptographyClient(key.id, credential, **options)
        return cls(key, crypto, reference)

    @property
    def keyid(self) -> str:
        return self._kid

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        from azure.keyvault.keys.crypto import SignatureAlgorithm

        digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[self._algorithm[2:]]
        with translate_errors(self._reference):
            # Signing a digest is idempotent, so a throttled or failed POST may be sent again.
            result = self._crypto.sign(
                SignatureAlgorithm(self._algorithm), digest(data).digest(), retry_on_methods={"POST"}
            )
        signature: bytes = result.signature
        if self._half:
            return raw_to_der(signature, self._half)
        return signature


def _public_key(jwk: Any, requested: str) -> tuple[PublicKey, str, int]:
    """(public key, JWS algorithm, r/s width in bytes or 0 for RSA) of a JSON Web Key."""
    kty = _text(jwk.kty).removesuffix("-HSM")
    if kty == "EC":
        curve = _text(jwk.crv)
        if curve not in _EC_ALGORITHMS:
            raise InputError(f"Key Vault key uses curve {curve}", "use a P-256, P-384 or P-521 key")
        curves: dict[str, ec.EllipticCurve] = {
            "P-256": ec.SECP256R1(),
            "P-384": ec.SECP384R1(),
            "P-521": ec.SECP521R1(),
        }
        numbers = ec.EllipticCurvePublicNumbers(_int(jwk.x), _int(jwk.y), curves[curve])
        algorithm, half = _EC_ALGORITHMS[curve]
        if requested:
            raise InputError(f"alg={requested} applies to RSA keys only", "remove ?alg= for EC keys")
        return numbers.public_key(), algorithm, half
    if kty == "RSA":
        key = rsa.RSAPublicNumbers(_int(jwk.e), _int(jwk.n)).public_key()
        return check_supported(key, "the Key Vault key"), requested or "RS256", 0
    raise InputError(f"Key Vault key type {_text(jwk.kty)} cannot sign", "use an EC or RSA key (or -HSM)")


def _text(value: Any) -> str:
    """The SDK gives enum members for known values and plain strings for others."""
    return str(getattr(value, "value", value))


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def raw_to_der(signature: bytes, half: int) -> bytes:
    """IEEE P1363 r||s (Key Vault's form) to ASN.1 DER. Raises Error when the length is wrong."""
    if len(signature) != 2 * half:
        raise Error(
            f"Key Vault returned a {len(signature)}-byte ECDSA signature, expected {2 * half}",
            "the vault answered with an unexpected format; nothing was written",
        )
    return encode_dss_signature(_int(signature[:half]), _int(signature[half:]))


@contextmanager
def translate_errors(reference: KeyReference) -> Iterator[None]:
    """Turn the SDK's exceptions into one sentence that names the key and the remedy."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    key = f"{reference.name}{'/' + reference.version if reference.version else ''} in {reference.vault_url}"
    try:
        yield
    except ResourceNotFoundError as exc:
        raise Error(f"Key Vault key {key} does not exist", "check the key name, version and vault") from exc
    except ClientAuthenticationError as exc:
        if exc.status_code == 403:
            raise Error(
                f"the service connection's identity may not use key {key} (403 Forbidden)",
                "grant it the 'Key Vault Crypto User' role on the key or vault "
                "(or 'sign' and 'get' key permissions in an access policy)",
            ) from exc
        if "OIDC" in _reason(exc):
            raise Error(
                f"Azure DevOps refused to issue the ID token for the service connection: {_reason(exc)}",
                "authorize this pipeline to use the service connection (Project settings > Service "
                "connections > Security)",
            ) from exc
        raise Error(
            f"Microsoft Entra ID refused to sign in for key {key}: {_reason(exc)}",
            "check that the service connection's app registration has a federated credential whose "
            "issuer is https://vstoken.dev.azure.com/<organization id> and subject "
            "sc://<organization>/<project>/<service connection name>",
        ) from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        if status == 403:
            raise Error(
                f"the service connection's identity may not use key {key} (403 Forbidden)",
                "grant it the 'Key Vault Crypto User' role on the key or vault",
            ) from exc
        if status == 429 or status >= 500:
            raise Error(
                f"Key Vault kept answering {status} for key {key} after retrying with back-off",
                "try again later; if it persists, raise SLSA_HTTP_RETRIES or check the vault's health",
            ) from exc
        raise Error(
            f"Key Vault refused key {key}: {status} {_reason(exc)}", "check the key and its vault"
        ) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise Error(
            f"cannot reach {reference.vault_url} for key {key}: {_reason(exc)}",
            "check the vault name, the agent's network access and proxy settings",
        ) from exc
    except (AzureError, ValueError) as exc:  # malformed answers: DecodeError, bad JWK fields
        raise Error(
            f"Key Vault gave an unusable answer for key {key}: {_reason(exc)}",
            "try again later; a proxy may be rewriting the vault's responses",
        ) from exc


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).splitlines()[0][:300]
