"""What UWS requests carry, parsed and checked: fields, phases, times, durations, results.

Every parser raises `InvalidRequest` naming what is wrong; nothing here knows a job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from core.params import ParameterError, check_text, printable
from core.states import UWSPhase
from core.units import MAX_SECONDS
from gateway.bodies import json_body, media_type
from gateway.errors import InvalidRequest
from gateway.records import Result

MAX_RESULTS = 1000
_SECONDS = re.compile(r"[0-9]{1,10}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _unique(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The pairs as a dict; InvalidRequest if a name comes twice, in any case.

    UWS names are case-insensitive: two spellings of one name would leave it to chance
    which of them the job gets.
    """
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in pairs:
        if key.lower() in seen:
            raise InvalidRequest(f"{printable(key)[:64]!r} is given more than once")
        seen.add(key.lower())
        found[key] = value
    return found


async def read_fields(request: Request) -> dict[str, str]:
    """Form fields, or a JSON body (django-uws `parameters: [{key, value}]` or a flat object).

    A name given twice, in any case, is refused.
    """
    if media_type(request) == "application/json":
        body = await json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequest("the JSON body must be an object")
        flat = [(str(k), _text(v)) for k, v in body.items() if k != "parameters" and v is not None]
        return _unique([*flat, *_parameter_pairs(body.get("parameters") or [])])
    form = await request.form()
    return _unique((k, v) for k, v in form.multi_items() if isinstance(v, str))


CHANGEABLE = ("runId", "parameters", "executionDuration", "destruction", "errorSummary")
"""Fields of a django-uws job that PUT or PATCH may set."""
READ_ONLY = ("url", "jobId", "ownerId", "phase", "quote", "creationTime", "startTime",
             "endTime", "results", "reportedPhase", "jobToken")  # fmt: skip
"""Fields shown with a job that a PUT of the job as read gives back, and DRF ignores."""


async def job_changes(request: Request) -> dict[str, Any]:
    """The fields a PUT or PATCH sets (JSON or form), checked; 400 naming a wrong one."""
    if media_type(request) == "application/json":
        body = await json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequest("the JSON body must be an object")
        body = _unique((str(k), v) for k, v in body.items())
    else:
        form = await request.form()
        body = _unique((k, v) for k, v in form.multi_items() if isinstance(v, str))
    fields = {name.lower(): name for name in CHANGEABLE}
    ignored = {name.lower() for name in READ_ONLY}
    changes: dict[str, Any] = {}
    for key, value in body.items():
        name = fields.get(str(key).lower())
        if name is None:
            if str(key).lower() in ignored:
                continue
            raise InvalidRequest(
                f"{printable(str(key))[:64]!r} is not a field of a job that can be changed; "
                f"changeable: {', '.join(CHANGEABLE)}"
            )
        if value is None:
            continue  # null, as a job is read back when a field has no value: left as it is
        if name == "parameters":
            changes[name] = _parameter_list(value)
        elif name == "executionDuration":
            changes[name] = seconds(_text(value), name)
        elif name == "destruction":
            changes[name] = timestamp(_text(value), name)
        else:
            try:
                changes[name] = check_text(_text(value), name)
            except ParameterError as exc:
                raise InvalidRequest(str(exc)) from None
    return changes


def _parameter_pairs(value: Any) -> list[tuple[str, str]]:
    """django-uws's `[{key, value}]` as (name, text) pairs."""
    if not isinstance(value, list) or not all(isinstance(i, dict) and "key" in i for i in value):
        raise InvalidRequest("parameters must be a list of {key, value} objects")
    return [(_text(i["key"]), _text(i.get("value", ""))) for i in value]


def _parameter_list(value: Any) -> dict[str, str]:
    """django-uws's `[{key, value}]` as a dict of text; a name given twice is refused."""
    return _unique(_parameter_pairs(value))


def phases(values: list[str]) -> list[UWSPhase]:
    try:
        return [UWSPhase(v.upper()) for v in values]
    except ValueError:
        raise InvalidRequest(
            f"PHASE must be among {', '.join(p.value for p in UWSPhase)}"
        ) from None


def timestamp(text: str, name: str) -> datetime:
    """An ISO 8601 time, in UTC; 400 naming `name` when it is not one or falls outside 1-9999."""
    try:
        value = datetime.fromisoformat(check_text(text, name, 64).replace("Z", "+00:00"))
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name} must be an ISO 8601 time between the years 1 and 9999 UTC"
        ) from None


def one(fields: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in fields.items() if k.upper() == name), None)


def seconds(text: str | None, name: str) -> int:
    """A whole number of seconds, ASCII digits, at most ten years; InvalidRequest naming `name`."""
    text = (text or "").strip()
    if not _SECONDS.fullmatch(text) or int(text) > MAX_SECONDS:
        raise InvalidRequest(f"{name} must be a whole number of seconds from 0 to {MAX_SECONDS}")
    return int(text)


def results(body: Any, already: int) -> list[Result]:
    """Results a call-back posts (`[{key, value, size, mimeType}]` or one of them)."""
    items = body if isinstance(body, list) else [body]
    if len(items) + already > MAX_RESULTS:
        raise InvalidRequest(f"a job has at most {MAX_RESULTS} results")
    try:
        return [
            Result(
                id=str(i["key"]),
                href=str(i["value"]),
                size=i.get("size"),
                mime_type=i.get("mimeType"),
            )
            for i in items
        ]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest(
            "results must be [{key, value, size, mimeType}] of printable text"
        ) from None
