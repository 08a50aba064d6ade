"""The planning task: ask every facility (or the one named) whether it can run a request.

Its answer is recorded as a markdown artifact; a NO stops the flow with the reasons.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks.registry import list_facilities, load_facility
from core.errors import FatalError
from core.units import human_duration, human_memory
from planner.matching import match
from planner.models import PlanResponse, TaskRequest
from tasks.keys import artifact_key
from tasks.retry import unless_fatal


class PlanningError(FatalError, RuntimeError):
    """No facility can run the request."""

    def __init__(self, request: TaskRequest, answer: PlanResponse) -> None:
        why = "; ".join(f"{name}: {reason}" for name, reason in answer.reasons.items())
        super().__init__(f"no facility can run {request.tasktype.value}: {why}")
        self.answer = answer


def _range(low: int, high: int, show: Callable[[int], str]) -> str:
    return show(low) if low == high else f"{show(low)} to {show(high)}"


def _markdown(request: TaskRequest, answer: PlanResponse) -> str:
    lines = [f"### Plan for `{request.tasktype.value}`: {answer.reponseword}", ""]
    if answer.offers:
        lines += ["| facility | cores | memory | wall time |", "|---|---|---|---|"]
        for offer in answer.offers:
            got = offer.resources
            lines.append(
                f"| {offer.serviceinfo.facility} | {_range(got.mincores, got.maxcores, str)} "
                f"| {_range(got.minmemory, got.maxmemory, human_memory)} "
                f"| {_range(got.minduration, got.maxduration, human_duration)} |"
            )
    for name, reason in answer.reasons.items():
        lines.append(f"- **{name}** cannot: {reason}")
    return "\n".join(lines)


@task(
    name="plan",
    task_run_name="plan {request.tasktype.value}",
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=unless_fatal,
)
def plan(request: TaskRequest, facility: str | None = None) -> PlanResponse:
    """Match `request` against the facilities; raise PlanningError when none can run it."""
    candidates = [load_facility(facility)] if facility else list_facilities()
    answer = match(request, [f.capabilities() for f in candidates])
    create_markdown_artifact(
        _markdown(request, answer), key=artifact_key("plan"), description="Execution Planner answer"
    )
    logger = get_run_logger()
    for name, reason in answer.reasons.items():
        logger.info("facility %s cannot run it: %s", name, reason)
    if answer.reponseword == "NO":
        raise PlanningError(request, answer)
    best = answer.offers[0]
    why = "the one asked for" if facility else (
        f"best of {len(answer.offers)} able (rank, close to the data, most resources)"
    )  # fmt: skip
    logger.info(
        "planned %s on facility %s (%s): up to %d cores, %s, %s",
        request.tasktype.value,
        best.serviceinfo.facility,
        why,
        best.resources.maxcores,
        human_memory(best.resources.maxmemory),
        human_duration(best.resources.maxduration),
    )
    return answer
