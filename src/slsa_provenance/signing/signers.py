"""Signers: one small interface, chosen by URI.

    >>> signer = from_uri("file:keys/slsa-signing.key", AgentRun())   # doctest: +SKIP
    >>> signature = signer.sign(pae_bytes)

`file:PATH` a local PEM key; `azurekms://VAULT_HOST/KEY[/VERSION]`,
`azurekms://VAULT_HOST/keys/KEY/VERSION` or `https://VAULT.vault.azure.net/keys/KEY[/VERSION]`
an Azure Key Vault or Managed HSM key; `none` for an unsigned envelope. The Azure SDKs are imported
only when a Key Vault key is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import InputError

if TYPE_CHECKING:  # cryptography is imported only when a key is loaded (after the hashing started)
    from slsa_provenance.signing.keys import PublicKey


class Signer(Protocol):
    @property
    def keyid(self) -> str:
        """The DSSE keyid: a Key Vault versioned kid, or a local key's fingerprint."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign `data` (the PAE): ECDSA as ASN.1 DER, RSA as is."""
        ...

    def public_key(self) -> PublicKey: ...


UNSIGNED = "none"
URI_FORMS = "file:PATH, azurekms://VAULT_HOST/KEY[/VERSION], https://VAULT.vault.azure.net/keys/KEY"


def from_uri(uri: str, run: AgentRun) -> Signer:
    """The signer a URI names; `run` gives a local key's password and Key Vault's credentials.

    Raises InputError for a malformed URI or an unusable key, Error when Key Vault fails.
    """
    uri = uri.strip()
    if uri.startswith("file:"):
        from slsa_provenance.signing.local import LocalSigner

        return LocalSigner.from_file(uri.removeprefix("file:"), run.key_password)
    if uri.startswith(("azurekms://", "https://")):
        from slsa_provenance.signing.keyvault import KeyVaultSigner

        return KeyVaultSigner.from_uri(uri, run)
    raise InputError(f"signer {uri!r} is not a signer URI", f"use one of: {URI_FORMS}, or none")


def trusted_key(spec: str, run: AgentRun) -> PublicKey:
    """A verifier's trusted key: a PEM public key file, or a Key Vault key (its public half only).

    Raises InputError for an unreadable or unsupported key, Error when Key Vault fails.
    """
    spec = spec.strip()
    if spec.startswith(("azurekms://", "https://")):
        return from_uri(spec, run).public_key()
    from pathlib import Path

    from slsa_provenance.files import read_limited
    from slsa_provenance.signing.keys import load_public_key

    return load_public_key(read_limited(Path(spec), "key", 1 << 20), spec)
