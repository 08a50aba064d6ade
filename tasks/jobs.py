"""Tasks that drive payload jobs on a facility: submit, wait (bulk polling), collect.

One poll call per cycle for all unfinished jobs, with backoff; progress as an artifact.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from blocks.facility import FacilityBlock
from blocks.jobs import JobOutputs, JobRef, JobSpec, JobStatus


class JobsTimedOut(TimeoutError):
    """Jobs were still unfinished when the wait ran out; they have been cancelled."""


@task(name="submit-jobs", retries=2, retry_delay_seconds=[2, 10])
def submit_jobs(facility: FacilityBlock, specs: Sequence[JobSpec]) -> list[JobRef]:
    """Submit a batch; a retry finds the jobs already submitted instead of doubling them."""
    refs = facility.submit(specs)
    get_run_logger().info("submitted %d job(s) to %s", len(refs), facility.facility_name)
    return refs


def _summary(statuses: Sequence[JobStatus]) -> str:
    counts = Counter(s.state.value for s in statuses)
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))


@task(name="wait-for-jobs")
def wait_for_jobs(
    facility: FacilityBlock,
    refs: Sequence[JobRef],
    min_interval: float = 0.1,
    max_interval: float = 30.0,
    timeout: float | None = None,
) -> list[JobStatus]:
    """Poll until every job is final: one facility call per cycle for all unfinished jobs.

    The interval grows by half each quiet cycle up to `max_interval` and halves when
    something changed. Past `timeout` seconds the unfinished jobs are cancelled and
    JobsTimedOut is raised.
    """
    logger = get_run_logger()
    latest: dict[JobRef, JobStatus] = {}
    total = len(refs)
    progress = cast(
        UUID,
        create_progress_artifact(
            progress=0.0,
            key="jobs-progress",
            description=f"{total} job(s) on {facility.facility_name}",
        ),
    )
    interval, deadline, cycles = min_interval, None, 0
    if timeout is not None:
        deadline = time.monotonic() + timeout
    pending = list(refs)
    while pending:
        statuses = facility.poll(pending)
        cycles += 1
        changed = any(latest.get(s.ref) != s for s in statuses)
        latest.update((s.ref, s) for s in statuses)
        pending = [s.ref for s in statuses if not s.state.is_final]
        if changed:
            done = total - len(pending)
            update_progress_artifact(progress, progress=100.0 * done / max(total, 1))
            logger.info("%s", _summary(list(latest.values())))
            interval = max(min_interval, interval / 2)
        else:
            interval = min(max_interval, interval * 1.5)
        if not pending:
            break
        if deadline is not None and time.monotonic() + interval > deadline:
            facility.cancel(pending)
            raise JobsTimedOut(
                f"{len(pending)} job(s) unfinished after {timeout:g}s and cancelled: "
                + ", ".join(r.name for r in pending[:10])
                + (" ..." if len(pending) > 10 else "")
            )
        time.sleep(interval)
    logger.info(
        "all %d job(s) final after %d poll cycle(s): %s",
        total,
        cycles,
        _summary(list(latest.values())),
    )
    return [latest[ref] for ref in refs]


@task(name="collect-outputs", retries=2, retry_delay_seconds=5)
def collect_outputs(
    facility: FacilityBlock, statuses: Sequence[JobStatus], dest: Path
) -> list[JobOutputs]:
    """Fetch outputs and logs of every final job (failed ones too, for their logs)."""
    outputs = facility.fetch([s.ref for s in statuses if s.state.is_final], dest)
    for item in outputs:
        if item.missing:
            get_run_logger().warning(
                "job %s produced no %s", item.ref.name, ", ".join(item.missing)
            )
    return outputs
