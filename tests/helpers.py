"""Helpers shared by the tests.

Polling a real facility until its jobs end, reading task runs, forging credentials.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun

from blocks import DiracFacility, FacilityBlock, JobRef, JobStatus


def wait_final(
    facility: FacilityBlock, refs: Sequence[JobRef], timeout: float = 60, interval: float = 0.05
) -> list[JobStatus]:
    """Poll until every job is final; fail the test with their details after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = facility.poll(refs)
        if all(s.state.is_final for s in statuses):
            return statuses
        time.sleep(interval)
    details = [f"{s.ref.name}: {s.state.value} {s.detail}" for s in facility.poll(refs)]
    raise AssertionError(f"jobs not final after {timeout}s: {details[:5]}")


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
