"""Workflows through a real Prefect API: hello world, artifacts, failures, retries, polling."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)
from prefect.runtime import flow_run
from prefect.states import Cancelled

from blocks import JobRef, JobSpec, JobStatus, LocalFacility
from blocks.local_runner import meta_dir
from blocks.registry import load_facility
from core.checksums import digest
from core.errors import UnknownBlockError
from core.states import JobState
from flows.hello_world import HelloWorldResult, hello_world
from flows.pipeline import JobsFailed, _remember_jobs, cancel_facility_jobs, execute, job_prefix
from planner.models import PlanResponse, TaskRequest, TaskType
from tasks.jobs import JobsTimedOut, wait_for_jobs
from tasks.plan import PlanningError
from tests.helpers import task_runs_of

pytestmark = pytest.mark.usefixtures("prefect_api")
EXECUTABLE = TaskRequest(tasktype=TaskType.EXECUTABLE, taskinfo={"executable": "python3"})


def artifacts_of(flow_run_id: str) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return {a.key: a.data for a in found if a.key}


def test_hello_world_echoes_parameters_and_archives_them() -> None:
    result = hello_world(Parameter1=999, Parameter4="hello")
    assert isinstance(result, HelloWorldResult)
    assert result.output == {
        "Parameter1": 999,
        "Parameter2": 2,
        "Parameter3": 33,
        "Parameter4": "hello",
        "Parameter5": "test",
        "Parameter6": "default",
        "type": "batch.submit",
    }
    assert result.job.state == "COMPLETED" and result.facility == "local"
    [archived] = result.archived
    path = Path(archived.location.removeprefix("file://"))
    assert json.loads(path.read_text()) == result.output
    assert digest(path).sha256 == archived.sha256 and digest(path).adler32 == archived.adler32
    assert path.parts[-3:-1] == (result.flow_run_id, f"hello-world-{result.flow_run_id[:8]}-0")

    # each workflow's artifacts under its own keys, so each key's history is one kind of thing
    artifacts = artifacts_of(result.flow_run_id)
    assert artifacts["hello-world-jobs-local"] == 100.0
    assert "Plan for `uri://executable`: YES" in str(artifacts["hello-world-plan"])
    table = artifacts["hello-world-archived-outputs"]
    rows: list[dict[str, str]] = json.loads(table) if isinstance(table, str) else table  # type: ignore[assignment]
    assert rows[0]["sha256"] == archived.sha256 and rows[0]["location"] == archived.location


def test_hello_world_rejects_a_wrong_type_before_running() -> None:
    with pytest.raises(Exception, match="Parameter1"):
        hello_world(Parameter1="not a number")  # type: ignore[call-overload]


def test_planner_refusal_fails_the_flow_with_the_reason_and_no_retry() -> None:
    LocalFacility(max_duration=30).save("short-only", overwrite=True)
    state = hello_world(facility="short-only", return_state=True)
    assert state.is_failed()
    with pytest.raises(PlanningError, match="short-only: needs at least 1m, offers at most 30s"):
        state.result()
    runs = task_runs_of(state.state_details.flow_run_id)
    [plan_run] = [r for r in runs if r.task_key.startswith("plan")]
    assert plan_run.run_count == 1, "a planner NO must not be retried"


def test_unknown_facility_is_named_without_listing_the_others() -> None:
    # the message may reach other users (UWS errorSummary); the names stay for operators
    with pytest.raises(LookupError, match=r"^no facility named 'nowhere'$") as caught:
        hello_world(facility="nowhere")
    assert isinstance(caught.value, UnknownBlockError) and "local" in caught.value.known


@flow
def failing_flow() -> None:
    def specs(_: PlanResponse) -> list[JobSpec]:
        return [
            JobSpec(
                name=f"{job_prefix('failing')}-0",
                executable=sys.executable,
                arguments=["-c", "import sys; sys.exit('the detector is offline')"],
            )
        ]

    execute("failing", EXECUTABLE, specs, None, None).raise_for_failures()


def test_a_failed_job_fails_the_flow_with_its_stderr() -> None:
    with pytest.raises(JobsFailed, match=r"exit code 1.*stderr: the detector is offline"):
        failing_flow()


@flow(retries=1, retry_delay_seconds=0)
def flaky_flow(counter: str, marker: str) -> int:
    def specs(_: PlanResponse) -> list[JobSpec]:
        return [
            JobSpec(
                name=f"{job_prefix('flaky')}-{i}",
                executable=sys.executable,
                arguments=["-c", f"open({counter!r}, 'a').write('x')"],
            )
            for i in range(3)
        ]

    execute("flaky", EXECUTABLE, specs, None, None).raise_for_failures()
    if not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError("lost the connection after the jobs ran")
    return len(Path(counter).read_text())


def test_a_retried_flow_does_not_run_its_jobs_twice(tmp_path: Path) -> None:
    assert flaky_flow(str(tmp_path / "count"), str(tmp_path / "marker")) == 3


class CountingFacility(LocalFacility):
    """The real local facility, counting its poll calls and their sizes."""

    _block_type_name = "Counting Facility (tests)"

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        calls = self.workdir / "poll-calls.txt"  # type: ignore[operator]
        with calls.open("a") as log:
            log.write(f"{len(refs)}\n")
        return super().poll(refs)


@flow
def polling_flow(facility: CountingFacility, count: int) -> list[JobStatus]:
    refs = facility.submit(
        [
            JobSpec(
                name=f"{job_prefix('poll')}-{i}",
                executable=sys.executable,
                arguments=["-c", f"import time; time.sleep({0.05 * (i % 5)})"],
            )
            for i in range(count)
        ]
    )
    return wait_for_jobs(facility, refs)


def test_all_jobs_are_polled_in_one_call_per_cycle(tmp_path: Path) -> None:
    facility = CountingFacility(workdir=tmp_path, max_cores=2)
    statuses = polling_flow(facility, 40)
    assert [s.state.value for s in statuses] == ["COMPLETED"] * 40
    sizes = [int(n) for n in (tmp_path / "poll-calls.txt").read_text().split()]
    assert sizes[0] == 40, "the first cycle asks for every job in one call"
    assert sizes == sorted(sizes, reverse=True), "each cycle asks only for unfinished jobs"
    assert len(sizes) < 40


@flow
def timeout_flow(facility: LocalFacility) -> None:
    refs = facility.submit(
        [JobSpec(name=f"{job_prefix('slow')}-0", executable="sleep", arguments=["60"])]
    )
    wait_for_jobs(facility, refs, timeout=1.0)


def test_waiting_past_the_timeout_cancels_the_jobs(tmp_path: Path) -> None:
    facility = LocalFacility(workdir=tmp_path, kill_grace=1)
    with pytest.raises(JobsTimedOut, match=r"1 job.* unfinished after 1s and cancelled"):
        timeout_flow(facility)
    [job_dir] = [p for p in tmp_path.iterdir() if p.name.startswith("slow-")]
    assert json.loads((meta_dir(job_dir) / "result.json").read_text())["state"] == "CANCELLED"


@flow(name="a-name-unlike-its-workflow")
def remembering() -> str:
    facility = load_facility("local")
    spec = JobSpec(name=f"{job_prefix('drift')}-0", executable="sleep", arguments=["60"])
    _remember_jobs(facility.facility_name, facility.submit([spec]))
    return flow_run.get_id() or ""


def test_the_cancellation_hook_finds_the_jobs_whatever_the_flow_is_called() -> None:
    run_id = remembering()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    cancel_facility_jobs(remembering, run, Cancelled())
    [status] = load_facility("local").poll(
        [JobRef(facility="local", job_id=f"drift-{run_id[:8]}-0", name=f"drift-{run_id[:8]}-0")]
    )
    assert status.state is JobState.CANCELLED
