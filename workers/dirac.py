"""The `dirac` worker type: every flow run of the pool becomes one DIRAC job through DiracX.

Runs due together are submitted together (at most 20 JDLs a call, through the DIRAC facility's
own submission), and all jobs are followed with one search per cycle. The worker crashes flow
runs whose job failed, stalled or was lost, kills the jobs of cancelled runs (running or not),
and after a restart adopts the jobs its runs already have (job name = flow run id).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import anyio.abc
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import InfrastructureNotFound
from prefect.workers.base import BaseWorker, BaseWorkerResult

from blocks.dirac.facility import DiracFacility
from blocks.registry import list_facilities
from core.errors import FatalError
from core.jobs import JobRef, JobStatus
from core.states import JobState
from workers import DIRAC_TYPE
from workers.background import stop
from workers.crash_retry import CrashRetry
from workers.dirac_job import DiracJobConfiguration, DiracVariables

POLL_SECONDS = float(os.environ.get("ESAP_DIRAC_WORKER_POLL_SECONDS", "5"))
GATHER_SECONDS = 60.0
"""Longest a submission waits for the other runs of the same poll before the bulk call (runs
Prefect refuses leave the worker's submitting set, so this is only a safety net)."""
ADOPT_EVERY = 6
"""Cycles between two looks for this worker's runs that nobody follows (after a restart)."""
STDERR_TAIL = 4000
_BACKEND_MISSING = (
    "no DIRAC facility is saved: add one with `esap-prefect facilities add dirac NAME --url "
    "URL --credentials FILE` (or name one in the pool's `facility` variable)"
)


class DiracWorkerResult(BaseWorkerResult):
    """The DIRAC job id, and 0 unless the job ended before its flow run did."""


@dataclass
class _Job:
    """A flow run's DIRAC job being followed, and the future its final status lands in."""

    flow_run: FlowRun
    facility: DiracFacility
    ref: JobRef
    done: asyncio.Future[JobStatus] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Submission:
    facility: DiracFacility
    flow_run: FlowRun
    configuration: DiracJobConfiguration
    submitted: asyncio.Future[JobRef] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class NoDiracBackend(FatalError):
    """The pool names no usable DIRAC facility; the message says what to save."""


class DiracWorker(BaseWorker[DiracJobConfiguration, DiracVariables, DiracWorkerResult]):
    """Flow runs as DIRAC jobs: a bootstrap in the input sandbox runs them on the node."""

    type = DIRAC_TYPE
    job_configuration = DiracJobConfiguration
    job_configuration_variables = DiracVariables
    _description = (
        "esap-prefect: each flow run executes as one DIRAC job (DiracX), on the grid node a "
        "bootstrap prepares (activation script or Apptainer image). Needs a saved DIRAC facility."
    )
    _display_name = "DIRAC"
    _documentation_url = "https://github.com/DIRACGrid/diracx"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crashes = CrashRetry(self)
        self._jobs: dict[str, _Job] = {}
        self._queue: list[_Submission] = []
        self._flush: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._facilities: dict[str, DiracFacility] = {}
        self._adopted: set[asyncio.Task[None]] = set()
        self._submitted = asyncio.Event()
        self._sent: set[UUID] = set()
        self.cycles = 0

    # -- life ----------------------------------------------------------------------------------

    async def __aenter__(self) -> DiracWorker:
        await super().__aenter__()
        try:
            await self._facility(self._pool_facility())
        except NoDiracBackend as exc:
            self._logger.error("the dirac worker cannot start: %s", exc)
            await super().__aexit__(None, None, None)
            raise SystemExit(1) from None
        self._loop_task = asyncio.create_task(self._follow_loop())
        self._crashes.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await stop(self._loop_task)
        await self._crashes.stop()
        await super().__aexit__(*exc_info)

    def _pool_facility(self) -> str:
        """The facility the pool's template names by default ("" for the only one saved)."""
        template = self._work_pool.base_job_template if self._work_pool else {}
        default = template.get("variables", {}).get("properties", {}).get("facility", {})
        return str(default.get("default") or "")

    async def _facility(self, name: str) -> DiracFacility:
        """The DIRAC facility called `name`, or the only one saved (loaded once)."""
        if name not in self._facilities:
            found = await asyncio.to_thread(list_facilities)
            grids = [f for f in found if isinstance(f, DiracFacility)]
            chosen = [f for f in grids if f.facility_name == name] if name else grids
            if not chosen:
                if name:
                    raise NoDiracBackend(f"no DIRAC facility named {name!r} is saved")
                raise NoDiracBackend(_BACKEND_MISSING)
            if len(chosen) > 1:
                names = ", ".join(sorted(f.facility_name for f in chosen))
                raise NoDiracBackend(
                    f"several DIRAC facilities are saved ({names}): name one in the pool's "
                    "or the deployment's `facility` variable"
                )
            self._facilities[name] = chosen[0]
        return self._facilities[name]

    # -- running a flow run ------------------------------------------------------------------

    async def run(
        self,
        flow_run: FlowRun,
        configuration: DiracJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> DiracWorkerResult:
        """Submit the run's job with the others due now, then wait for its end."""
        facility = configuration.for_facility(await self._facility(configuration.facility))
        submission = _Submission(facility, flow_run, configuration)
        self._queue.append(submission)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._submit_gathered())
        ref = await submission.submitted
        self.get_flow_run_logger(flow_run).info(
            "DIRAC job %s submitted to %s", ref.job_id, facility.endpoint()
        )
        if task_status is not None:
            task_status.started(int(ref.job_id))
        job = self._jobs.setdefault(ref.job_id, _Job(flow_run, facility, ref))
        return await self._conclude(job, await job.done)

    async def _submit_gathered(self) -> None:
        """One bulk submission per facility for every run queued while gathering.

        Runs queued while a submission is on the wire go out in the next round of this same
        task (a run queued then sees this task still running and starts no other).
        """
        loop = asyncio.get_running_loop()
        while self._queue:
            deadline = loop.time() + GATHER_SECONDS
            while loop.time() < deadline:
                # runs stay in Prefect's submitting set a while after their job is sent
                self._sent &= self._submitting_flow_run_ids
                queued = {item.flow_run.id for item in self._queue}
                if queued >= self._submitting_flow_run_ids - self._sent:
                    break  # every run of this poll that Prefect let through is here
                await asyncio.sleep(0.05)
            batch, self._queue = self._queue, []
            groups: dict[tuple[str, str], list[_Submission]] = {}
            for item in batch:
                key = (item.facility.facility_name, item.facility.model_dump_json())
                groups.setdefault(key, []).append(item)
            for items in groups.values():
                await self._submit_group(items)

    async def _submit_group(self, items: list[_Submission]) -> None:
        try:
            specs = [i.configuration.job_spec(i.flow_run) for i in items]
            refs = await asyncio.to_thread(items[0].facility.submit, specs)
        except Exception as exc:
            for item in items:
                item.submitted.set_exception(exc)
            return
        for item, ref in zip(items, refs, strict=True):
            self._jobs.setdefault(ref.job_id, _Job(item.flow_run, item.facility, ref))
            self._sent.add(item.flow_run.id)
            item.submitted.set_result(ref)
        self._submitted.set()

    async def _conclude(self, job: _Job, status: JobStatus) -> DiracWorkerResult:
        """0 when the job ended well or its run is final; else the run is Crashed with why."""
        self._jobs.pop(job.ref.job_id, None)
        self._logger.info("DIRAC job %s finished: %s", job.ref.job_id, status.detail)
        result = DiracWorkerResult(identifier=job.ref.job_id, status_code=0)
        if status.state in (JobState.COMPLETED, JobState.CANCELLED):
            return result
        run = await self.client.read_flow_run(job.flow_run.id)
        if run.state is not None and run.state.is_final():
            return result
        logs = await asyncio.to_thread(job.facility.logs, [job.ref], STDERR_TAIL)
        logger = self.get_flow_run_logger(job.flow_run)
        logger.error("DIRAC job %s ended %s", job.ref.job_id, status.detail)
        tail = logs[0].stderr.strip() if logs else ""
        if tail:
            logger.error("end of the job's stderr:\n%s", tail)
        await self._propose_crashed_state(
            job.flow_run, f"DIRAC job {job.ref.job_id} ended {status.detail}"
        )
        return DiracWorkerResult(identifier=job.ref.job_id, status_code=1)

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: DiracJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """Kill the DIRAC job of a run cancelled before it started."""
        facility = await self._facility(configuration.facility)
        ref = JobRef(facility=facility.facility_name, job_id=infrastructure_pid, name="x")
        statuses = await asyncio.to_thread(facility.cancel, [ref])
        if statuses and statuses[0].detail.startswith("lost"):
            raise InfrastructureNotFound(f"DIRAC job {infrastructure_pid} is not known")
        job = self._jobs.get(infrastructure_pid)
        if job is not None and not job.done.done():
            job.done.set_result(statuses[0].model_copy(update={"state": JobState.CANCELLED}))

    # -- following ------------------------------------------------------------------------------

    async def _follow_loop(self) -> None:
        """A cycle every POLL_SECONDS (from the start of the last), one at once on submission."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                if self.cycles % ADOPT_EVERY == 0:
                    await self._adopt()
                await self._cycle()
            except Exception:
                self._logger.exception("dirac worker: following jobs failed; trying again")
            self.cycles += 1
            with contextlib.suppress(TimeoutError):
                wait = max(0.0, started + POLL_SECONDS - loop.time())
                await asyncio.wait_for(self._submitted.wait(), wait)
            self._submitted.clear()

    async def _cycle(self) -> None:
        """One search per facility for every followed job; cancelled runs' jobs killed."""
        live = {k: j for k, j in self._jobs.items() if not j.done.done()}
        if not live:
            return
        by_facility: dict[str, list[_Job]] = {}
        for job in live.values():
            by_facility.setdefault(job.facility.facility_name, []).append(job)
        for jobs in by_facility.values():
            statuses = await asyncio.to_thread(jobs[0].facility.poll, [j.ref for j in jobs])
            stalled = [
                (job, status)
                for job, status in zip(jobs, statuses, strict=True)
                if not status.state.is_final and status.detail.startswith("Stalled")
            ]
            if stalled:  # killed before their runs are crashed: nothing is left running
                await asyncio.to_thread(jobs[0].facility.cancel, [j.ref for j, _ in stalled])
            for job, status in stalled:
                job.done.set_result(status.model_copy(update={"state": JobState.FAILED}))
            for job, status in zip(jobs, statuses, strict=True):
                if status.state.is_final:
                    job.done.set_result(status)
        await self._cancel_requested(live)

    async def _cancel_requested(self, live: dict[str, _Job]) -> None:
        """Kill the jobs of followed runs that are Cancelling, then mark the runs Cancelled."""
        by_run = {j.flow_run.id: j for j in live.values() if not j.done.done()}
        if not by_run:
            return
        cancelling = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=list(by_run)),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
            )
        )
        for run in cancelling:
            job = by_run[run.id]
            statuses = await asyncio.to_thread(job.facility.cancel, [job.ref])
            await self._mark_flow_run_as_cancelled(
                run, {"message": f"Cancelled: DIRAC job {job.ref.job_id} killed"}
            )
            self.get_flow_run_logger(run).info("DIRAC job %s killed", job.ref.job_id)
            if not job.done.done():
                job.done.set_result(statuses[0].model_copy(update={"state": JobState.CANCELLED}))

    async def _adopt(self) -> None:
        """Follow this worker's unfinished runs that nobody follows (a restart's leftovers)."""
        if self._work_pool is None:
            return
        runs = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(
                        any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
                    )
                )
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool.name])),
        )
        followed = {j.flow_run.id for j in self._jobs.values()}
        mine = [
            r
            for r in runs
            if r.id not in followed
            and r.id not in self._submitting_flow_run_ids
            and (r.labels or {}).get("prefect.worker.name") == self.name
        ]
        if not mine:
            return
        facility = await self._facility(self._pool_facility())
        found = await asyncio.to_thread(facility.find_jobs, [str(r.id) for r in mine])
        for run in mine:
            job_id = found.get(str(run.id))
            if job_id is None:
                continue  # never submitted: Prefect shows it Pending, cancel or rerun it
            ref = JobRef(facility=facility.facility_name, job_id=job_id, name=str(run.id))
            job = self._jobs.setdefault(job_id, _Job(run, facility, ref))
            self.get_flow_run_logger(run).info("following DIRAC job %s again", job_id)
            task = asyncio.create_task(self._conclude_adopted(job))
            self._adopted.add(task)
            task.add_done_callback(self._adopted.discard)

    async def _conclude_adopted(self, job: _Job) -> None:
        with contextlib.suppress(Exception):
            await self._conclude(job, await job.done)
