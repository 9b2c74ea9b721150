"""task.json as the classic editor and the generated YAML schema read it: no traps for either."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import REPO
from pipeline_schema import generated_required, load_manifest, task_manifest

TASK = load_manifest(task_manifest(REPO))
INPUTS = {item["name"]: item for item in TASK["inputs"]}
GROUPS = {group["name"]: group for group in TASK["groups"]}


def visible_rule(item: dict[str, Any]) -> str:
    """The input's own rule, and its group's: the editor shows the input only when both hold."""
    group = GROUPS.get(item.get("groupName", ""), {})
    return " && ".join(rule for rule in (group.get("visibleRule"), item.get("visibleRule")) if rule)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_help_says_required_exactly_when_the_input_is(name: str) -> None:
    item = INPUTS[name]
    first_word = item["helpMarkDown"].split()[0].rstrip(".,")
    assert first_word == ("Required" if item.get("required") else "Optional"), item["helpMarkDown"]


def test_verify_only_inputs_are_not_demanded_of_generate_steps() -> None:
    for item in TASK["inputs"]:
        if "command = verify" in visible_rule(item) and item.get("required"):
            assert item.get("visibleRule", "").startswith("command = verify"), item["name"]
            assert not generated_required(item), item["name"]
    demanded = [item["name"] for item in TASK["inputs"] if generated_required(item)]
    assert demanded == []


def test_generate_only_inputs_hide_for_verify() -> None:
    assert GROUPS["advanced"].get("visibleRule") == "command = generate"
    for name in ("signingMethod", "keyVaultKey", "localKeyFile"):
        assert "command = generate" in visible_rule(INPUTS[name]), name


def test_the_service_connection_sits_with_signing() -> None:
    connection = INPUTS["azureSubscription"]
    assert connection["groupName"] == "signing"
    assert "visibleRule" not in GROUPS["signing"]  # verify reads Key Vault keys through it too
    assert connection["visibleRule"] == "command = verify || signingMethod = keyVault"


def test_the_gate_runs_in_deployment_group_jobs() -> None:
    assert set(TASK["runsOn"]) == {"Agent", "DeploymentGroup"}
