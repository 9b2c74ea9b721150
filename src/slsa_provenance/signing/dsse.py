"""PURE: Dead Simple Signing Envelope v1 (https://github.com/secure-systems-lab/dsse).

    >>> envelope = sign(statement_bytes, PAYLOAD_TYPE, signer)   # doctest: +SKIP
    >>> Envelope.from_json(envelope.to_json()) == envelope
    True
    >>> verify(envelope, [signer.public_key()]).keyid == signer.keyid
    True

Signatures cover PAE(payloadType, payload), never the JSON. `keyid` is an unauthenticated hint:
every trusted key is tried against every signature. Standard and URL-safe base64 are accepted,
standard base64 is written; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slsa_provenance import untrusted
from slsa_provenance.errors import Error, InputError, VerificationError
from slsa_provenance.signing.keys import PublicKey, verify_signature
from slsa_provenance.signing.signers import Signer

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        """Parse an envelope. Raises InputError naming the first field that is wrong."""
        try:
            raw = untrusted.loads(data, strict=True)
        except untrusted.AmbiguousError as exc:
            raise InputError(f"envelope is ambiguous JSON: {exc}", "pass the file the signer wrote") from exc
        except (ValueError, RecursionError) as exc:
            raise InputError("envelope is not JSON", "pass the .intoto.jsonl file") from exc
        if not isinstance(raw, dict):
            raise InputError("envelope is not a JSON object", "pass the .intoto.jsonl file")
        payload_type = raw.get("payloadType")
        if not isinstance(payload_type, str):
            raise InputError("envelope payloadType is missing or not a string", "pass a DSSE file")
        signatures = raw.get("signatures", [])
        if not isinstance(signatures, list) or not all(isinstance(s, dict) for s in signatures):
            raise InputError("envelope signatures is not a list of objects", "pass a DSSE file")
        return cls(
            payload=b64decode(raw.get("payload"), "payload"),
            payload_type=payload_type,
            signatures=tuple(_signature(s, i) for i, s in enumerate(signatures)),
        )

    def to_json(self) -> bytes:
        """One line of JSON, standard base64, no trailing newline.

        Assembled around the base64 payload rather than through json.dumps, which would hold
        several copies of a large Statement at once.
        """
        signatures = [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures]
        return b'{"payload":"%b","payloadType":%b,"signatures":%b}' % (
            base64.b64encode(self.payload),
            json.dumps(self.payload_type).encode(),
            json.dumps(signatures, separators=(",", ":")).encode(),
        )


def _signature(raw: dict[str, Any], index: int) -> Signature:
    keyid = raw.get("keyid", "")
    if not isinstance(keyid, str):
        raise InputError(f"envelope signatures[{index}].keyid is not a string", "pass a DSSE file")
    return Signature(keyid=keyid, sig=b64decode(raw.get("sig"), f"signatures[{index}].sig"))


def b64decode(value: object, field: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not. Raises InputError naming `field`."""
    if not isinstance(value, str) or not value:
        raise InputError(f"envelope {field} is missing or not a string", "pass a DSSE file")
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"envelope {field} is not base64", "pass a DSSE file") from exc


def sign(payload: bytes, payload_type: str, signer: Signer) -> Envelope:
    """Sign PAE(payload_type, payload) with one signer."""
    signature = Signature(keyid=signer.keyid, sig=signer.sign(pae(payload_type, payload)))
    return Envelope(payload=payload, payload_type=payload_type, signatures=(signature,))


def sign_checked(payload: bytes, payload_type: str, signer: Signer) -> Envelope:
    """`sign`, then verify the signature with the signer's own public key. Raises Error when it does
    not verify (a faulty key or signing service), so that nothing is written."""
    message = pae(payload_type, payload)  # once: a copy of the payload, megabytes for a large drop
    signature = Signature(keyid=signer.keyid, sig=signer.sign(message))
    if not verify_signature(signer.public_key(), signature.sig, message):
        raise Error(
            "the new signature does not verify with the signer's own public key",
            "the key or the signing service is faulty; nothing was written",
        )
    return Envelope(payload=payload, payload_type=payload_type, signatures=(signature,))


@dataclass(frozen=True)
class Verified:
    keyid: str
    key: PublicKey


def verify(envelope: Envelope, keys: Sequence[PublicKey]) -> Verified:
    """The first (signature, trusted key) pair that verifies.

    Raises VerificationError when the envelope is unsigned or no trusted key verifies it.
    """
    if not envelope.signatures:
        raise VerificationError("(2) signature", "the envelope is unsigned (no signatures)")
    message = pae(envelope.payload_type, envelope.payload)
    for signature in envelope.signatures:
        for key in keys:
            if verify_signature(key, signature.sig, message):
                return Verified(keyid=signature.keyid, key=key)
    keyids = ", ".join(repr(s.keyid) for s in envelope.signatures)
    raise VerificationError(
        "(2) signature",
        f"no signature verifies with the {len(keys)} trusted key(s); signed by keyid {keyids}",
    )
