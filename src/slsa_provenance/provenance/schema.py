"""Validate a Statement before it is signed: the project's JSON Schema, then in-toto's own checks.

    >>> validate_statement(build_statement(context, subjects))   # doctest: +SKIP

A failure here is a bug in this tool or an override that produced an impossible value, never
something to sign; the error names the JSON path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, cast

from slsa_provenance.errors import Error

_REMEDY = "this provenance cannot be signed; report it with the failing field"
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_HEX = re.compile(r"[0-9a-f]*\Z")


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    text = resources.files("slsa_provenance").joinpath("schemas/provenance.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def validate_statement(statement: dict[str, Any]) -> None:
    """Raises Error naming the first invalid field by JSON path.

    jsonschema and protobuf cost about 100 us per subject, seconds for a large drop; so the
    subject list is checked here against the schema's subject rule, and the validators see the
    Statement with its first subject only.
    """
    subjects = statement.get("subject")
    if isinstance(subjects, list) and len(subjects) > 1:
        _check_subjects(subjects)
        statement = {**statement, "subject": subjects[:1]}
    errors = sorted(_validator().iter_errors(statement), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(statement)"
        raise Error(f"statement invalid at {where}: {first.message}", _REMEDY)
    _validate_in_toto(statement)


def _check_subjects(subjects: list[Any]) -> None:
    names, digests = [], []
    for subject in subjects:
        subject = subject if isinstance(subject, dict) else {}
        digest = subject.get("digest")
        names.append(subject.get("name"))
        digests.append(digest.get("sha256") if isinstance(digest, dict) else None)
    validate_subjects(names, digests)


def validate_subjects(names: Sequence[object], digests: Sequence[object]) -> None:
    """The schema's `subject` items rule, for each name and its sha256 digest: a non-empty name,
    lower-case hex. Checked for the whole list at once (milliseconds for 100,000), then one by one
    to name the first bad subject."""
    if (
        len(names) == len(digests)
        and all(isinstance(name, str) and name for name in names)
        and all(isinstance(digest, str) and len(digest) == 64 for digest in digests)
        and _HEX.fullmatch("".join(cast(Sequence[str], digests)))  # every one is a str, checked above
    ):
        return
    for index, (name, sha256) in enumerate(zip(names, digests, strict=True)):
        if not isinstance(name, str) or not name:
            raise Error(f"statement invalid at subject.{index}.name: a non-empty string is required", _REMEDY)
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise Error(
                f"statement invalid at subject.{index}.digest.sha256: 64 lower-case hex digits required",
                _REMEDY,
            )


def _validate_in_toto(statement: dict[str, Any]) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        proto = json_format.ParseDict(statement, statement_pb2.Statement())
        Statement.copy_from_pb(proto).validate()
        json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
    except (ValueError, json_format.ParseError) as exc:
        raise Error(f"statement rejected by in-toto-attestation: {exc}", _REMEDY) from exc
