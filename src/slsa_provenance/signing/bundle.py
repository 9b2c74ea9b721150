"""PURE: the Sigstore bundle v0.3 form of a signed envelope, for Sigstore-aware verifiers.

    >>> bundle = b"".join(bundle_parts(envelope.to_json(), keyid))   # doctest: +SKIP
    >>> Envelope.from_json(envelope_json(bundle)) == envelope
    True

No transparency log and no timestamps: the bundle names the key by `verificationMaterial.publicKey.hint`,
which equals the DSSE signature's keyid (a versioned Key Vault kid or a local key's fingerprint).
"""

from __future__ import annotations

import json
from typing import Any

from slsa_provenance import untrusted
from slsa_provenance.errors import InputError

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def bundle_parts(envelope_json: bytes, keyid: str) -> tuple[bytes, bytes, bytes]:
    """The bundle as (head, the envelope's JSON, tail), so a large envelope is never copied."""
    material = {
        "publicKey": {"hint": keyid},
        "tlogEntries": [],
        "timestampVerificationData": {"rfc3161Timestamps": []},
    }
    head = b'{"mediaType":"%b","verificationMaterial":%b,"dsseEnvelope":' % (
        MEDIA_TYPE.encode(),
        json.dumps(material, separators=(",", ":")).encode(),
    )
    return head, envelope_json, b"}"


def envelope_json(document: bytes) -> bytes:
    """The DSSE envelope inside a bundle, or the document itself when it is a bare envelope.

    Raises InputError for a bundle of another kind (a message signature, an unknown media type).
    """
    try:
        value: Any = untrusted.loads(document, strict=True)
    except (ValueError, RecursionError):
        return document  # let the envelope parser name the problem
    if not isinstance(value, dict) or "dsseEnvelope" not in value and "mediaType" not in value:
        return document
    media_type = value.get("mediaType", "")
    if not str(media_type).startswith("application/vnd.dev.sigstore.bundle"):
        raise InputError(
            f"bundle mediaType is {media_type!r}", "pass a Sigstore bundle v0.3 or a DSSE envelope"
        )
    if not isinstance(value.get("dsseEnvelope"), dict):
        raise InputError("the Sigstore bundle holds no dsseEnvelope", "pass a bundle of a DSSE attestation")
    if {"payload", "payloadType", "signatures"} & value.keys():  # a DSSE reader would read those instead
        raise InputError(
            "the Sigstore bundle also carries DSSE envelope fields at its top level",
            "pass a plain bundle or a plain DSSE envelope: one document, one reading",
        )
    return json.dumps(value["dsseEnvelope"]).encode()
