"""Following Prefect: one loop copies the states of all active jobs' flow runs into the store.

Bulk reads (200 flow runs a call), results read when runs end, time limits and destruction
enforced; one job that cannot be followed is logged and skipped, never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, StateType

from core import crashes
from core.states import FINAL_PHASES, PREFECT_TO_UWS, UWSPhase
from gateway.errors import Unavailable
from gateway.records import JobRecord, JobUpdate, Result
from gateway.redact import public_message
from gateway.service import JobService, ended, now
from tasks.archive import ARCHIVED
from tasks.keys import workflow_key

log = logging.getLogger("esap.gateway")

CHUNK = 200


class PhaseSync:
    """The loop that follows the flow runs behind UWS jobs."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.store, self.client = service.store, service.client

    async def forever(self, interval: float) -> None:
        """Follow flow runs until cancelled; a failing cycle is logged and retried.

        Of several gateways on one database only the one holding its lead follows; the
        others answer from the tables, and one takes over when the leader is gone.
        """
        leading = False
        while True:
            try:
                if await asyncio.to_thread(self.store.leads):
                    if not leading:
                        log.info("this gateway follows Prefect for the shared job table")
                    leading = True
                    await self.once()
                else:
                    leading = False
            except Unavailable as exc:  # an outage: one line a cycle, no traceback
                log.warning("gateway sync cycle skipped: %s", exc)
            except Exception:
                log.exception("gateway sync cycle failed")
            await asyncio.sleep(interval)

    async def once(self) -> None:
        """One bulk read of every active job's flow run; phases, times, errors, results.

        A job becomes final only together with its results, so a waiting client never sees
        a COMPLETED job without them.
        """
        active = self.store.active()
        finished: dict[str, tuple[JobRecord, JobUpdate]] = {}
        for start in range(0, len(active), CHUNK):
            chunk = {j.flow_run_id: j for j in active[start : start + CHUNK] if j.flow_run_id}
            runs = await self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[uuid.UUID(i) for i in chunk])
                ),
                limit=len(chunk),
            )
            for gone in set(chunk) - {str(run.id) for run in runs}:
                finished[gone] = (chunk[gone], _vanished())
            for run in runs:
                job = chunk[str(run.id)]
                with self._isolated(job, "follow its flow run"):
                    update = _following(job, run)
                    if update is None:
                        continue
                    if update.phase in FINAL_PHASES:
                        finished[str(run.id)] = (job, update)
                    else:
                        self.service.change(job, update)
        if finished:
            results = await self._results(finished)
            for run_id, (seen, update) in finished.items():
                with self._isolated(seen, "record its end"):
                    job = self.store.get(seen.job_id) or seen  # call-backs may have added results
                    kept = [r for r in job.results if r.location is None]
                    archived = JobUpdate(results=[*results.get(run_id, []), *kept])
                    await self.service.finish(job, _reported(job, update) | archived)
        await self.expire()

    @contextlib.contextmanager
    def _isolated(self, job: JobRecord, what: str) -> Iterator[None]:
        """One job's failure is logged and skipped; the cycle goes on for everyone else."""
        try:
            yield
        except Exception:
            log.exception("gateway sync: could not %s for job %s", what, job.job_id)

    async def _results(
        self, jobs: dict[str, tuple[JobRecord, JobUpdate]]
    ) -> dict[str, list[Result]]:
        """The archived outputs of finished runs, from their `archived-outputs` artifacts."""
        keys = sorted({workflow_key(job.workflow, ARCHIVED) for job, _ in jobs.values()})
        artifacts = await self.client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(i) for i in jobs]),
            )
        )
        found: dict[str, list[Result]] = {}
        for artifact in artifacts:
            entry = jobs.get(str(artifact.flow_run_id))
            rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            if entry is None or not isinstance(rows, list):
                continue
            with self._isolated(entry[0], "read its results"):
                found[str(artifact.flow_run_id)] = [
                    self._result(entry[0], i, row) for i, row in enumerate(rows)
                ]
        return found

    def _result(self, job: JobRecord, index: int, row: dict[str, Any]) -> Result:
        location = str(row["location"])
        href = location
        if location.startswith("file://"):
            href = f"{self.service.settings.base_url}/uws/jobs/{job.job_id}/results/{index}"
        mime, _ = mimetypes.guess_type(Path(urlparse(location).path).name)
        return Result(
            id=str(row["name"]), href=href, size=row.get("size"), mime_type=mime, location=location
        )

    async def expire(self) -> None:
        """Destroy jobs past their destruction time; abort those past their execution time."""
        moment = now()
        for job in self.store.expired(moment):
            with self._isolated(job, "destroy it"):
                await self.service.delete(job)
        for job in self.store.active():
            limit = job.execution_duration
            if job.phase is not UWSPhase.EXECUTING or not limit or job.start_time is None:
                continue
            with self._isolated(job, "enforce its executionduration"):
                if (moment - job.start_time).total_seconds() > limit:
                    await self.service.abort(
                        job, f"exceeded its executionduration of {job.execution_duration} s"
                    )


def _vanished() -> JobUpdate:
    """A job whose flow run was deleted in Prefect (by an operator): an error."""
    return ended(
        UWSPhase.ERROR,
        error_type="fatal",
        error_message="the Prefect flow run of this job was deleted",
    )


def _reported(job: JobRecord, update: JobUpdate) -> JobUpdate:
    """The end of a job whose payload reported ERROR: ERROR, even if the flow run completed.

    The payload knows best that its work failed; its errorSummary becomes the job's.
    """
    if job.reported_phase is not UWSPhase.ERROR or update.phase is not UWSPhase.COMPLETED:
        return update
    message = job.reported_error or "the job reported ERROR through its call-back"
    return update | JobUpdate(
        phase=UWSPhase.ERROR, error_type="fatal", error_message=public_message(message)
    )


def _following(job: JobRecord, run: FlowRun) -> JobUpdate | None:
    """What changes for `job` given its flow run's state; None when nothing does."""
    if run.state is None:
        return None
    if run.state.type is StateType.CRASHED and crashes.will_be_retried(
        run.labels, str(run.state.id), run.state.timestamp
    ):
        return None  # a worker sends it back and it runs again: not ERROR yet
    phase = PREFECT_TO_UWS.get(run.state.type.value, UWSPhase.UNKNOWN)
    if phase is job.phase:
        return None
    update = JobUpdate(phase=phase)
    if run.start_time is not None and job.start_time is None:
        update |= JobUpdate(start_time=run.start_time.replace(microsecond=0))
    if phase in FINAL_PHASES:
        update |= ended(phase, end_time=(run.end_time or now()).replace(microsecond=0))
    if phase is UWSPhase.ERROR:
        update |= JobUpdate(
            error_type="transient" if run.state.type is StateType.CRASHED else "fatal",
            error_message=public_message(run.state.message or run.state.name or ""),
        )
    return update
