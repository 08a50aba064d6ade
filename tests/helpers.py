"""Helpers shared by the tests.

Polling a real facility until its jobs end, reading task runs, forging credentials.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun

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
