"""The IVOA ExecutionBroker routes: POST /offersets, GET /offersets/{uuid}, /sessions/{uuid}.

Bodies are JSON (or YAML); answers are JSON documents of the ExecutionBroker schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.app_state import base_url
from gateway.auth import current_user
from gateway.bodies import YAML_TYPES, media_type, parse_json, parse_yaml
from gateway.broker import Broker
from gateway.broker_models import OfferSet, OfferSetRequest, Session, UpdateRequest
from gateway.errors import UnsupportedMedia

router = APIRouter(tags=["ExecutionBroker"])


async def _body(request: Request) -> Any:
    kind = media_type(request)
    if kind.endswith("xml"):
        raise UnsupportedMedia("XML bodies are not supported; send application/json or yaml")
    raw = await request.body()
    return parse_yaml(raw) if kind in YAML_TYPES else parse_json(raw)


def _broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


def _document(model: OfferSet | Session, status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(
        model.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


def _body_schema(model: type[OfferSetRequest] | type[UpdateRequest]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/yaml": {"schema": schema},
            },
        }
    }


@router.post(
    "/offersets",
    response_model=OfferSet,
    response_model_exclude_none=True,
    openapi_extra=_body_schema(OfferSetRequest),
)
async def offerset_post(request: Request) -> JSONResponse:
    """Ask for offers to run an executable (docker or singularity container) with resources."""
    user = await current_user(request)
    body = await _body(request)
    base = base_url(request)
    offers = await _broker(request).offer(user.user, body, base)
    return _document(offers, Location=offers.href)


@router.get("/offersets/{uuid}", response_model=OfferSet, response_model_exclude_none=True)
async def offerset_get(uuid: str, request: Request) -> JSONResponse:
    """An offer set and the current phase of each offer."""
    user = await current_user(request)
    return _document(_broker(request).offerset(user.user, uuid))


@router.get("/sessions/{uuid}", response_model=Session, response_model_exclude_none=True)
async def session_get(uuid: str, request: Request) -> JSONResponse:
    """An execution session; once accepted its phase follows the run."""
    user = await current_user(request)
    return _document(_broker(request).session(user.user, uuid))


@router.post(
    "/sessions/{uuid}",
    response_model=Session,
    response_model_exclude_none=True,
    openapi_extra=_body_schema(UpdateRequest),
)
async def session_post(uuid: str, request: Request) -> JSONResponse:
    """Update a session: phase ACCEPTED starts the run, REJECTED or CANCELLED end it."""
    user = await current_user(request)
    body = await _body(request)
    return _document(await _broker(request).update(user.user, uuid, body))
