from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import COMMIT, PIPELINE_ENV, shared_ref
from slsa_provenance.errors import Error
from slsa_provenance.provenance.context import RunContext
from slsa_provenance.provenance.schema import (
    project_schema,
    validate_statement,
    validate_subjects,
    violations,
)
from slsa_provenance.provenance.statement import (
    BUILD_TYPE,
    ResourceDescriptor,
    Subject,
    build_statement,
    canonical_json,
    canonical_statement,
)

SUBJECTS = [Subject("b/app.exe", "b" * 64, 10), Subject("a.zip", "a" * 64, 5)]


def context() -> RunContext:
    return replace(RunContext.from_variables(PIPELINE_ENV), pipeline_file="ci/azure-pipelines.yml")


def test_statement_follows_the_azure_pipelines_build_type() -> None:
    statement = build_statement(context(), SUBJECTS)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [
        {"name": "a.zip", "digest": {"sha256": "a" * 64}},
        {"name": "b/app.exe", "digest": {"sha256": "b" * 64}},
    ]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {
        "workflow": {
            "name": "web-ci",
            "repository": "https://dev.azure.com/contoso/web/_git/web",
            "ref": "refs/heads/main",
            "filePath": "ci/azure-pipelines.yml",
        },
        "job": {"jobName": "Build", "jobId": "5b694ae9-86cc-5057-d72a-30cde2f12d73"},
        "build": {
            "buildRun": "836",
            "buildRunAttempt": "2",
            "buildUrl": "https://dev.azure.com/contoso/web/_build/results?buildId=836",
        },
    }
    assert definition["resolvedDependencies"] == [
        {
            "uri": "git+https://dev.azure.com/contoso/web/_git/web@refs/heads/main",
            "digest": {"gitCommit": COMMIT},
        }
    ]
    internal = definition["internalParameters"]
    assert internal["azurePipelines"]["serverConfirmed"] is False
    assert internal["azurePipelines"]["reason"] == "IndividualCI"
    assert internal["agent"] == {
        "os": "Linux",
        "architecture": "X64",
        "name": "Hosted Agent",
        "selfHosted": "0",
    }
    run = statement["predicate"]["runDetails"]
    assert (
        run["builder"]["id"] == "https://dev.azure.com/contoso/web/web/ci/azure-pipelines.yml@refs/heads/main"
    )
    assert run["metadata"] == {"invocationId": "https://dev.azure.com/contoso/azure/runs/836/attempts/2"}
    assert "byproducts" not in run


def test_builder_id_override_started_on_and_byproducts() -> None:
    sbom = ResourceDescriptor(
        name="_manifest/spdx_2.2/manifest.spdx.json",
        digest={"sha256": "c" * 64},
        media_type="application/spdx+json",
    )
    ctx = replace(context(), started_on="2026-11-23T09:12:40.123Z", server_confirmed=True)
    statement = build_statement(ctx, SUBJECTS, builder_id="https://example.com/builder", byproducts=[sbom])
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == "https://example.com/builder"
    assert run["metadata"]["startedOn"] == "2026-11-23T09:12:40.123Z"
    assert run["byproducts"] == [
        {
            "name": "_manifest/spdx_2.2/manifest.spdx.json",
            "digest": {"sha256": "c" * 64},
            "mediaType": "application/spdx+json",
        }
    ]
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["azurePipelines"][
        "serverConfirmed"
    ]
    validate_statement(statement)


def test_images_are_recorded_so_a_gate_knows_every_other_subject_is_a_file() -> None:
    images = ["myacr.azurecr.io/b", "myacr.azurecr.io/a", "myacr.azurecr.io/b"]
    statement = build_statement(context(), SUBJECTS, images=images)
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["images"] == ["myacr.azurecr.io/a", "myacr.azurecr.io/b"]
    assert (
        "images"
        not in build_statement(context(), SUBJECTS)["predicate"]["buildDefinition"]["internalParameters"]
    )
    validate_statement(statement)


def test_project_and_repository_names_are_url_encoded() -> None:
    ctx = replace(context(), project="My Project", repository_name="web app")
    statement = build_statement(ctx, SUBJECTS)
    assert statement["predicate"]["runDetails"]["builder"]["id"].startswith(
        "https://dev.azure.com/contoso/My%20Project/web%20app/"
    )
    build = statement["predicate"]["buildDefinition"]["externalParameters"]["build"]
    assert build["buildUrl"] == "https://dev.azure.com/contoso/My%20Project/_build/results?buildId=836"


def test_same_inputs_same_bytes_whatever_the_subject_order() -> None:
    first = canonical_json(build_statement(context(), SUBJECTS))
    second = canonical_json(build_statement(context(), list(reversed(SUBJECTS))))
    assert first == second
    assert first.startswith(b'{"_type":"https://in-toto.io/Statement/v1","predicate":')
    assert b" " not in first.replace(b"Hosted Agent", b"")


def test_valid_against_our_schema_and_the_reference_schema() -> None:
    statement = build_statement(context(), SUBJECTS)
    validate_statement(statement)
    reference = json.loads(
        shared_ref("slsa/schemas/intoto-statement-v1-slsa-provenance-v1.schema.json").read_text()
    )
    jsonschema.Draft202012Validator(reference).validate(statement)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda s: s.update(subject=[]), "subject"),
        (lambda s: s["subject"][0]["digest"].update(sha256="ABC"), "subject.0.digest.sha256"),
        (lambda s: s["predicate"]["runDetails"]["builder"].pop("id"), "predicate.runDetails.builder"),
        (lambda s: s["predicate"]["buildDefinition"].update(buildType="x"), "buildDefinition.buildType"),
        (lambda s: s["predicate"]["runDetails"]["metadata"].update(startedOn="yesterday"), "startedOn"),
    ],
)
def test_invalid_statements_are_named_by_json_path(mutate, where) -> None:  # type: ignore[no-untyped-def]
    statement = build_statement(context(), SUBJECTS)
    mutate(statement)
    with pytest.raises(Error, match=rf"statement invalid at .*{where}"):
        validate_statement(statement)


@given(
    names=st.lists(
        st.text(min_size=1, max_size=30).filter(lambda n: "\x00" not in n),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    digest=st.from_regex(r"\A[0-9a-f]{64}\Z"),
)
@settings(max_examples=150, deadline=None)
def test_the_streamed_statement_is_the_canonical_json_of_the_whole(names: list[str], digest: str) -> None:
    subjects = [Subject(name, digest) for name in names]
    whole = canonical_json(build_statement(context(), subjects))
    assert canonical_statement(build_statement(context(), subjects[:1]), subjects) == whole
    assert json.loads(whole)["subject"][0]["name"] == min(names)


def test_validate_subjects_names_the_bad_one() -> None:
    with pytest.raises(Error, match=r"subject\.2\.digest\.sha256"):
        validate_subjects(["a", "b", "c"], ["a" * 64, "b" * 64, "C" * 64])
    with pytest.raises(Error, match=r"subject\.0\.name"):
        validate_subjects([""], ["a" * 64])


@pytest.mark.parametrize(
    "bad",
    [
        "A" + "a" * 63,
        "ab" * 31 + "  ",
        "a" * 62 + "\n" + "a",
        "g" * 64,
        "a" * 63 + "\u0660",
        "a" * 63 + "\uff41",
    ],
    ids=["upper", "spaces", "newline", "not-hex", "arabic-digit", "fullwidth"],
)
def test_validate_subjects_takes_lower_case_hex_only(bad: str) -> None:
    """Whatever the fast check over all digests at once lets through, the schema's pattern would."""
    assert len(bad) == 64
    with pytest.raises(Error, match=r"subject\.1\.digest\.sha256"):
        validate_subjects(["a", "b", "c"], ["0" * 64, bad, "f" * 64])


@pytest.mark.parametrize(
    "names",
    [["plain.bin", "dir/app.exe"], ['say "hi".txt', "back\\slash", "line\nbreak", "del\x7f", "café.zip"]],
    ids=["nothing-to-escape", "escapes"],
)
def test_both_ways_of_writing_subject_names_give_json_dumps_bytes(names: list[str]) -> None:
    subjects = [Subject(name, "ab" * 32) for name in names]
    whole = canonical_json(build_statement(context(), subjects))
    assert canonical_statement(build_statement(context(), subjects[:1]), subjects) == whole


def full_statement() -> dict[str, Any]:
    sbom = ResourceDescriptor(name="_manifest/spdx_2.2/manifest.spdx.json", digest={"sha256": "c" * 64})
    package = ResourceDescriptor(uri="pkg:pypi/requests@2.34.2", digest={"sha1": "d" * 40})
    return build_statement(context(), SUBJECTS, dependencies=[package], byproducts=[sbom])


def nodes(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every JSON path inside value, value's own included."""
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    )
    return [path, *(p for key, child in children for p in nodes(child, (*path, key)))]


def in_toto_accepts(statement: dict[str, Any]) -> bool:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
        json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
    except (ValueError, json_format.ParseError):
        return False
    return True


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["", "x", "a" * 64, "git+https://x"]),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(["uri", "id", "k"]), inner, max_size=2)
    ),
    max_leaves=4,
)


@given(data=st.data())
@settings(max_examples=400, deadline=None)
def test_the_validator_agrees_with_jsonschema_and_in_toto_on_mutated_statements(data: st.DataObject) -> None:
    """The small validator against jsonschema (the reference implementation of the same schema): the same
    verdict and the same first path; and whatever it accepts, in-toto-attestation accepts too."""
    statement = full_statement()
    path = data.draw(st.sampled_from(nodes(statement)[1:]))
    parent = statement
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace" or (action == "delete" and isinstance(parent, list)):
        parent[path[-1]] = data.draw(JSON)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.sampled_from(["extra", "uri", "version", "annotations"]))] = data.draw(JSON)
    reference = sorted(
        jsonschema.Draft202012Validator(project_schema()).iter_errors(copy.deepcopy(statement)),
        key=lambda e: list(e.absolute_path),
    )
    found = sorted(violations(statement, project_schema(), []), key=lambda v: v[0])
    assert bool(found) == bool(reference), (found, [e.message for e in reference])
    if found:
        assert found[0][0] == list(reference[0].absolute_path)
    else:
        assert in_toto_accepts(statement)


def test_the_built_statement_passes_in_toto_attestation_too() -> None:
    assert in_toto_accepts(full_statement())
