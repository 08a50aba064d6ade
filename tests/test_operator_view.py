"""What operators see in the Prefect UI: task states that say what happened, run names,
artifacts per workflow in human units, block forms without internals, run-form choices.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import StateType

from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
from core.jobs import JobSpec
from core.states import JobState, ended
from core.units import human_duration, human_memory
from deployments.bootstrap import _with_choices
from flows.cta_mc_production import cta_mc_production
from flows.hello_world import hello_world
from flows.pipeline import PipelineResult, execute, job_prefix
from planner.models import PlanResponse, TaskRequest, TaskType
from tests.helpers import task_runs_of

pytestmark = pytest.mark.usefixtures("prefect_api")
EXECUTABLE = TaskRequest(tasktype=TaskType.EXECUTABLE, taskinfo={"executable": "python3"})


@flow(name="one-fails")
def one_fails() -> PipelineResult:
    def specs(_: PlanResponse) -> list[JobSpec]:
        script = "import sys; open('out.txt', 'w').write('ok'); print('from {0}'); sys.exit({1})"
        return [
            JobSpec(name=f"{job_prefix('one-fails')}-{i}", executable=sys.executable,
                    arguments=["-c", script.format(i, code)], outputs=["out.txt"])
            for i, code in enumerate((0, 255))
        ]  # fmt: skip

    return execute("one-fails", EXECUTABLE, specs, None, None)


def test_a_failed_job_fails_its_wait_and_the_others_are_archived_with_its_logs() -> None:
    state = one_fails(return_state=True)
    result = state.result()
    assert [(j.state, j.exit_code, j.detail) for j in result.jobs] == [
        (JobState.COMPLETED, 0, "exited 0"),
        (JobState.FAILED, 255, "exit code 255"),
    ]
    names = sorted(a.name.split("/", 1)[1] for a in result.archived)
    assert names == ["out.txt", "stdout.log"], "the failed job's log, the other's output"
    failed_log = next(a for a in result.archived if a.name.endswith("-1/stdout.log"))
    assert failed_log.size == len("from 1\n")
    runs = {
        r.name.split(" ")[0]: r.state_type for r in task_runs_of(state.state_details.flow_run_id)
    }
    assert runs["wait-for-jobs"] is StateType.FAILED
    assert runs["collect-outputs"] is StateType.COMPLETED
    assert runs["archive-outputs"] is StateType.COMPLETED
    assert result.failures and "exit code 255" in result.failures[0]


def test_exit_codes_and_signals_are_reported_as_they_are() -> None:
    assert ended(255).reason == "exit code 255"
    assert ended(137).reason == "killed by SIGKILL (exit 137)"
    assert ended(-15).reason == "killed by SIGTERM"
    assert ended(0).state is JobState.COMPLETED


def _artifacts(flow_run_id: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in found if a.key}


def test_runs_are_named_and_their_artifacts_keyed_per_workflow() -> None:
    hello = hello_world(Parameter1=41, return_state=True)
    cta = cta_mc_production(particle="proton", runs=2, first_run=1000, showers_per_run=2,
                            return_state=True)  # fmt: skip
    with get_client(sync_client=True) as client:
        names = [
            client.read_flow_run(s.state_details.flow_run_id).name  # type: ignore[arg-type]
            for s in (hello, cta)
        ]
    assert names == ["hello-world-41", "cta-mc-proton-Paranal-1000-1001"]
    keys = [set(_artifacts(s.state_details.flow_run_id)) for s in (hello, cta)]
    assert {"hello-world-plan", "hello-world-jobs-local", "hello-world-archived-outputs"} <= keys[0]
    assert {"cta-mc-production-plan", "cta-mc-production-archived-outputs"} <= keys[1]
    assert not keys[0] & keys[1], "no key is shared by two workflows"
    plan = str(_artifacts(hello.state_details.flow_run_id)["hello-world-plan"])
    assert " GiB |" in plan and "min" in plan and "K |" not in plan
    task_names = {r.name for r in task_runs_of(hello.state_details.flow_run_id)}
    assert {"submit-jobs to local", "wait-for-jobs on local", "archive-outputs to local"} <= (
        task_names
    )


def test_human_units() -> None:
    assert human_memory(25_275_338_752) == "23.5 GiB" and human_memory(2**30) == "1 GiB"
    assert human_memory(512) == "512 B"
    assert human_duration(86_400) == "1 d" and human_duration(34_200) == "9 h 30 min"
    assert human_duration(90) == "1 min 30 s"


@pytest.mark.parametrize("block", [*FACILITY_TYPES, *STORE_TYPES], ids=lambda b: b.__name__)
def test_block_forms_show_no_internals_and_describe_every_field(block: Any) -> None:
    schema = block.model_json_schema()
    assert "kind" not in schema["properties"]
    undescribed = [n for n, p in schema["properties"].items() if not p.get("description")]
    assert undescribed == []
    example = block.get_code_example()
    assert f'{block.__name__}.load("' in example, "the snippet loads the block it documents"


def test_run_forms_offer_the_saved_names_and_an_empty_choice() -> None:
    schema = hello_world.parameters
    chosen = _with_choices(schema, {"facility": (["dock", "local"], "the planner chooses")})
    facility = chosen.properties["facility"]
    assert (facility["type"], facility["enum"], facility["default"]) == (
        "string", ["", "dock", "local"], ""
    )  # fmt: skip
    assert facility["description"] == "Facility to run on; empty: the planner chooses."
    assert "anyOf" not in facility
    assert schema.properties["facility"]["anyOf"][0] == {"type": "string"}, "a copy is changed"
    assert json.dumps(chosen.model_dump())  # still a JSON schema document
