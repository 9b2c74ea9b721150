from __future__ import annotations

import pytest

from conftest import COMMIT, PIPELINE_ENV
from slsa_provenance.errors import InputError
from slsa_provenance.provenance.context import RunContext


def test_reads_the_agent_variables() -> None:
    ctx = RunContext.from_variables({**PIPELINE_ENV, "TF_BUILD": "True"})
    assert ctx.build_id == "836"
    assert ctx.source_version == COMMIT
    assert ctx.job_name == "Build"
    assert ctx.in_pipeline is True
    assert ctx.server_confirmed is False
    assert ctx.server_url == "https://dev.azure.com/contoso"


def test_job_name_falls_back_to_system_jobname() -> None:
    env = {**PIPELINE_ENV, "SYSTEM_JOBNAME": "__default"}
    del env["SYSTEM_JOBDISPLAYNAME"]
    assert RunContext.from_variables(env).job_name == "__default"
    assert RunContext.from_variables(env).in_pipeline is False


def test_every_missing_variable_is_named() -> None:
    env = {k: v for k, v in PIPELINE_ENV.items() if k not in ("BUILD_BUILDID", "BUILD_SOURCEVERSION")}
    env["SYSTEM_TEAMPROJECT"] = "  "
    with pytest.raises(InputError) as caught:
        RunContext.from_variables(env)
    assert caught.value.message == (
        "missing pipeline variables SYSTEM_TEAMPROJECT, BUILD_BUILDID, BUILD_SOURCEVERSION"
    )
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BUILD_BUILDID", "836; rm -rf", "BUILD_BUILDID is '836; rm -rf', not a number"),
        ("SYSTEM_JOBATTEMPT", "first", "SYSTEM_JOBATTEMPT is 'first', not a number"),
        ("BUILD_SOURCEVERSION", "C1234", "not a git commit id"),
    ],
)
def test_malformed_variables_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        RunContext.from_variables({**PIPELINE_ENV, name: value})


def test_upper_case_commit_is_normalised() -> None:
    ctx = RunContext.from_variables({**PIPELINE_ENV, "BUILD_SOURCEVERSION": COMMIT.upper()})
    assert ctx.source_version == COMMIT
