"""A gate's policy: one reviewed YAML or JSON file instead of many flags (docs/policy.md).

    >>> policy = load_policy(Path("docs/policy.example.yml"))   # doctest: +SKIP
    >>> policy.builders[0]
    Builder(id='https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/main', level=2)

Validated against `schemas/policy.schema.json`; every problem is reported with its line and field,
and a key given twice is one of them. JSON is read as YAML (its flow style). Key paths are relative
to the policy's folder. What the policy leaves out is not checked, except what `verify` always checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from slsa_provenance.errors import InputError
from slsa_provenance.files import read_limited

MAX_POLICY = 1 << 20
MAX_DEPTH = 64
_REMEDY = "correct the policy (docs/policy.md describes each field)"


@dataclass(frozen=True)
class PolicyBuilder:
    id: str
    """PATH@REF, exact or globs."""
    level: int
    keys: tuple[str, ...] | None = None
    """The keys that may sign for it, as `trustedKeys` names them (None: any trusted key)."""


@dataclass(frozen=True)
class Policy:
    path: Path
    sha256: str
    trusted_keys: tuple[str, ...]
    """Key Vault URIs, and PEM files resolved against the policy's folder."""
    builders: tuple[PolicyBuilder, ...] | None = None
    repositories: tuple[str, ...] | None = None
    refs: tuple[str, ...] | None = None
    build_type: str | None = None
    require_sbom: bool = False
    allow_unconfirmed: bool = False


def load_policy(path: Path) -> Policy:
    """Read and validate a policy. Raises InputError naming every problem with its line and field."""
    raw = read_limited(path, "policy", MAX_POLICY)
    document, lines, problems = _parse(raw, path)
    problems += _schema_problems(document, lines) or _builder_problems(document, lines)
    if problems:
        named = "; ".join(f"line {line}: {problem}" for line, problem in sorted(problems))
        raise InputError(f"policy {path} is invalid: {named}", _REMEDY)

    def optional(field: str) -> tuple[str, ...] | None:
        return tuple(document[field]) if field in document else None

    return Policy(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        trusted_keys=tuple(_key(k, path.parent) for k in document["trustedKeys"]),
        builders=tuple(
            PolicyBuilder(
                b["id"], b["level"], tuple(_key(k, path.parent) for k in b["keys"]) if "keys" in b else None
            )
            for b in document["builders"]
        )
        if "builders" in document
        else None,
        repositories=optional("repositories"),
        refs=optional("refs"),
        build_type=document.get("buildType"),
        require_sbom=document.get("requireSbom", False),
        allow_unconfirmed=document.get("allowUnconfirmed", False),
    )


def _builder_problems(document: dict[str, Any], lines: Lines) -> Problems:
    """What the schema cannot say: a level is an integer (YAML's 3.0 is a float that JSON Schema
    takes for 3), and a builder id names its ref after an `@`."""
    problems = []
    for index, builder in enumerate(document.get("builders", [])):
        level, where = builder["level"], ("builders", index)
        if not isinstance(level, int):
            problems.append(
                (
                    lines.get((*where, "level"), 1),
                    f"{_field((*where, 'level'))}: {level!r} is not an integer 1 to 3",
                )
            )
        if "@" not in builder["id"]:
            problems.append(
                (
                    lines.get((*where, "id"), 1),
                    f"{_field((*where, 'id'))}: {builder['id']!r} has no @REF (ids are PATH@REF)",
                )
            )
    return problems


def _key(spec: str, folder: Path) -> str:
    spec = spec.strip()
    if spec.startswith(("azurekms://", "https://")):
        return spec
    return str(folder / spec)


Lines = dict[tuple[str | int, ...], int]
Problems = list[tuple[int, str]]
"""(line, what is wrong there), in line order once sorted."""


def _parse(raw: bytes, path: Path) -> tuple[Any, Lines, Problems]:
    """The document, the line of every field (by JSON path), and the duplicate keys."""
    import yaml

    try:
        _check_depth(raw, path)
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"policy {path} is not YAML or JSON: {where}{problem}", _REMEDY) from exc
    if node is None:
        raise InputError(f"policy {path} is empty", _REMEDY)
    lines: Lines = {}
    problems: Problems = []
    _walk(node, (), lines, problems, set())
    return document, lines, problems


def _check_depth(raw: bytes, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the parser's events (iterative), before the
    composer, which recurses, could reach the interpreter's limit."""
    import yaml

    depth = 0
    for event in yaml.parse(raw, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise InputError(
                    f"policy {path} is nested deeper than {MAX_DEPTH} levels at line {line}", _REMEDY
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _walk(node: Any, path: tuple[str | int, ...], lines: Lines, problems: Problems, seen: set[int]) -> None:
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:  # an alias: its node was walked where it was anchored
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in first:
                problems.append((line, f"{_field((*path, name))}: given twice (first on line {first[name]})"))
            first.setdefault(name, line)
            _walk(value, (*path, name), lines, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, problems, seen)


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    text = resources.files("slsa_provenance").joinpath("schemas/policy.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def _schema_problems(document: Any, lines: Lines) -> Problems:
    problems = []
    for error in sorted(_validator().iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            for name in sorted(set(map(str, error.instance)) - set(known)):
                where = (*path, name)
                problems.append(
                    (
                        lines.get(where, 1),
                        f"{_field(where)}: unknown field (known: {', '.join(sorted(known))})",
                    )
                )
            continue
        problems.append((lines.get(path, 1), f"{_field(path)}: {error.message}"))
    return problems


def _field(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or "(policy)"
