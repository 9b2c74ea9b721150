"""Validate a Statement before it is signed: the project's JSON Schema, then in-toto's own checks.

    >>> validate_statement(build_statement(context, subjects))   # doctest: +SKIP

A failure here is a bug in this tool or an override that produced an impossible value, never
something to sign; the error names the JSON path.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from slsa_provenance.errors import Error

_REMEDY = "this provenance cannot be signed; report it with the failing field"


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    text = resources.files("slsa_provenance").joinpath("schemas/provenance.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def validate_statement(statement: dict[str, Any]) -> None:
    """Raises Error naming the first invalid field by JSON path."""
    errors = sorted(_validator().iter_errors(statement), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(statement)"
        raise Error(f"statement invalid at {where}: {first.message}", _REMEDY)
    _validate_in_toto(statement)


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
