"""Matching a task request against facility capabilities.

Deterministic and free of I/O: the same request and capabilities give the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.units import format_duration, format_memory
from planner.models import (
    Capabilities,
    Offer,
    OfferedResources,
    PlanResponse,
    ServiceInfo,
    TaskRequest,
)


def _refusal(request: TaskRequest, cap: Capabilities) -> str | None:
    """Why `cap` cannot run `request`, or None when it can."""
    if request.tasktype not in cap.tasktypes:
        runs = ", ".join(sorted(t.value for t in cap.tasktypes)) or "nothing"
        return f"does not run {request.tasktype.value} (runs {runs})"
    res = request.resources
    if res.mincores > cap.maxcores:
        return f"needs at least {res.mincores} cores, offers at most {cap.maxcores}"
    if res.minmemory > cap.maxmemory:
        return (
            f"needs at least {format_memory(res.minmemory)} memory, "
            f"offers at most {format_memory(cap.maxmemory)}"
        )
    if res.minduration > cap.maxduration:
        return (
            f"needs at least {format_duration(res.minduration)}, "
            f"offers at most {format_duration(cap.maxduration)}"
        )
    return None


def _offer(request: TaskRequest, cap: Capabilities) -> Offer:
    res = request.resources

    def upper(asked: int | None, limit: int) -> int:
        return limit if asked is None else min(asked, limit)

    return Offer(
        servicetype=cap.servicetype,
        serviceinfo=ServiceInfo(
            facility=cap.facility, endpoint=cap.endpoint, closerse=cap.closerse
        ),
        resources=OfferedResources(
            mincores=res.mincores,
            maxcores=upper(res.maxcores, cap.maxcores),
            minmemory=res.minmemory,
            maxmemory=upper(res.maxmemory, cap.maxmemory),
            minduration=res.minduration,
            maxduration=upper(res.maxduration, cap.maxduration),
        ),
    )


def match(request: TaskRequest, facilities: Iterable[Capabilities]) -> PlanResponse:
    """Answer `request` with an offer from every facility able to run it, best first.

    Best means: close to the input data (its RSE is among the request's data locations),
    then lowest facility preference, then the most cores, memory and time offered, then
    the facility name. With no able facility the answer is NO and `reasons` says,
    for each facility, why not.
    """
    ranked: list[tuple[tuple[bool, int, int, int, int, str], Offer]] = []
    reasons: dict[str, str] = {}
    for cap in facilities:
        why_not = _refusal(request, cap)
        if why_not is not None:
            reasons[cap.facility] = why_not
            continue
        offer = _offer(request, cap)
        got = offer.resources
        far = cap.closerse not in request.datalocations
        key = (far, cap.preference, -got.maxcores, -got.maxmemory, -got.maxduration, cap.facility)
        ranked.append((key, offer))
    if not ranked:
        if not reasons:
            reasons["*"] = "no facility is configured"
        return PlanResponse(reponseword="NO", reasons=reasons)
    offers = tuple(offer for _, offer in sorted(ranked, key=lambda item: item[0]))
    best = offers[0]
    return PlanResponse(
        reponseword="YES",
        servicetype=best.servicetype,
        serviceinfo=best.serviceinfo,
        resources=best.resources,
        offers=offers,
        reasons=reasons,
    )
