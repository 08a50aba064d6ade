"""Helpers shared by the tests.

Polling a real facility until its jobs end, reading task runs, forging credentials, and
workers started as operators start them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.types.entrypoint import EntrypointType

from blocks import DiracFacility, FacilityBlock, JobRef, JobStatus
from core.backoff import wait_until
from core.states import JobState


def settle(facility: FacilityBlock, refs: Sequence[JobRef], timeout: float = 60) -> list[JobStatus]:
    """Poll until every job is final or `timeout` passed; the last statuses."""
    return wait_until(
        lambda: facility.poll(refs), lambda s: all(j.state.is_final for j in s), timeout
    )


def wait_final(
    facility: FacilityBlock, refs: Sequence[JobRef], timeout: float = 60
) -> list[JobStatus]:
    """Poll until every job is final; fail the test with their details after `timeout`."""
    statuses = settle(facility, refs, timeout)
    if not all(s.state.is_final for s in statuses):
        details = [f"{s.ref.name}: {s.state.value} {s.detail}" for s in statuses]
        raise AssertionError(f"jobs not final after {timeout}s: {details[:5]}")
    return statuses


def wait_running(facility: FacilityBlock, ref: JobRef, timeout: float = 30) -> None:
    """Poll until the job runs; fail the test after `timeout`."""
    [status] = wait_until(
        lambda: facility.poll([ref]), lambda s: s[0].state is JobState.RUNNING, timeout
    )
    assert status.state is JobState.RUNNING, f"the job never started: {status}"


def task_runs_of(flow_run_id: UUID | None) -> list[TaskRun]:
    """The task runs of one flow run, from the Prefect API."""
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def forged_credentials(facility: DiracFacility, folder: Path) -> DiracFacility:
    """The facility with a credentials file whose token the server will not accept."""
    assert facility.credentials_path is not None
    good = json.loads(facility.credentials_path.read_text())
    forged = folder / "forged.json"
    forged.write_text(
        json.dumps(
            {**good, "access_token": good["access_token"][:-8] + "AAAAAAAA", "refresh_token": None}
        )
    )
    return facility.model_copy(update={"credentials_path": forged})


CLI = str(Path(sys.executable).parent / "esap-prefect")


class PoolWorker:
    """`esap-prefect worker --pool P ...` in its own session, restartable; its log in a file."""

    def __init__(self, api: str, log: Path, *arguments: str, env: dict[str, str] | None = None):
        self.api, self.log, self.arguments = api, log, arguments
        self.env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PoolWorker:
        """Start it and wait until it says it started."""
        started = (self.log.read_text().count("started!") if self.log.exists() else 0) + 1
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [CLI, "worker", *self.arguments],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        text = wait_until(self.log.read_text, lambda text: text.count("started!") >= started, 120)
        assert text.count("started!") >= started, f"the worker did not start:\n{text[-2000:]}"
        return self

    def kill(self) -> None:
        """SIGKILL its whole session, as a host crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM, as an operator's Ctrl-C; then no traceback may be in its log."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)
        assert "Traceback" not in self.log.read_text(), self.log.read_text()[-3000:]


def final_run(run_id: UUID, timeout: float = 120) -> FlowRun:
    """The flow run once its state is final (fails the test if it is not within `timeout`)."""
    with get_client(sync_client=True) as client:
        run = wait_until(
            lambda: client.read_flow_run(run_id),
            lambda r: r.state is not None and r.state.is_final(),
            timeout,
        )
    assert run.state is not None and run.state.is_final(), run.state
    return run


def run_logs(run_id: UUID) -> list[str]:
    """The messages the flow run has logged so far."""
    with get_client(sync_client=True) as client:
        only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        return [line.message for line in client.read_logs(only)]


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie has ended: only its parent has not reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def latest_artifact(key: str) -> str:
    """The data of the newest artifact with this key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            limit=1,
            sort=ArtifactSort.CREATED_DESC,
        )
    return str(artifact.data)


def deploy_flows(
    pool: str, flows: Sequence[Flow[..., Any]], name: str, tags: Sequence[str] = ()
) -> None:
    """Deploy `flows` as `<flow>/<name>` on `pool`, made a fresh `warm` pool unless it exists."""
    from workers.warm import WarmWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=WarmWorker.type,
                    base_job_template=WarmWorker.get_default_base_job_template(),
                )
            )
    for fn in flows:
        deployment = cast(
            RunnerDeployment,
            fn.to_deployment(
                name=name,
                work_pool_name=pool,
                tags=list(tags),
                entrypoint_type=EntrypointType.MODULE_PATH,
            ),
        )
        deployment.apply()


def run_deployed(flow_name: str, name: str, **parameters: Any) -> FlowRun:
    """A flow run of deployment `<flow_name>/<name>`, created and not waited for."""
    return cast(
        FlowRun,
        run_deployment(f"{flow_name}/{name}", parameters=parameters, timeout=0, as_subflow=False),
    )
