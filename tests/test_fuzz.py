"""Property-based fuzzing of every parser of untrusted input: only the project's Error types escape.

`make fuzz` runs these with many more examples (HYPOTHESIS_PROFILE=fuzz); CI runs the default profile.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slsa_provenance.errors import InputError, VerificationError
from slsa_provenance.gate.checks import (
    BY_DIGEST,
    BY_NAME,
    BYPRODUCT,
    Artifact,
    Expectations,
    check_artifacts,
    verify_provenance,
)
from slsa_provenance.provenance.sbom import load_sbom
from slsa_provenance.signing import bundle, dsse
from slsa_provenance.signing.local import LocalSigner

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "payload",
        "payloadType",
        "signatures",
        "keyid",
        "sig",
        "_type",
        "subject",
        "predicate",
        "predicateType",
        "digest",
        "sha256",
        "name",
        "mediaType",
        "dsseEnvelope",
        "files",
        "checksums",
        "fileName",
        "algorithm",
        "checksumValue",
        "spdxVersion",
        "@graph",
        "type",
        "verifiedUsing",
    ]
)
# JSON whose keys are the ones the parsers look for, so the fuzzer reaches past the first check.
SHAPED: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.just("application/vnd.in-toto+json")
    | st.just("SPDX-2.2")
    | st.just("software_File")
    | st.just("sha256")
    | st.just("e30="),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=40,
)


@given(st.binary(max_size=400))
def test_envelope_from_arbitrary_bytes(data: bytes) -> None:
    try:
        dsse.Envelope.from_json(data)
    except InputError:
        pass


@given(SHAPED)
def test_envelope_from_shaped_json(value: Any) -> None:
    try:
        envelope = dsse.Envelope.from_json(json.dumps(value))
    except InputError:
        return
    assert isinstance(envelope.payload, bytes)


@given(st.binary(max_size=300) | SHAPED.map(lambda v: json.dumps(v).encode()))
def test_bundle_unwrapping(data: bytes) -> None:
    try:
        bundle.envelope_json(data)
    except InputError:
        pass


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> LocalSigner:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path_factory.mktemp("fuzzkey") / "k.pem"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return LocalSigner.from_file(str(path))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statement=SHAPED | JSON, artifact=st.from_regex(r"\A[0-9a-f]{64}\Z"))
def test_signed_arbitrary_statements_only_fail_verification(
    signer: LocalSigner, statement: Any, artifact: str
) -> None:
    envelope = dsse.sign(json.dumps(statement).encode(), dsse.PAYLOAD_TYPE, signer).to_json()
    expected = Expectations(
        builder_id="b", source_uri="u", source_ref="refs/*", commit="c" * 40, sbom_sha256="0" * 64
    )
    try:
        verified = verify_provenance(envelope, [signer.public_key()], expected)
    except VerificationError:
        return
    check_artifacts(verified.statement, [Artifact("a", artifact)])


@given(st.dictionaries(st.sampled_from(["_type", "subject", "predicate", "predicateType"]), SHAPED | JSON))
def test_artifact_check_on_arbitrary_statements(statement: dict[str, Any]) -> None:
    artifacts = [Artifact("a", "0" * 64, match) for match in (BY_DIGEST, BY_NAME, BYPRODUCT)]
    results = check_artifacts(statement, artifacts)
    assert len(results) == 3


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | SHAPED.map(lambda v: json.dumps(v).encode()))
def test_sbom_parsing(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "manifest.spdx.json"
    path.write_bytes(body)
    try:
        load_sbom(path, "manifest.spdx.json", check_sidecar=False)
    except InputError:
        pass


@given(st.text(max_size=30), st.binary(max_size=60), st.text(max_size=30), st.binary(max_size=60))
def test_pae_is_injective(type_a: str, body_a: bytes, type_b: str, body_b: bytes) -> None:
    if (type_a, body_a) != (type_b, body_b):
        assert dsse.pae(type_a, body_a) != dsse.pae(type_b, body_b)


@given(st.binary(max_size=200))
def test_base64_forms_round_trip(data: bytes) -> None:
    for encoded in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode().rstrip("=")):
        if encoded:
            assert dsse.b64decode(encoded, "payload") == data


@given(st.integers(min_value=1, max_value=200), st.booleans())
def test_nesting_is_refused_before_it_reaches_the_interpreter(depth: int, objects: bool) -> None:
    from slsa_provenance import untrusted

    text = '{"a":' * depth + "1" + "}" * depth if objects else "[" * depth + "]" * depth
    if depth <= untrusted.MAX_DEPTH:
        assert untrusted.loads(text) is not None
    else:
        with pytest.raises(ValueError, match="nested deeper than 64 levels"):
            untrusted.loads(text)
