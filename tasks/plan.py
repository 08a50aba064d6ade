"""The planning task: ask every facility (or the one named) whether it can run a request.

Its answer is recorded as a markdown artifact; a NO stops the flow with the reasons.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from blocks.registry import list_facilities, load_facility
from core.errors import FatalError
from planner.matching import match
from planner.models import PlanResponse, TaskRequest
from tasks.retry import unless_fatal


class PlanningError(FatalError, RuntimeError):
    """No facility can run the request."""

    def __init__(self, request: TaskRequest, answer: PlanResponse) -> None:
        why = "; ".join(f"{name}: {reason}" for name, reason in answer.reasons.items())
        super().__init__(f"no facility can run {request.tasktype.value}: {why}")
        self.answer = answer


def _markdown(request: TaskRequest, answer: PlanResponse) -> str:
    lines = [f"### Plan for `{request.tasktype.value}`: {answer.reponseword}", ""]
    if answer.offers:
        lines += ["| facility | cores | memory | duration |", "|---|---|---|---|"]
        for offer in answer.offers:
            got = offer.resources.model_dump(mode="json")
            lines.append(
                f"| {offer.serviceinfo.facility} | {got['mincores']}-{got['maxcores']} "
                f"| {got['minmemory']}-{got['maxmemory']} "
                f"| {got['minduration']}-{got['maxduration']} |"
            )
    for name, reason in answer.reasons.items():
        lines.append(f"- **{name}** cannot: {reason}")
    return "\n".join(lines)


@task(name="plan", retries=1, retry_delay_seconds=2, retry_condition_fn=unless_fatal)
def plan(request: TaskRequest, facility: str | None = None) -> PlanResponse:
    """Match `request` against the facilities; raise PlanningError when none can run it."""
    candidates = [load_facility(facility)] if facility else list_facilities()
    answer = match(request, [f.capabilities() for f in candidates])
    create_markdown_artifact(
        _markdown(request, answer), key="plan", description="Execution Planner answer"
    )
    if answer.reponseword == "NO":
        raise PlanningError(request, answer)
    return answer
