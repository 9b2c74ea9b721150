"""task.json's visibleRules as the classic editor evaluates them: each parses with the editor's grammar
and names a real input and one of its values, and each input shows exactly when it matters. The
grammar is the editor's (DistributedTaskControls VisibilityHelper): predicates `input OP value` with
OP one of = == != < > <= >= Contains StartsWith EndsWith and their Not forms, the value letters,
digits, dots and spaces (the editor trims it: a blank value is no value), joined by && or by ||, never both; matching is case-insensitive, and an
input whose rule names a hidden input is hidden too (under &&). No operator tests for an empty value."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import REPO
from pipeline_schema import load_manifest, task_manifest

TASK = load_manifest(task_manifest(REPO))
INPUTS: dict[str, dict[str, Any]] = {item["name"]: item for item in TASK["inputs"]}
GROUPS: dict[str, dict[str, Any]] = {group["name"]: group for group in TASK["groups"]}
PREDICATE = re.compile(
    r"^\s*([A-Za-z0-9]+)\s*(==|!=|<=|>=|=|<|>|NotContains|NotStartsWith|NotEndsWith|Contains|StartsWith|EndsWith)"
    r"\s*([A-Za-z0-9.][A-Za-z0-9. ]*?)\s*$"
)


@dataclass(frozen=True)
class Predicate:
    name: str
    operator: str
    value: str

    def holds(self, given: str) -> bool:
        given, value = given.lower(), self.value.lower()
        if self.operator in ("=", "=="):
            return given == value
        if self.operator == "!=":
            return given != value
        raise AssertionError(f"no test here uses {self.operator}")


def parse(rule: str) -> tuple[str, list[Predicate]]:
    """(the connective, the predicates); raises AssertionError where the editor would not parse it."""
    assert not ("&&" in rule and "||" in rule), f"{rule!r}: the editor splits on && or on ||, not both"
    connective = "&&" if "&&" in rule else "||"
    predicates = []
    for part in rule.split(connective):
        match = PREDICATE.match(part)
        assert match, f"{rule!r}: {part.strip()!r} is not `input OP value`"
        predicates.append(Predicate(*match.groups()))
    return connective, predicates


def rules() -> list[tuple[str, str]]:
    found = [(f"group {g['name']}", g["visibleRule"]) for g in TASK["groups"] if "visibleRule" in g]
    return found + [(f"input {i['name']}", i["visibleRule"]) for i in TASK["inputs"] if "visibleRule" in i]


def choices(item: dict[str, Any]) -> list[str]:
    if item["type"] == "boolean":
        return ["true", "false"]
    return list(item.get("options", {}))


@pytest.mark.parametrize(("owner", "rule"), rules(), ids=[owner for owner, _ in rules()])
def test_every_rule_names_a_real_input_and_one_of_its_values(owner: str, rule: str) -> None:
    _, predicates = parse(rule)
    for predicate in predicates:
        assert predicate.name in INPUTS, f"{owner}: {predicate.name} is not an input"
        assert predicate.name != owner.split()[-1], f"{owner}: a rule on itself"
        assert choices(INPUTS[predicate.name]), f"{owner}: {predicate.name} has no fixed values to compare"
        assert predicate.value in choices(INPUTS[predicate.name]), (
            f"{owner}: {predicate.value} is not a value"
        )


def test_the_parser_refuses_what_the_editor_cannot_read() -> None:
    for rule in ("a = b && c = d || e = f", "vsaFile != ", "vsaFile NotEmpty", "a = $(x)"):
        with pytest.raises(AssertionError):
            parse(rule)
    assert parse("a = b || c != d")[0] == "||"


def visible(values: dict[str, str]) -> set[str]:
    """The inputs the editor shows for these values of the choosing inputs."""

    def holds(rule: str | None, shown: set[str]) -> bool:
        if not rule:
            return True
        connective, predicates = parse(rule)
        results = [p.name in shown and p.holds(values[p.name]) for p in predicates]
        return all(results) if connective == "&&" else any(results)

    shown: set[str] = set()
    for _ in INPUTS:  # until nothing changes: a rule may name an input listed after it
        now = {
            name
            for name, item in INPUTS.items()
            if holds(GROUPS.get(item.get("groupName", ""), {}).get("visibleRule"), shown | {name})
            and holds(item.get("visibleRule"), shown)
        }
        if now == shown:
            break
        shown = now
    return shown


CHOOSING = sorted({p.name for _, rule in rules() for p in parse(rule)[1]})


def every_combination() -> list[dict[str, str]]:
    return [
        dict(zip(CHOOSING, values, strict=True))
        for values in itertools.product(*(choices(INPUTS[n]) for n in CHOOSING))
    ]


GENERATE_ALWAYS = {"command", "dropFolder", "subjects", "images", "dockerOutput", "attachToImages"}
GENERATE_ALWAYS |= {"signingMethod", "outputFolder", "sbomCheck", "sbomFile", "sbomPackages"}
GENERATE_ALWAYS |= {"confirmWithServer", "allowPullRequest", "builderId"}
VERIFY = {"command", "azureSubscription", "provenanceFile", "artifacts", "verifyImages", "trustedKeys"}
VERIFY |= {"policyFile", "expectedBuilderId", "expectedRepository", "expectedBuildType", "expectedRef"}
VERIFY |= {"allowUnconfirmed", "vsaFile", "vsaSigner", "verifierId", "resourceUri"}


def test_verify_shows_the_gate_s_inputs_and_nothing_of_generate() -> None:
    for values in every_combination():
        if values["command"] == "verify":
            assert visible(values) == VERIFY, values


@pytest.mark.parametrize(
    ("values", "extra"),
    [
        ({"signingMethod": "keyVault"}, {"azureSubscription", "keyVaultKey"}),
        ({"signingMethod": "localKey"}, {"localKeyFile"}),
        ({"signingMethod": "unsigned"}, set()),
        ({"signingMethod": "unsigned", "confirmWithServer": "false"}, {"pipelineFile"}),
        ({"signingMethod": "unsigned", "attachToImages": "true"}, {"attachFormat"}),
    ],
)
def test_generate_shows_each_input_when_it_matters(values: dict[str, str], extra: set[str]) -> None:
    chosen = {"command": "generate", "attachToImages": "false", "confirmWithServer": "true", **values}
    assert visible(chosen) == GENERATE_ALWAYS | extra


def test_every_input_shows_for_some_choice() -> None:
    seen = set().union(*(visible(values) for values in every_combination()))
    assert seen == set(INPUTS)


def test_the_verification_inputs_are_grouped_by_purpose() -> None:
    grouped = {name: item["groupName"] for name, item in INPUTS.items() if name in VERIFY - {"command"}}
    assert {name for name, group in grouped.items() if group == "verification"} == {
        "provenanceFile",
        "artifacts",
        "verifyImages",
    }
    assert {name for name, group in grouped.items() if group == "summary"} == {
        "vsaFile",
        "vsaSigner",
        "verifierId",
        "resourceUri",
    }
    assert GROUPS["summary"]["isExpanded"] is False  # most gates write no summary


@pytest.mark.parametrize("name", sorted(n for n, item in INPUTS.items() if item.get("required")))
def test_a_required_input_says_nothing_of_being_empty(name: str) -> None:
    help_text = INPUTS[name]["helpMarkDown"]
    assert not re.search(r"\bEmpty\b", help_text), f"{name} is required, yet its help says: {help_text}"
