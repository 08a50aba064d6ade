"""The UWS 1.1 resource tree at /uws/jobs: XML as the standard says, JSON for django-uws clients.

Handlers are thin: they authenticate, parse, call `JobService`, and render a document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from core.params import check_text
from core.states import UWSPhase
from core.units import MAX_SECONDS
from gateway.auth import Identity, current_user
from gateway.bodies import json_body, media_type
from gateway.documents import (
    ListFormat,
    availability_xml,
    job_json,
    job_xml,
    parameters_xml,
    results_xml,
    utc_text,
)
from gateway.records import JobRecord, Result
from gateway.service import FINAL, JobService

router = APIRouter(prefix="/uws", tags=["UWS"])


def _body(fields: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """OpenAPI request body of a UWS POST: form fields (extra ones allowed) or JSON."""
    schema = {
        "type": "object",
        "properties": fields,
        "additionalProperties": {"type": "string"},
        **({"required": required} if required else {}),
    }
    return {
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            }
        }
    }


PARAMETERS = _body({"workflow": {"type": "string"}, "PHASE": {"type": "string", "enum": ["RUN"]}})
PHASES = _body(
    {"PHASE": {"type": "string", "enum": ["RUN", "ABORT", "EXECUTING", "COMPLETE", "ERROR"]}},
    ["PHASE"],
)
XML = "application/xml"
JSON = "application/json"
User = Annotated[Identity, Depends(current_user)]
MAX_RESULTS = 1000
MAX_LAST = 2**31 - 1
_SECONDS = re.compile(r"[0-9]{1,10}")
CALLBACK_PHASES = {
    "EXECUTING": UWSPhase.EXECUTING,
    "COMPLETE": UWSPhase.COMPLETED,
    "ERROR": UWSPhase.ERROR,
}


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def _base(request: Request) -> str:
    return str(request.app.state.settings.base_url)


def _wants_json(request: Request) -> bool:
    content = request.headers.get("content-type", "")
    accept = request.headers.get("accept", "")
    return "application/json" in content or ("application/json" in accept and "xml" not in accept)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def _fields(request: Request) -> dict[str, str]:
    """Form fields, or a JSON body (django-uws `parameters: [{key, value}]` or a flat object)."""
    if media_type(request) == "application/json":
        body = await json_body(request)
        if not isinstance(body, dict):
            raise HTTPException(400, "the JSON body must be an object")
        items = body.get("parameters") or []
        if not isinstance(items, list):
            raise HTTPException(400, "parameters must be a list of {key, value} objects")
        fields = {k: _text(v) for k, v in body.items() if k != "parameters" and v is not None}
        for item in items:
            if not isinstance(item, dict) or "key" not in item:
                raise HTTPException(400, "each of parameters must be an object with key and value")
            fields[_text(item["key"])] = _text(item.get("value", ""))
        return fields
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _job(request: Request, job: JobRecord, status: int = 200) -> Response:
    if _wants_json(request):
        return JSONResponse(job_json(job, _base(request)), status_code=status)
    return Response(job_xml(job), status_code=status, media_type=XML)


def _see(request: Request, path: str, job: JobRecord | None = None) -> Response:
    """303 See Other to `path`; django-uws clients also get the job in the body."""
    location = f"{_base(request)}{path}"
    if job is not None and _wants_json(request):
        return JSONResponse(
            job_json(job, _base(request)), status_code=303, headers={"Location": location}
        )
    return Response(status_code=303, headers={"Location": location})


def _phases(values: list[str]) -> list[UWSPhase]:
    try:
        return [UWSPhase(v.upper()) for v in values]
    except ValueError:
        raise HTTPException(
            400, f"PHASE must be among {', '.join(p.value for p in UWSPhase)}"
        ) from None


def _timestamp(text: str, name: str) -> datetime:
    """An ISO 8601 time, in UTC; 400 naming `name` when it is not one or falls outside 1-9999."""
    try:
        value = datetime.fromisoformat(check_text(text, name, 64).replace("Z", "+00:00"))
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise HTTPException(
            400, f"{name} must be an ISO 8601 time between the years 1 and 9999 UTC"
        ) from None


def _one(fields: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in fields.items() if k.upper() == name), None)


@router.get("/availability", summary="VOSI availability")
async def availability() -> Response:
    """Whether the gateway answers (VOSI)."""
    return Response(
        availability_xml(True, "esap-prefect gateway is accepting jobs"), media_type=XML
    )


@router.get("/jobs", summary="List jobs")
@router.get("/jobs/", include_in_schema=False)
async def list_jobs(
    request: Request,
    user: User,
    PHASE: Annotated[list[str] | None, Query(max_length=20)] = None,
    AFTER: str | None = None,
    LAST: Annotated[int | None, Query(ge=0, le=MAX_LAST)] = None,
) -> Response:
    """The caller's jobs, newest first, filtered by PHASE (repeatable), AFTER and LAST."""
    after = _timestamp(AFTER, "AFTER") if AFTER else None
    form: ListFormat = "json" if _wants_json(request) else "xml"
    store = _service(request).store
    jobs = store.listing(form, _base(request), user.user, _phases(PHASE or []), after, LAST)
    headers = {"Vary": "Accept-Encoding"}
    # the same test as Starlette's GZipMiddleware, which compresses the other answers
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = jobs.gzipped, "gzip"
    else:
        body = jobs.body
    return Response(body, media_type=JSON if form == "json" else XML, headers=headers)


@router.post("/jobs", summary="Create a job", status_code=303, openapi_extra=PARAMETERS)
@router.post("/jobs/", include_in_schema=False)
async def create_job(request: Request, user: User) -> Response:
    """A new job from its parameters (`workflow` or `type` names the workflow).

    PHASE=RUN also runs it.
    """
    fields = await _fields(request)
    # the planner's offers point at /uws/jobs?facility=NAME
    for key, value in request.query_params.items():
        fields.setdefault(key, value)
    phase = _one(fields, "PHASE")
    if phase is not None and phase.upper() != "RUN":
        raise HTTPException(400, "PHASE at creation can only be RUN")
    service = _service(request)
    job, _token = await service.create(
        user.user, {k: v for k, v in fields.items() if k.upper() != "PHASE"}
    )
    if phase is not None:
        job = await service.run(job)
    return _see(request, f"/uws/jobs/{job.job_id}", job)


@router.get("/jobs/{job_id}", summary="A job")
@router.get("/jobs/{job_id}/", include_in_schema=False)
async def get_job(
    request: Request,
    job_id: str,
    user: User,
    WAIT: Annotated[float | None, Query(ge=-1, allow_inf_nan=False)] = None,
    PHASE: str | None = None,
) -> Response:
    """The job; with WAIT=seconds (-1: as long as allowed) block while it stays in its phase."""
    service = _service(request)
    job = service.owned(job_id, user.user)
    if WAIT is not None:
        watched = _phases([PHASE])[0] if PHASE else None
        job = await service.wait(job, WAIT, watched)
    return _job(request, job)


@router.delete("/jobs/{job_id}", summary="Delete a job", status_code=303)
@router.delete("/jobs/{job_id}/", include_in_schema=False)
async def delete_job(request: Request, job_id: str, user: User) -> Response:
    """Abort the job if it runs, forget it, and send the client to the job list."""
    service = _service(request)
    await service.delete(service.owned(job_id, user.user))
    return _see(request, "/uws/jobs")


@router.post(
    "/jobs/{job_id}",
    summary="ACTION=DELETE",
    status_code=303,
    openapi_extra=_body({"ACTION": {"type": "string", "enum": ["DELETE"]}}, ["ACTION"]),
)
@router.post("/jobs/{job_id}/", include_in_schema=False)
async def post_job(request: Request, job_id: str, user: User) -> Response:
    """ACTION=DELETE deletes the job (for clients that cannot send DELETE)."""
    service = _service(request)
    job = service.owned(job_id, user.user)
    if (_one(await _fields(request), "ACTION") or "").upper() != "DELETE":
        raise HTTPException(400, "the only action on a job is ACTION=DELETE")
    await service.delete(job)
    return _see(request, "/uws/jobs")


@router.get("/jobs/{job_id}/phase", response_class=PlainTextResponse)
@router.get("/jobs/{job_id}/phase/", include_in_schema=False)
async def get_phase(request: Request, job_id: str, user: User) -> str:
    """The phase, as text."""
    return _service(request).owned(job_id, user.user).phase.value


@router.post("/jobs/{job_id}/phase", status_code=303, openapi_extra=PHASES)
@router.post("/jobs/{job_id}/phase/", include_in_schema=False)
async def post_phase(request: Request, job_id: str) -> Response:
    """PHASE=RUN or ABORT (the owner); EXECUTING, COMPLETE, ERROR (a job's call-back token)."""
    service = _service(request)
    header = request.headers.get("authorization", "")
    if header.startswith("Token "):
        job = service.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        service.callback(job, header.removeprefix("Token ").strip())
        wanted = (_one(await _fields(request), "PHASE") or "").upper()
        if wanted not in CALLBACK_PHASES:
            raise HTTPException(400, f"a call-back sets PHASE to {', '.join(CALLBACK_PHASES)}")
        if job.phase in FINAL:
            raise HTTPException(400, f"job {job_id} is already {job.phase.value}")
        service.report(job, CALLBACK_PHASES[wanted])
    else:
        user = await current_user(request)
        job = service.owned(job_id, user.user)
        wanted = (_one(await _fields(request), "PHASE") or "").upper()
        if wanted == "RUN":
            job = await service.run(job)
        elif wanted == "ABORT":
            job = await service.abort(job)
        else:
            raise HTTPException(400, "PHASE must be RUN or ABORT")
    return _see(request, f"/uws/jobs/{job_id}", service.store.get(job_id))


@router.get("/jobs/{job_id}/executionduration", response_class=PlainTextResponse)
async def get_duration(request: Request, job_id: str, user: User) -> str:
    """Allowed wall time in seconds (0: unlimited)."""
    return str(_service(request).owned(job_id, user.user).execution_duration)


@router.post(
    "/jobs/{job_id}/executionduration",
    status_code=303,
    openapi_extra=_body({"EXECUTIONDURATION": {"type": "string"}}, ["EXECUTIONDURATION"]),
)
async def post_duration(request: Request, job_id: str, user: User) -> Response:
    """EXECUTIONDURATION=seconds, before the job runs."""
    service = _service(request)
    job = service.owned(job_id, user.user)
    text = (_one(await _fields(request), "EXECUTIONDURATION") or "").strip()
    if not _SECONDS.fullmatch(text) or int(text) > MAX_SECONDS:
        raise HTTPException(
            400, f"EXECUTIONDURATION must be a whole number of seconds from 0 to {MAX_SECONDS}"
        )
    service.set_execution_duration(job, int(text))
    return _see(request, f"/uws/jobs/{job_id}")


@router.get("/jobs/{job_id}/destruction", response_class=PlainTextResponse)
async def get_destruction(request: Request, job_id: str, user: User) -> str:
    """When the job will be destroyed (ISO 8601)."""
    return utc_text(_service(request).owned(job_id, user.user).destruction) or ""


@router.post(
    "/jobs/{job_id}/destruction",
    status_code=303,
    openapi_extra=_body({"DESTRUCTION": {"type": "string"}}, ["DESTRUCTION"]),
)
async def post_destruction(request: Request, job_id: str, user: User) -> Response:
    """DESTRUCTION=time."""
    service = _service(request)
    job = service.owned(job_id, user.user)
    service.set_destruction(
        job, _timestamp(_one(await _fields(request), "DESTRUCTION") or "", "DESTRUCTION")
    )
    return _see(request, f"/uws/jobs/{job_id}")


@router.get("/jobs/{job_id}/error", response_class=PlainTextResponse)
async def get_error(request: Request, job_id: str, user: User) -> str:
    """The error message of a failed or aborted job (empty otherwise)."""
    return _service(request).owned(job_id, user.user).error_message or ""


@router.get("/jobs/{job_id}/quote", response_class=PlainTextResponse)
async def get_quote(request: Request, job_id: str, user: User) -> str:
    """No quote is given (empty)."""
    _service(request).owned(job_id, user.user)
    return ""


@router.get("/jobs/{job_id}/owner", response_class=PlainTextResponse)
async def get_owner(request: Request, job_id: str, user: User) -> str:
    """The job's owner."""
    return _service(request).owned(job_id, user.user).owner


@router.get("/jobs/{job_id}/parameters")
async def get_parameters(request: Request, job_id: str, user: User) -> Response:
    """The job's parameters."""
    job = _service(request).owned(job_id, user.user)
    if _wants_json(request):
        return JSONResponse(job_json(job, _base(request))["parameters"])
    return Response(parameters_xml(job), media_type=XML)


@router.post("/jobs/{job_id}/parameters", status_code=303, openapi_extra=PARAMETERS)
async def post_parameters(request: Request, job_id: str, user: User) -> Response:
    """Add or change parameters of a PENDING job."""
    service = _service(request)
    job = await service.set_parameters(service.owned(job_id, user.user), await _fields(request))
    return _see(request, f"/uws/jobs/{job_id}", job)


@router.get("/jobs/{job_id}/results")
@router.get("/jobs/{job_id}/results/", include_in_schema=False)
async def get_results(request: Request, job_id: str, user: User) -> Response:
    """The job's results: archived outputs with size and mime type."""
    job = _service(request).owned(job_id, user.user)
    if _wants_json(request):
        return JSONResponse(job_json(job, _base(request))["results"])
    return Response(results_xml(job), media_type=XML)


@router.post("/jobs/{job_id}/results", status_code=201)
@router.post("/jobs/{job_id}/results/", include_in_schema=False)
async def post_results(request: Request, job_id: str) -> Response:
    """A running job's call-back adds results `[{key, value, size, mimeType}]` (django-uws)."""
    service = _service(request)
    job = service.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    header = request.headers.get("authorization", "")
    service.callback(
        job, header.removeprefix("Token ").strip() if header.startswith("Token ") else None
    )
    body = await json_body(request)
    items = body if isinstance(body, list) else [body]
    if len(items) + len(job.results) > MAX_RESULTS:
        raise HTTPException(400, f"a job has at most {MAX_RESULTS} results")
    try:
        results = [
            Result(
                id=str(i["key"]),
                href=str(i["value"]),
                size=i.get("size"),
                mime_type=i.get("mimeType"),
            )
            for i in items
        ]
    except (ValueError, KeyError, TypeError):
        raise HTTPException(
            400, "results must be [{key, value, size, mimeType}] of printable text"
        ) from None
    service.report(job, job.phase, results)
    updated = service.store.get(job_id) or job
    return JSONResponse(job_json(updated, _base(request)), status_code=201)


@router.get("/jobs/{job_id}/results/{index}", summary="A result file")
async def get_result_file(request: Request, job_id: str, index: int, user: User) -> FileResponse:
    """A result kept in the local archive, served to the job's owner."""
    service = _service(request)
    job = service.owned(job_id, user.user)
    path = service.result_file(job, index)
    return FileResponse(path, media_type=job.results[index].mime_type, filename=path.name)
