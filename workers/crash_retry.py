"""Every ESAP worker sends its pool's crashed flow runs back, a bounded number of times.

A retried run keeps its id, so its payload jobs keep their names and are found, not doubled.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.client.schemas.sorting import FlowRunSort
from prefect.logging.loggers import flow_run_logger
from prefect.states import AwaitingRetry, Crashed
from prefect.workers.base import BaseWorker

from core import crashes
from workers.background import every, stop

SECONDS = 5.0
BATCH = 50


async def send_back(
    client: PrefectClient,
    pool: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    moment: datetime | None = None,
    by: str = "a worker",
) -> list[FlowRun]:
    """One pass: the pool's ESAP runs that crashed lately and have retries left, rescheduled.

    The retry count lives in flow-run labels with the id of the Crashed state it counted,
    written before the state, and the run is read again just before: two workers sending the
    same crash back count it once, and the second finds the run no longer Crashed. Prefect's
    rules decide the transition (nothing is forced). A crash with the retries spent stays
    Crashed, labelled final for the gateway; the run's own log says which happened.
    """
    moment = moment or datetime.now(UTC)
    limit = crashes.retries()
    runs = await client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
            tags=FlowRunFilterTags(all_=["esap"]),
            end_time=FlowRunFilterEndTime(after_=moment - crashes.HOLD),
        ),
        sort=FlowRunSort.END_TIME_DESC,
        limit=BATCH,
    )
    sent = []
    for run in runs:
        done = crashes.retried(run.labels)
        crash = str(run.state.id) if run.state is not None else ""
        if crash in (run.labels.get(crashes.CRASH_LABEL), run.labels.get(crashes.FINAL_LABEL)):
            continue  # this crash is being sent back by another worker, or stays
        why = run.state.message if run.state is not None and run.state.message else "crashed"
        if done >= limit:  # the gateway reads the label: its job is ERROR now, not in HOLD
            await client.update_flow_run_labels(run.id, {crashes.FINAL_LABEL: crash})
            flow_run_logger(run).error(
                "flow run %s (%s) crashed and stays Crashed: %d of %d retries after crashes "
                "spent (%s)",
                run.id,
                run.name,
                done,
                limit,
                why,
            )
            continue
        counted: dict[str, bool | int | float | str] = {
            crashes.RETRIED_LABEL: str(done + 1),
            crashes.CRASH_LABEL: crash,
        }
        await client.update_flow_run_labels(run.id, counted)
        if (await client.read_flow_run(run.id)).state_type is not StateType.CRASHED:
            continue  # another worker sent it back first
        answer: OrchestrationResult[Any] = await client.set_flow_run_state(
            run.id,
            AwaitingRetry(
                scheduled_time=moment,
                message=f"sent back after a crash, retry {done + 1} of {limit} ({why})",
            ),
        )
        if answer.status is not SetStateStatus.ACCEPT:  # not counted: the next pass tries again
            uncounted: dict[str, bool | int | float | str] = {
                crashes.RETRIED_LABEL: str(done),
                crashes.CRASH_LABEL: "",
            }
            await client.update_flow_run_labels(run.id, uncounted)
            logger.warning("flow run %s could not be sent back: %s", run.id, answer.details)
            continue
        await _end_orphans(client, run)
        # in the run's own log (its Logs tab) as well as on the worker's console
        flow_run_logger(run).warning(
            "flow run %s (%s) crashed: sent back to pool %s by %s, retry %d of %d (%s)",
            run.id,
            run.name,
            pool,
            by,
            done + 1,
            limit,
            why,
        )
        sent.append(run)
    return sent


async def _end_orphans(client: PrefectClient, run: FlowRun) -> None:
    """The crashed attempt's task runs still Running or Pending: Crashed, as their process is.

    Nobody else ends them (their process is gone), and the run's page would show them
    running for ever beside the retried attempt's own; those are left alone (by run count).
    """
    orphans = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(
                type=TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
            )
        ),
        limit=BATCH,
    )
    for task_run in orphans:
        if task_run.flow_run_run_count <= run.run_count:
            await client.set_task_run_state(
                task_run.id, Crashed(message="its flow process died; the flow run was sent back")
            )


class CrashRetry:
    """The loop of `send_back` beside a worker's own, started and stopped with the worker."""

    def __init__(self, worker: BaseWorker[Any, Any, Any]) -> None:
        self.worker = worker
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check every few seconds until stopped; the worker's client and pool are used."""
        crashes.retries()  # a bad setting stops the worker at start, in one line
        worker = self.worker

        async def cycle() -> None:
            await send_back(
                worker.client, worker._work_pool_name, worker._logger, by=f"worker {worker.name}"
            )

        self._task = every(SECONDS, cycle, worker._logger, "sending crashed flow runs back")

    async def stop(self) -> None:
        """End the loop."""
        await stop(self._task)
        self._task = None
