"""Tasks that drive payload jobs on a facility: submit, wait (bulk polling), collect.

One poll call per cycle for all unfinished jobs, with backoff; progress as an artifact.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger

from blocks.facility import FacilityBlock
from core import settings
from core.backoff import Backoff, Outage
from core.errors import FatalError, TransientError
from core.jobs import JobArray, JobOutputs, JobRef, JobSpec, JobStatus
from core.states import JobState
from tasks.keys import artifact_key
from tasks.retry import unless_fatal

PAYLOAD_JOBS = "payload-jobs"
"""Artifact key part of the table of a run's payload jobs (the gateway reads their logs)."""
LISTED = 1000


class JobsTimedOut(TimeoutError):
    """Jobs were still unfinished when the wait ran out; they have been cancelled."""


@task(
    name="submit-jobs",
    task_run_name="submit-jobs to {facility.facility_name}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=unless_fatal,
)
def submit_jobs(facility: FacilityBlock, specs: Sequence[JobSpec] | JobArray) -> list[JobRef]:
    """Submit a batch or a job array; a retry finds jobs already submitted, never doubles them."""
    refs = facility.submit_array(specs) if isinstance(specs, JobArray) else facility.submit(specs)
    create_table_artifact(
        key=artifact_key(PAYLOAD_JOBS),
        table=[{"facility": r.facility, "name": r.name, "job_id": r.job_id} for r in refs[:LISTED]],
        description=f"{len(refs)} payload job(s) on facility {facility.facility_name}"
        + (f" (the first {LISTED} listed)" if len(refs) > LISTED else ""),
    )
    shown = ", ".join(
        r.name if r.job_id == r.name else f"{r.name} (id {r.job_id})" for r in refs[:SHOWN]
    )
    more = f" and {len(refs) - SHOWN} more" if len(refs) > SHOWN else ""
    get_run_logger().info(
        "submitted %d job(s) to facility %s (%s): %s%s",
        len(refs),
        facility.facility_name,
        facility.kind,
        shown,
        more,
    )
    return refs


def _summary(statuses: Iterable[JobStatus]) -> str:
    counts = Counter(s.state.value for s in statuses)
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))


SHOWN = 10


@task(name="wait-for-jobs", task_run_name="wait-for-jobs on {facility.facility_name}")
def wait_for_jobs(
    facility: FacilityBlock,
    refs: Sequence[JobRef],
    min_interval: float = 0.1,
    max_interval: float = 30.0,
    timeout: float | None = None,
    max_reschedules: int = 0,
    outage_timeout: float | None = None,
) -> list[JobStatus]:
    """Poll until every job is final: one facility call per cycle for all unfinished jobs.

    The interval grows by half each quiet cycle up to `max_interval` and halves when
    something changed. A failed job is rescheduled up to `max_reschedules` times. While
    the facility cannot be reached polling goes on, for up to `outage_timeout` seconds
    (`ESAP_PREFECT_OUTAGE_LIMIT`, 600, when None).
    Past `timeout` seconds the unfinished jobs are cancelled and JobsTimedOut is raised.
    """
    logger = get_run_logger()
    outage = Outage(settings.outage_limit() if outage_timeout is None else outage_timeout)
    latest: dict[JobRef, JobStatus] = {}
    reschedules: Counter[JobRef] = Counter()
    total = len(refs)
    progress = cast(
        UUID,
        create_progress_artifact(
            progress=0.0,
            key=artifact_key("jobs", facility.facility_name),
            description=f"{total} job(s) on {facility.facility_name}",
        ),
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = Backoff(min_interval, max_interval)
    interval, cycles = min_interval, 0
    pending = list(refs)
    while pending:
        try:
            statuses = facility.poll(pending)
        except TransientError as exc:
            if outage.away() > outage.limit:
                raise
            logger.warning("%s; polling again in %.1fs", exc, interval)
            statuses = []
        else:
            outage.over()
            cycles += 1
            retry = [
                s.ref
                for s in statuses
                if s.state is JobState.FAILED and reschedules[s.ref] < max_reschedules
            ]
            if retry:
                logger.warning(
                    "rescheduling %d failed job(s): %s",
                    len(retry),
                    ", ".join(r.name for r in retry[:10]),
                )
                reschedules.update(retry)
                try:
                    again = {s.ref: s for s in facility.reschedule(retry)}
                except FatalError as exc:
                    logger.warning("%s; those jobs stay failed", exc)
                    again = {}
                statuses = [again.get(s.ref, s) for s in statuses]
        statuses = [s.model_copy(update={"reschedules": reschedules[s.ref]}) for s in statuses]
        changed = any(latest.get(s.ref) != s for s in statuses)
        latest.update((s.ref, s) for s in statuses)
        pending = [ref for ref in pending if not latest[ref].state.is_final] if latest else pending
        if changed:
            update_progress_artifact(progress, progress=100.0 * (total - len(pending)) / total)
            logger.info("%s", _summary(latest.values()))
        interval = pause.step(changed)
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
        "all %d job(s) final after %d poll cycle(s): %s", total, cycles, _summary(latest.values())
    )
    return _completed([latest[ref] for ref in refs])


class JobsDidNotComplete(RuntimeError):
    """Some jobs ended without completing: wait-for-jobs fails, as they did.

    `statuses` holds every job's final state, so the flow still collects and archives the
    jobs that did complete.
    """

    def __init__(self, statuses: list[JobStatus]) -> None:
        failed = [s for s in statuses if s.state is not JobState.COMPLETED]
        super().__init__(
            f"{len(failed)} of {len(statuses)} job(s) did not complete: "
            + "; ".join(f"{s.ref.name} {s.state.value.lower()} ({s.detail})" for s in failed[:3])
        )
        self.statuses = statuses


def final_statuses(state: State[list[JobStatus]]) -> list[JobStatus]:
    """Every job's final status from wait-for-jobs' state, whether or not all completed.

    Raises:
        Exception: what else made wait-for-jobs fail (a timeout, an outage past its limit).
    """
    result = state.result(raise_on_failure=False)
    if isinstance(result, JobsDidNotComplete):
        return result.statuses
    if isinstance(result, BaseException):
        raise result
    return result


def _completed(statuses: list[JobStatus]) -> list[JobStatus]:
    """The statuses when every job completed; JobsDidNotComplete (each failure logged) if not."""
    logger = get_run_logger()
    failed = [s for s in statuses if s.state is not JobState.COMPLETED]
    for status in failed[:SHOWN]:
        logger.error(
            "job %s (id %s) ended %s: %s",
            status.ref.name,
            status.ref.job_id,
            status.state.value,
            status.detail or "no detail",
        )
    if failed:
        raise JobsDidNotComplete(statuses)
    return statuses


@task(
    name="collect-outputs",
    task_run_name="collect-outputs from {facility.facility_name}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=unless_fatal,
)
def collect_outputs(
    facility: FacilityBlock, statuses: Sequence[JobStatus], dest: Path
) -> list[JobOutputs]:
    """Fetch outputs and logs of every final job (failed ones too, for their logs)."""
    outputs = facility.fetch([s.ref for s in statuses if s.state.is_final], dest)
    logger = get_run_logger()
    for item in outputs:
        logger.info("job %s: %d output file(s) collected", item.ref.name, len(item.files))
        if item.missing:
            logger.warning("job %s produced no %s", item.ref.name, ", ".join(item.missing))
        if item.refused:
            logger.error(
                "job %s: refused outputs (not regular files inside its folder): %s",
                item.ref.name,
                "; ".join(item.refused[:10]),
            )
    return outputs
