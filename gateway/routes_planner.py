"""The IVOA Execution Planner over HTTP (seed form): POST a task request, get YES/NO and offers.

Facilities are the ones saved in Prefect; each offer's endpoint is this gateway's UWS job list.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from blocks.registry import list_facilities
from core.errors import UnknownBlockError
from core.params import describe
from gateway.app_state import base_url
from gateway.auth import current_user
from gateway.bodies import json_body
from gateway.errors import InvalidRequest, Unavailable
from planner.matching import match
from planner.models import Capabilities, PlanResponse, ServiceInfo, TaskRequest

router = APIRouter(tags=["Execution Planner"])


def facility_capabilities() -> list[Capabilities]:
    """What every facility saved in Prefect (or the embedded default) can run."""
    return [f.capabilities() for f in list_facilities()]


def _with_endpoints(answer: PlanResponse, base: str) -> PlanResponse:
    def info(service: ServiceInfo) -> ServiceInfo:
        endpoint = f"{base}/uws/jobs?facility={service.facility}"
        return service.model_copy(update={"endpoint": endpoint})

    offers = tuple(o.model_copy(update={"serviceinfo": info(o.serviceinfo)}) for o in answer.offers)
    best = offers[0].serviceinfo if offers else None
    return answer.model_copy(update={"offers": offers, "serviceinfo": best})


@router.post(
    "/planner",
    response_model=PlanResponse,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TaskRequest.model_json_schema()}},
        }
    },
)
async def plan(request: Request) -> PlanResponse:
    """Can this task, with these resources, run here? YES with offers (best first) or NO."""
    await current_user(request)
    body = await json_body(request)
    try:
        task = TaskRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid planner request: {describe(exc)}") from None
    try:
        capabilities = await run_in_threadpool(facility_capabilities)
    except UnknownBlockError as exc:
        raise Unavailable(str(exc)) from None
    answer = match(task, capabilities)
    return _with_endpoints(answer, base_url(request))
