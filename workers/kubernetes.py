"""The `esap-kubernetes` worker: prefect-kubernetes' worker, and cancelling a run deletes its Job.

Prefect's own worker cancels only runs it is still submitting; once a Job exists a run whose
pod never starts (an image that cannot be pulled, no node) would stay Cancelling for ever.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import InfrastructureNotFound, ObjectNotFound
from prefect_kubernetes.worker import KubernetesWorker

from core.settings import env_number
from workers import KUBERNETES_TYPE
from workers.background import every, stop
from workers.crash_retry import CrashRetry

CANCEL_POLL_SECONDS = 5.0
GRACE_VARIABLE = "ESAP_PREFECT_KUBERNETES_CANCEL_GRACE"


def engine_grace() -> timedelta:
    """How long a started run's own engine has to end its pod (and run the flow's hooks).

    Only then is its Job deleted: 60 s, or $ESAP_PREFECT_KUBERNETES_CANCEL_GRACE (0 to 3600).
    """
    return timedelta(seconds=env_number(GRACE_VARIABLE, "60", 0, 3600))


class EsapKubernetesWorker(KubernetesWorker):  # type: ignore[misc]
    """Flow runs as Kubernetes Jobs; the Job of a Cancelling run is deleted, started or not."""

    type = KUBERNETES_TYPE
    _display_name = "Kubernetes (esap-prefect)"
    _description = (
        "esap-prefect: each flow run executes as a Kubernetes Job of the runtime image "
        "(prefect-kubernetes); cancelling a run deletes its Job, even one whose pod never started."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crashes = CrashRetry(self)
        self._watch: asyncio.Task[None] | None = None
        self._grace = engine_grace()

    async def __aenter__(self) -> EsapKubernetesWorker:
        await super().__aenter__()
        self._watch = every(
            CANCEL_POLL_SECONDS, self.end_cancelling_runs, self._logger, "ending cancelled runs"
        )
        self._crashes.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await stop(self._watch)
        await self._crashes.stop()
        await super().__aexit__(*exc_info)

    async def end_cancelling_runs(self) -> int:
        """One query for the pool's Cancelling runs; delete the Jobs of those left so. How many."""
        if self._work_pool is None:
            return 0
        runs = await self.client.read_flow_runs(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool.name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))
            ),
        )
        now = datetime.now(UTC)
        ended = 0
        for run in runs:
            if ":" not in (run.infrastructure_pid or ""):
                continue  # still being submitted: Prefect's own observer cancels it
            since = run.state.timestamp if run.state else now
            if run.start_time is not None and now - since < self._grace:
                continue
            ended += await self._end(run)
        return ended

    async def _end(self, run: FlowRun) -> int:
        logger = self.get_flow_run_logger(run)
        pid = str(run.infrastructure_pid)
        try:
            configuration = await self.job_configuration.resolve_for_flow_run(
                run, client=self.client, work_pool=self._work_pool, worker_name=self.name
            )
        except ObjectNotFound:
            logger.warning("cannot delete Job %s: its deployment is gone", pid)
            return 0
        try:
            await self.kill_infrastructure(pid, configuration, grace_seconds=0)
        except InfrastructureNotFound:
            logger.info("Job %s was already gone", pid)
        if run.start_time is not None:  # its engine died before its hook: cancel its jobs here
            from flows.pipeline import cancel_recorded_jobs  # not for every `prefect` command

            said = await asyncio.to_thread(cancel_recorded_jobs, str(run.id))
            if said is not None:
                logger.info("%s", said)
        said = "" if run.start_time is None else " (its engine did not end it in time)"
        await self._mark_flow_run_as_cancelled(
            run, {"message": f"Cancelled: Kubernetes Job {pid} deleted{said}"}
        )
        logger.info("Kubernetes Job %s deleted, run cancelled", pid)
        return 1
