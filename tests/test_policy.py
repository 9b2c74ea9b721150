"""The gate's policy file: schema errors named by line and field, each rule checked, flags only narrowing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import PIPELINE_ENV, REPO, run_cli
from slsa_provenance.errors import InputError
from slsa_provenance.gate.flow import GateOptions, verify_gate
from slsa_provenance.gate.policy import PolicyBuilder, load_policy
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.statement import ResourceDescriptor, Subject, build_statement, canonical_json
from slsa_provenance.signing import dsse
from slsa_provenance.signing.local import LocalSigner

APP = hashlib.sha256(b"app").hexdigest()
BUILDER = "https://dev.azure.com/contoso/web/web/azure-pipelines.yml@refs/heads/main"
REPOSITORY = "https://dev.azure.com/contoso/web/_git/web"


KEY_VAULT_KEY = "https://contoso-kv.vault.azure.net/keys/slsa-provenance"


def test_the_documented_example_loads() -> None:
    policy = load_policy(REPO / "docs" / "policy.example.yml")
    assert policy.trusted_keys == (KEY_VAULT_KEY,)
    assert policy.builders == (
        PolicyBuilder(BUILDER, 3, (KEY_VAULT_KEY,)),
        PolicyBuilder(BUILDER.replace("refs/heads/main", "refs/tags/v*"), 3, (KEY_VAULT_KEY,)),
    )
    assert policy.repositories == (REPOSITORY,)
    assert policy.refs == ("refs/heads/main", "refs/tags/v*")
    assert policy.require_sbom is True and policy.allow_unconfirmed is False
    assert policy.sha256 == hashlib.sha256((REPO / "docs" / "policy.example.yml").read_bytes()).hexdigest()
    pipeline = (REPO / "docs" / "pipelines" / "azure-pipelines.yml").read_text()
    assert f"keyVaultKey: {KEY_VAULT_KEY}\n" in pipeline, "the example binds the attest stage's key"


def test_the_example_gives_level_3_to_the_attest_stage_key_only(
    tmp_path: Path, key_files: dict[str, tuple[Path, Path]]
) -> None:
    """The example policy, its Key Vault key standing for a local one, against provenance in the
    attest stage's builder id form (the pipeline's own: attest-stage.yml runs inside it)."""
    attest, build_job = key_files["ecdsa-p256"], key_files["ecdsa-p384"]
    text = (REPO / "docs" / "policy.example.yml").read_text().replace(KEY_VAULT_KEY, str(attest[1]))
    policy = write(tmp_path, text.replace("trustedKeys:\n", f"trustedKeys:\n  - {build_job[1]}\n"))
    for private, verdict in [(attest[0], "PASSED"), (build_job[0], "FAILED")]:
        result = gate(tmp_path, LocalSigner.from_file(str(private)), policy)
        assert first_line(result).startswith(f"{verdict}: sha256:{APP}"), first_line(result)
    assert "(5) builder.id: got" in first_line(
        result
    ) and "not among the keys the policy binds" in first_line(result)
    assert gate(tmp_path, LocalSigner.from_file(str(attest[0])), policy).report.level == 3


def write(tmp_path: Path, text: str, name: str = "policy.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        load_policy(path)
    assert caught.value.exit_code == 2
    assert caught.value.remedy == "correct the policy (docs/policy.md describes each field)"
    return caught.value.message


def test_every_schema_problem_is_named_with_its_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "builders:\n"
        "  - id: https://dev.azure.com/x\n"
        "    level: 4\n"
        "  - level: 2\n"
        "refs: refs/heads/main\n"
        "allowUnconfirmd: true\n"
        "requireSbom: 'yes'\n",
    )
    assert problems(path) == (
        f"policy {path} is invalid: "
        "line 1: (policy): 'trustedKeys' is a required property; "
        "line 3: builders[0].level: 4 is greater than the maximum of 3; "
        "line 4: builders[1]: 'id' is a required property; "
        "line 5: refs: 'refs/heads/main' is not of type 'array'; "
        "line 6: allowUnconfirmd: unknown field (known: allowUnconfirmed, buildType, builders, "
        "refs, repositories, requireSbom, trustedKeys); "
        "line 7: requireSbom: 'yes' is not of type 'boolean'"
    )


def test_a_key_given_twice_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "trustedKeys: [a.pub]\nrefs: [refs/heads/main]\nrefs: ['**']\n")
    assert problems(path) == f"policy {path} is invalid: line 3: refs: given twice (first on line 2)"


def test_json_policies_are_read_with_lines_too(tmp_path: Path) -> None:
    path = write(
        tmp_path, '{\n  "trustedKeys": ["a.pub"],\n  "builders": [{"id": "x", "level": 0}]\n}\n', "p.json"
    )
    assert problems(path) == (
        f"policy {path} is invalid: line 3: builders[0].level: 0 is less than the minimum of 1"
    )
    write(tmp_path, '{"trustedKeys": ["a.pub"], "allowUnconfirmed": true}', "p.json")
    assert load_policy(path).allow_unconfirmed is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("trustedKeys: [a.pub\n", "is not YAML or JSON: line 2: expected ',' or ']', but got '<stream end>'"),
        ("- a\n- b\n", "is invalid: line 1: (policy): ['a', 'b'] is not of type 'object'"),
        (
            "trustedKeys: [a.pub]\nrefs:\n  " + "[" * 5000 + "]" * 5000,
            "is nested deeper than 64 levels at line 3",
        ),
        ("trustedKeys: !!python/object:os.system x\n", "could not determine a constructor for the tag"),
    ],
)
def test_unusable_policies(tmp_path: Path, text: str, message: str) -> None:
    assert message in problems(write(tmp_path, text))


# The rules, checked by a real gate against real signed provenance.
@pytest.fixture(scope="module")
def signer(key_files: dict[str, tuple[Path, Path]]) -> LocalSigner:
    return LocalSigner.from_file(str(key_files["ecdsa-p256"][0]))


def provenance(tmp_path: Path, signer: LocalSigner, *, confirmed: bool = True, sbom: bool = True) -> Path:
    context = replace(
        RunContext.from_variables(PIPELINE_ENV),
        pipeline_file="azure-pipelines.yml",
        server_confirmed=confirmed,
    )
    byproducts = [
        ResourceDescriptor(name="sbom", digest={"sha256": "b" * 64}, media_type="application/spdx+json")
    ]
    statement = build_statement(context, [Subject("bin/app", APP)], byproducts=byproducts if sbom else [])
    path = tmp_path / "provenance.intoto.jsonl"
    path.write_bytes(dsse.sign(canonical_json(statement), dsse.PAYLOAD_TYPE, signer).to_json() + b"\n")
    return path


def policy_file(tmp_path: Path, key: Path, **fields: object) -> Path:
    body = {"trustedKeys": [str(key)], **fields}
    return write(tmp_path, json.dumps(body), "policy.json")


def gate(tmp_path: Path, signer: LocalSigner, policy: Path, **options: object):  # type: ignore[no-untyped-def]
    confirmed = bool(options.pop("confirmed", True))
    sbom = bool(options.pop("sbom", True))
    return verify_gate(
        GateOptions(
            provenance=provenance(tmp_path, signer, confirmed=confirmed, sbom=sbom),
            digests=[f"sha256:{APP}"],
            policy=policy,
            **options,  # type: ignore[arg-type]
        )
    )


def first_line(result) -> str:  # type: ignore[no-untyped-def]
    return str(result.report.results[0].line())


def test_a_policy_passes_and_gives_the_builder_s_level(
    tmp_path: Path, signer: LocalSigner, key_files
) -> None:  # type: ignore[no-untyped-def]
    public = key_files["ecdsa-p256"][1]
    policy = policy_file(
        tmp_path,
        public,
        builders=[
            {"id": "https://evil.example/**@refs/heads/main", "level": 3, "keys": [str(public)]},
            {"id": "https://dev.azure.com/contoso/**@refs/heads/*", "level": 3, "keys": [str(public)]},
        ],
        repositories=[f"git+{REPOSITORY}"],
        refs=["refs/tags/v*", "refs/heads/*"],
        requireSbom=True,
    )
    result = gate(tmp_path, signer, policy)
    assert result.report.passed and result.report.level == 3
    assert result.policy is not None and result.policy.path == policy


@pytest.mark.parametrize(
    ("fields", "options", "message"),
    [
        (
            {"builders": [{"id": "https://dev.azure.com/contoso/*@refs/heads/main", "level": 2}]},
            {},
            f"(5) builder.id: got '{BUILDER}', expected one of ['https://dev.azure.com/contoso/*@refs/heads/main']",
        ),
        (
            {"repositories": ["https://dev.azure.com/contoso/other/_git/other"]},
            {},
            f"(6) source: workflow.repository: got '{REPOSITORY}', expected one of",
        ),
        (
            {"refs": ["refs/tags/v*"]},
            {},
            "(7) ref: workflow.ref: got 'refs/heads/main', expected one of ['refs/tags/v*']",
        ),
        (
            {"requireSbom": True},
            {"sbom": False},
            "(10) sbom: no SBOM byproduct is recorded, and the policy requires one",
        ),
        ({}, {"confirmed": False}, "(11) confirmation: serverConfirmed: got false, expected true"),
    ],
)
def test_each_rule_fails_with_its_check(
    tmp_path: Path,
    signer: LocalSigner,
    key_files,
    fields: dict[str, object],
    options: dict[str, object],
    message: str,
) -> None:  # type: ignore[no-untyped-def]
    result = gate(tmp_path, signer, policy_file(tmp_path, key_files["ecdsa-p256"][1], **fields), **options)
    assert not result.report.passed
    assert first_line(result).startswith(f"FAILED: sha256:{APP}: {message}")


def test_unconfirmed_provenance_allowed_by_the_policy_earns_level_1(
    tmp_path: Path, signer: LocalSigner, key_files
) -> None:  # type: ignore[no-untyped-def]
    policy = policy_file(
        tmp_path,
        key_files["ecdsa-p256"][1],
        allowUnconfirmed=True,
        builders=[{"id": "**@**", "level": 3, "keys": [str(key_files["ecdsa-p256"][1])]}],
    )
    result = gate(tmp_path, signer, policy, confirmed=False)
    assert result.report.passed and result.report.level == 1


def test_flags_narrow_the_policy(tmp_path: Path, signer: LocalSigner, key_files) -> None:  # type: ignore[no-untyped-def]
    policy = policy_file(tmp_path, key_files["ecdsa-p256"][1], refs=["refs/heads/*"])
    assert gate(tmp_path, signer, policy).report.passed
    narrowed = gate(tmp_path, signer, policy, source_ref="refs/heads/release")
    assert first_line(narrowed) == (
        f"FAILED: sha256:{APP}: (7) ref: workflow.ref: got 'refs/heads/main', expected 'refs/heads/release'"
    )
    other = gate(tmp_path, signer, policy, builder_id="https://dev.azure.com/contoso/web/web/other.yml@x")
    assert "(5) builder.id: got" in first_line(other)
    assert gate(tmp_path, signer, policy, keys=[str(key_files["ecdsa-p256"][1])]).report.passed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"allow_unconfirmed": True},
            "allowing unconfirmed provenance would widen policy {policy} (allowUnconfirmed is false)",
        ),
        ({"keys": ["{other}"]}, "key {other} is not among the trusted keys of policy {policy}"),
        (
            {"build_type": "https://example.com/other"},
            "build type 'https://example.com/other' contradicts the buildType "
            "'https://docs.cimon.build/provenance/buildtypes/azure/v1' of policy {policy}",
        ),
    ],
)
def test_a_flag_cannot_widen_the_policy(
    tmp_path: Path, signer: LocalSigner, key_files, options: dict[str, object], message: str
) -> None:  # type: ignore[no-untyped-def]
    other = str(key_files["ecdsa-p384"][1])
    policy = policy_file(
        tmp_path,
        key_files["ecdsa-p256"][1],
        buildType="https://docs.cimon.build/provenance/buildtypes/azure/v1",
    )
    options = {k: [other] if k == "keys" else v for k, v in options.items()}
    with pytest.raises(InputError) as caught:
        gate(tmp_path, signer, policy, confirmed=False, **options)
    assert caught.value.message == message.format(policy=policy, other=other)
    assert (
        caught.value.remedy
        == "a flag can only narrow the policy: change the policy, reviewed, or leave the flag out"
    )


def test_the_cli_takes_a_policy(tmp_path: Path, signer: LocalSigner, key_files) -> None:  # type: ignore[no-untyped-def]
    path = provenance(tmp_path, signer)
    policy = policy_file(tmp_path, key_files["ecdsa-p256"][1], refs=["refs/heads/main"])
    ok = run_cli("verify", "--provenance", path, "--policy", policy, "--digest", f"sha256:{APP}")
    assert ok.returncode == 0 and ok.stdout == f"PASSED: sha256:{APP} (subject bin/app)\n", ok.stderr
    widened = run_cli(
        "verify", "--provenance", path, "--policy", policy, "--digest", f"sha256:{APP}", "--allow-unconfirmed"
    )
    assert widened.returncode == 2 and "would widen policy" in widened.stderr and not widened.stdout
    broken = write(tmp_path, "trustedKeys: []\n")
    invalid = run_cli("verify", "--provenance", path, "--policy", broken, "--digest", f"sha256:{APP}")
    assert invalid.returncode == 2
    assert invalid.stderr == (
        f"error: policy {broken} is invalid: line 1: trustedKeys: [] should be non-empty: "
        "correct the policy (docs/policy.md describes each field)\n"
    )
