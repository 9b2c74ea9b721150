"""Server confirmation of the run context: azure-core's PipelineClient against a local Azure DevOps."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace

import pytest

from conftest import AzureStack, build_body, run_body, shared_ref
from fakes import Fault, json_response
from slsa_provenance.azure.agent import AgentRun, SystemConnection
from slsa_provenance.azure.devops import confirm
from slsa_provenance.azure.transport import HttpSettings
from slsa_provenance.errors import Error
from slsa_provenance.provenance.context import CheckedOutRepository, ProducingRun, RunContext
from slsa_provenance.provenance.statement import Subject, build_statement

pytestmark = pytest.mark.integration


def claimed() -> RunContext:
    return RunContext.from_variables(AgentRun.from_environment(os.environ).variables)


def agent() -> tuple[SystemConnection, HttpSettings]:
    run = AgentRun.from_environment(os.environ)
    return run.system, run.http


def test_the_server_confirms_and_fills_in_what_only_it_knows(azure: AzureStack) -> None:
    confirmed = confirm(claimed(), *agent())
    assert confirmed.server_confirmed is True
    assert confirmed.pipeline_file == "ci/azure-pipelines.yml"  # Definitions - Get process.yamlFilename
    assert confirmed.started_on == "2026-11-23T09:12:40.5843216Z"
    assert confirmed.reason == "individualCI"
    assert confirmed.collection_uri == azure.ado.collection
    paths = [(r.method, r.path, r.query["api-version"]) for r in azure.ado.requests]
    project = azure.env["SYSTEM_TEAMPROJECTID"]
    assert paths == [
        ("GET", f"/contoso/{project}/_apis/build/builds/836", "7.1"),
        ("GET", f"/contoso/{project}/_apis/build/definitions/12", "7.1"),
        ("GET", f"/contoso/{project}/_apis/pipelines/12/runs/836", "7.1"),
    ]
    assert confirmed.repositories == ()
    assert azure.ado.requests[0].headers["x-tfs-fedauthredirect"] == "Suppress"


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("BUILD_SOURCEVERSION", "0" * 40, "commit"),
        ("BUILD_SOURCEBRANCH", "refs/heads/release", "branch"),
        ("BUILD_REPOSITORY_URI", "https://dev.azure.com/evil/web/_git/web", "repository"),
        ("BUILD_REPOSITORY_NAME", "other", "repository name"),
        ("SYSTEM_DEFINITIONID", "13", "definition"),
        ("BUILD_DEFINITIONNAME", "release-pipeline", "definition name"),
        ("SYSTEM_TEAMPROJECT", "other-project", "project"),
        ("BUILD_REASON", "Manual", "reason"),
        ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/evil/", "collection"),
    ],
)
def test_every_overridden_variable_is_caught(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    if variable == "SYSTEM_DEFINITIONID":  # the build still names definition 12
        azure.ado.bodies["build/definitions/13"] = azure.ado.bodies["build/definitions/12"]
    with pytest.raises(Error) as caught:
        confirm(claimed(), *agent())
    assert f"{field}: got " in caught.value.message
    assert f"from {variable}, expected " in caught.value.message
    assert "an earlier step may have overwritten" in caught.value.remedy


def test_a_build_id_pointing_at_another_run_is_caught(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILD_BUILDID", "900")
    azure.ado.bodies["build/builds/900"] = build_body(azure.env, sourceVersion="1" * 40)
    with pytest.raises(Error, match=r"build id: got '900' from BUILD_BUILDID, expected '836'.*commit"):
        confirm(claimed(), *agent())


def test_repository_urls_compare_without_userinfo_or_dot_git(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BUILD_REPOSITORY_URI",
        azure.env["BUILD_REPOSITORY_URI"].replace("https://", "https://contoso@") + ".git",
    )
    assert confirm(claimed(), *agent()).repository_uri == azure.env["BUILD_REPOSITORY_URI"]


def test_a_classic_pipeline_has_no_yaml_path(azure: AzureStack) -> None:
    azure.ado.bodies["build/definitions/12"]["process"] = {"type": 1}
    assert confirm(claimed(), *agent()).pipeline_file == ""


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            Fault("respond", json_response({"message": "TF400813"}, 401)),
            "refused the job's token for build 836 (401: TF400813)",
        ),
        (
            Fault("respond", json_response({"message": "denied"}, 403)),
            "refused the job's token for build 836 (403: denied)",
        ),
        (Fault("respond", json_response({"message": "gone"}, 404)), "has no build 836 (404: gone)"),
        (
            Fault("respond", json_response({"message": "TF400898: An Internal Error Occurred."}, 400)),
            "answered build 836 with 400: TF400898: An Internal Error Occurred.",
        ),
        (
            Fault("respond", (203, {"Content-Type": "text/html"}, b"<html>sign in</html>")),
            "answered build 836 with 203 'text/html', not JSON",
        ),
        (Fault("not-json"), "answered build 836 with malformed JSON"),
        (Fault("reset"), "cannot reach Azure DevOps at"),
    ],
)
def test_faults_end_in_one_sentence(azure: AzureStack, fault: Fault, message: str) -> None:
    azure.ado.inject(r"/builds/836$", fault, times=5)
    with pytest.raises(Error) as caught:
        confirm(claimed(), *agent())
    assert message in caught.value.message


def test_the_server_s_message_is_one_neutralised_bounded_line(azure: AzureStack) -> None:
    said = "TF400898:\r\n##vso[task.complete result=Succeeded]\x1b[31m" + "x" * 1000
    azure.ado.inject(r"/builds/836$", Fault("respond", json_response({"message": said}, 400)))
    with pytest.raises(Error) as caught:
        confirm(claimed(), *agent())
    message = caught.value.message
    assert message.startswith("Azure DevOps answered build 836 with 400: TF400898: ##vso\u200b[task.complete")
    assert "\n" not in message and "\x1b" not in message and "##vso[" not in message
    assert message.endswith("x\u2026") and len(message.split(": ", 1)[1]) < 320


def test_a_429_storm_is_retried_then_fails(azure: AzureStack) -> None:
    azure.ado.inject(
        r"/builds/836$", Fault("respond", json_response({}, 429, {"Retry-After": "0"})), times=10
    )
    with pytest.raises(Error, match="kept answering 429 for build 836 after retrying"):
        confirm(claimed(), *agent())
    assert len([r for r in azure.ado.requests if r.path.endswith("/builds/836")]) == 2


def test_retry_after_is_honoured(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLSA_HTTP_RETRIES", "2")
    azure.ado.inject(r"/builds/836$", Fault("respond", json_response({}, 503, {"Retry-After": "1"})))
    assert confirm(claimed(), *agent()).server_confirmed


def test_a_slow_server_times_out(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLSA_HTTP_TIMEOUT", "0.3")
    azure.ado.inject(r"/builds/836$", Fault("slow", seconds=1.5), times=5)
    with pytest.raises(Error, match="cannot reach Azure DevOps"):
        confirm(claimed(), *agent())


def test_an_incomplete_answer_is_named(azure: AzureStack) -> None:
    del azure.ado.bodies["build/builds/836"]["sourceVersion"]
    with pytest.raises(Error, match="answered without sourceVersion"):
        confirm(claimed(), *agent())


def test_replays_the_recorded_azure_devops_bodies(azure: AzureStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Builds - Get and Definitions - Get bodies recorded from Azure DevOps, and a real Runs - Get."""
    build = json.loads(
        shared_ref("ado-rest/recorded/GET_build_builds_638.json").read_text(encoding="utf-8-sig")
    )
    definition = json.loads(
        shared_ref("ado-rest/recorded/GET_build_definitions_47_yaml.json").read_text(encoding="utf-8-sig")
    )
    build["repository"]["url"] = build["repository"]["url"].replace(
        "https://dev.azure.com/v-anvashist0376/", azure.ado.collection
    )
    run = json.loads(
        shared_ref("ado-rest/examples/real-anonymised/Pipelines_Runs_Get.json").read_text(
            encoding="utf-8-sig"
        )
    )
    azure.ado.bodies = {
        f"build/builds/{build['id']}": build,
        f"build/definitions/{build['definition']['id']}": definition,
        f"pipelines/{build['definition']['id']}/runs/{build['id']}": run,
    }
    variables = {
        "BUILD_BUILDID": str(build["id"]),
        "BUILD_SOURCEVERSION": build["sourceVersion"],
        "BUILD_SOURCEBRANCH": build["sourceBranch"],
        "BUILD_REPOSITORY_URI": build["repository"]["url"],
        "BUILD_REPOSITORY_NAME": build["repository"]["name"],
        "SYSTEM_DEFINITIONID": str(build["definition"]["id"]),
        "BUILD_DEFINITIONNAME": build["definition"]["name"],
        "SYSTEM_TEAMPROJECT": build["project"]["name"],
        "SYSTEM_TEAMPROJECTID": build["project"]["id"],
        "BUILD_REASON": "Manual",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    confirmed = confirm(claimed(), *agent())
    assert confirmed.pipeline_file == definition["process"]["yamlFilename"]
    assert confirmed.build_number == build["buildNumber"]
    assert confirmed.started_on == ""  # the recorded build had not started (startTime null)


def test_every_other_checked_out_repository_is_recorded(azure: AzureStack) -> None:
    tools_id = "8e1f6b0a-0d2c-4c55-9b8e-3f6a1c2d4e5f"
    azure.ado.bodies["pipelines/12/runs/836"] = run_body(
        azure.env,
        tools={
            "repository": {"id": tools_id, "type": "azureReposGit"},
            "refName": "refs/heads/release",
            "version": "1" * 40,
        },
        upstream={
            "repository": {"fullName": "contoso/sdk", "type": "gitHub"},
            "refName": "refs/tags/v2.1.0",
            "version": "2" * 40,
        },
    )
    azure.ado.bodies[f"git/repositories/{tools_id}"] = {
        "id": tools_id,
        "name": "tools",
        "remoteUrl": f"https://contoso@{azure.ado.collection[8:]}web/_git/tools",
    }
    confirmed = confirm(claimed(), *agent())
    assert confirmed.repositories == (
        CheckedOutRepository(
            "tools", f"{azure.ado.collection}web/_git/tools", "refs/heads/release", "1" * 40
        ),
        CheckedOutRepository("upstream", "https://github.com/contoso/sdk", "refs/tags/v2.1.0", "2" * 40),
    )
    statement = build_statement(replace(confirmed, pipeline_file="ci.yml"), [Subject("a", "a" * 64)])
    assert statement["predicate"]["buildDefinition"]["resolvedDependencies"][1:] == [
        {
            "uri": f"git+{azure.ado.collection}web/_git/tools@refs/heads/release",
            "name": "tools",
            "digest": {"gitCommit": "1" * 40},
        },
        {
            "uri": "git+https://github.com/contoso/sdk@refs/tags/v2.1.0",
            "name": "upstream",
            "digest": {"gitCommit": "2" * 40},
        },
    ]


def test_a_self_repository_at_another_commit_is_caught(azure: AzureStack) -> None:
    azure.ado.bodies["pipelines/12/runs/836"]["resources"]["repositories"]["self"]["version"] = "3" * 40  # type: ignore[index]
    with pytest.raises(Error, match="self repository: got .* from BUILD_SOURCEVERSION, expected '3333"):
        confirm(claimed(), *agent())


def test_pipeline_resources_are_resolved_to_their_runs(azure: AzureStack) -> None:
    project = azure.env["SYSTEM_TEAMPROJECTID"]
    azure.ado.bodies["pipelines/12/runs/836"]["resources"]["pipelines"] = {  # type: ignore[index]
        "upstream": {
            "pipeline": {
                "id": 7,
                "name": "sdk-ci",
                "url": f"{azure.ado.collection}{project}/_apis/pipelines/7?revision=2",
            },
            "version": "20261122.3",
        }
    }
    azure.ado.bodies["build/builds?definitions=7&buildNumber=20261122.3"] = {
        "count": 1,
        "value": [{"id": 791, "buildNumber": "20261122.3", "sourceVersion": "4" * 40}],
    }
    confirmed = confirm(claimed(), *agent())
    url = f"{azure.ado.collection}{project}/_build/results?buildId=791"
    assert confirmed.pipelines == (ProducingRun("upstream", url, "4" * 40),)
    statement = build_statement(replace(confirmed, pipeline_file="ci.yml"), [Subject("a", "a" * 64)])
    assert statement["predicate"]["buildDefinition"]["resolvedDependencies"][-1] == {
        "uri": url,
        "name": "pipeline:upstream",
        "digest": {"gitCommit": "4" * 40},
    }
    azure.ado.bodies["build/builds?definitions=7&buildNumber=20261122.3"] = {"count": 0, "value": []}
    with pytest.raises(Error, match="names run 20261122.3 of pipeline 7, and Azure DevOps finds 0 such runs"):
        confirm(claimed(), *agent())


def out_of_range(named: str, asked: str = "7.1") -> Fault:
    """Server's refusal of api-version `asked`, naming `named` as the newest it supports."""
    return Fault(
        "respond",
        json_response(
            {
                "$id": "1",
                "innerException": None,
                "message": f"The requested REST API version of {asked} is out of range for this server. The latest "
                f"REST API version this server supports is {named}.",
                "typeName": "Microsoft.VisualStudio.Services.WebApi.VssVersionOutOfRangeException, "
                "Microsoft.VisualStudio.Services.WebApi",
                "typeKey": "VssVersionOutOfRangeException",
                "errorCode": 0,
                "eventId": 3000,
            },
            400,
        ),
    )


@pytest.mark.parametrize(
    ("newest", "runs"),
    [("7.0", "7.0"), ("6.0", "6.0-preview.1")],
    ids=["server-2022", "server-2020"],
)
def test_a_server_s_newest_version_is_taken_once_and_kept(azure: AzureStack, newest: str, runs: str) -> None:
    """Every endpoint confirm() calls, at the version the server named: Builds - Get, Definitions - Get,
    Runs - Get, Git Repositories - Get (another checked-out repository), Builds - List (a pipeline
    resource)."""
    azure.ado.newest_version = newest
    run = run_body(
        azure.env, tools={"repository": {"id": "tools", "type": "azureReposGit"}, "version": "1" * 40}
    )
    run["resources"]["pipelines"] = {"sdk": {"pipeline": {"id": 7}, "version": "20261122.3"}}  # type: ignore[index]
    azure.ado.bodies["pipelines/12/runs/836"] = run
    azure.ado.bodies["git/repositories/tools"] = {"remoteUrl": f"{azure.ado.collection}web/_git/tools"}
    azure.ado.bodies["build/builds?definitions=7&buildNumber=20261122.3"] = {
        "value": [{"id": 791, "sourceVersion": "4" * 40}]
    }
    confirmed = confirm(claimed(), *agent())
    assert confirmed.server_confirmed and confirmed.repositories and confirmed.pipelines
    asked = [
        (re.sub(r"^/contoso/[^_]*_apis/", "", r.path), r.query["api-version"]) for r in azure.ado.requests
    ]
    assert asked == [
        ("build/builds/836", "7.1"),
        ("build/builds/836", newest),
        ("build/definitions/12", newest),
        ("pipelines/12/runs/836", runs),  # Runs left preview at 7.0; a release 6.0 is refused
        ("git/repositories/tools", newest),
        ("build/builds", newest),
    ]
    assert len(azure.ado.refused) == 1
    confirm(claimed(), *agent())  # the rest of the run: a new client for the same collection
    assert {r.query["api-version"] for r in azure.ado.requests[len(asked) :]} == {newest, runs}
    assert len(azure.ado.refused) == 1


def test_the_version_is_remembered_per_collection_not_per_host(
    azure: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    azure.ado.newest_version = "7.0"
    confirm(claimed(), *agent())
    other = azure.ado.collection.replace("/contoso/", "/fabrikam/")
    monkeypatch.setenv("ENDPOINT_URL_SYSTEMVSSCONNECTION", other)
    monkeypatch.setenv("SYSTEM_COLLECTIONURI", other)
    with pytest.raises(Error, match="has no build 836"):  # the fake serves /contoso/ only
        confirm(claimed(), *agent())
    assert azure.ado.requests[-1].path.startswith("/fabrikam/")
    assert azure.ado.requests[-1].query["api-version"] == "7.1"


@pytest.mark.parametrize("named", ["7.1", "7.2", "8.0", "banana", "7.0-preview", ""])
def test_a_named_version_that_is_not_lower_fails_closed(azure: AzureStack, named: str) -> None:
    azure.ado.inject(r"/builds/836$", out_of_range(named))
    with pytest.raises(Error) as caught:
        confirm(claimed(), *agent())
    assert "refused api-version 7.1 for build 836 as out of range" in caught.value.message
    assert "which is not a version below 7.1" in caught.value.message
    assert len(azure.ado.requests) == 1  # nothing asked with what the answer named


def test_a_second_refusal_is_reported_not_followed(azure: AzureStack) -> None:
    azure.ado.inject(r"/builds/836$", out_of_range("7.0"))
    azure.ado.inject(r"/builds/836$", out_of_range("6.0", asked="7.0"))
    with pytest.raises(Error) as caught:
        confirm(claimed(), *agent())
    assert caught.value.message.startswith(
        "Azure DevOps answered build 836 with 400: The requested REST API version of 7.0 is out of range"
    )
    assert [r.query["api-version"] for r in azure.ado.requests] == ["7.1", "7.0"]
