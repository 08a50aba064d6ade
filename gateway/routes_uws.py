"""The UWS 1.1 resource tree at /uws/jobs: XML as the standard says, JSON for django-uws clients.

Handlers are thin: they authenticate, parse, call `JobService`, and render a document.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from gateway.app_state import base_url, job_service
from gateway.auth import Identity, current_user, job_token
from gateway.bodies import json_body
from gateway.documents import (
    ListFormat,
    availability_xml,
    job_json,
    job_xml,
    parameters_xml,
    results_xml,
    utc_text,
)
from gateway.errors import InvalidRequest
from gateway.records import JobRecord
from gateway.store import LIST_LIMIT
from gateway.uws_input import one, phases, read_fields, results, seconds, timestamp

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


def _wants_json(request: Request) -> bool:
    content = request.headers.get("content-type", "")
    accept = request.headers.get("accept", "")
    return "application/json" in content or ("application/json" in accept and "xml" not in accept)


def _job(request: Request, job: JobRecord, status: int = 200) -> Response:
    if _wants_json(request):
        return JSONResponse(job_json(job, base_url(request)), status_code=status)
    return Response(job_xml(job), status_code=status, media_type=XML)


def _see(request: Request, path: str, job: JobRecord | None = None) -> Response:
    """303 See Other to `path`; django-uws clients also get the job in the body."""
    location = f"{base_url(request)}{path}"
    if job is not None and _wants_json(request):
        return JSONResponse(
            job_json(job, base_url(request)), status_code=303, headers={"Location": location}
        )
    return Response(status_code=303, headers={"Location": location})


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
    LAST: Annotated[int | None, Query(ge=0, le=LIST_LIMIT)] = None,
) -> Response:
    """The caller's jobs, newest first, filtered by PHASE (repeatable), AFTER and LAST.

    A list holds the newest 10,000 jobs that match at most (LAST up to that).
    """
    after = timestamp(AFTER, "AFTER") if AFTER else None
    form: ListFormat = "json" if _wants_json(request) else "xml"
    store = job_service(request).store
    jobs = store.listing(form, base_url(request), user.user, phases(PHASE or []), after, LAST)
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
    fields = await read_fields(request)
    # the planner's offers point at /uws/jobs?facility=NAME
    for key, value in request.query_params.items():
        fields.setdefault(key, value)
    job = await job_service(request).submit(user.user, fields)
    return _see(request, f"/uws/jobs/{job.job_id}", job)


@router.get("/jobs/{job_id}", summary="A job")
@router.get("/jobs/{job_id}/", include_in_schema=False)
async def get_job(
    request: Request,
    job_id: str,
    WAIT: Annotated[float | None, Query(ge=-1, allow_inf_nan=False)] = None,
    PHASE: str | None = None,
) -> Response:
    """The job; with WAIT=seconds (-1: as long as allowed) block while it stays in its phase.

    A running job's payload may read it with its token (`Authorization: Token ...`).
    """
    service = job_service(request)
    job = await service.visible(job_id, request)
    if WAIT is not None:
        watched = phases([PHASE])[0] if PHASE else None
        job = await service.wait(job, WAIT, watched)
    return _job(request, job)


@router.delete("/jobs/{job_id}", summary="Delete a job", status_code=303)
@router.delete("/jobs/{job_id}/", include_in_schema=False)
async def delete_job(request: Request, job_id: str, user: User) -> Response:
    """Abort the job if it runs, forget it, and send the client to the job list."""
    service = job_service(request)
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
    service = job_service(request)
    job = service.owned(job_id, user.user)
    if (one(await read_fields(request), "ACTION") or "").upper() != "DELETE":
        raise InvalidRequest("the only action on a job is ACTION=DELETE")
    await service.delete(job)
    return _see(request, "/uws/jobs")


@router.get("/jobs/{job_id}/phase", response_class=PlainTextResponse)
@router.get("/jobs/{job_id}/phase/", include_in_schema=False)
async def get_phase(request: Request, job_id: str, user: User) -> str:
    """The phase, as text."""
    return job_service(request).owned(job_id, user.user).phase.value


@router.post("/jobs/{job_id}/phase", status_code=303, openapi_extra=PHASES)
@router.post("/jobs/{job_id}/phase/", include_in_schema=False)
async def post_phase(request: Request, job_id: str) -> Response:
    """PHASE=RUN or ABORT (the owner); EXECUTING, COMPLETE, ERROR (a job's call-back token)."""
    job = await job_service(request).set_phase(job_id, request)
    return _see(request, f"/uws/jobs/{job_id}", job)


@router.get("/jobs/{job_id}/executionduration", response_class=PlainTextResponse)
async def get_duration(request: Request, job_id: str, user: User) -> str:
    """Allowed wall time in seconds (0: unlimited)."""
    return str(job_service(request).owned(job_id, user.user).execution_duration)


@router.post(
    "/jobs/{job_id}/executionduration",
    status_code=303,
    openapi_extra=_body({"EXECUTIONDURATION": {"type": "string"}}, ["EXECUTIONDURATION"]),
)
async def post_duration(request: Request, job_id: str, user: User) -> Response:
    """EXECUTIONDURATION=seconds, before the job runs."""
    service = job_service(request)
    job = service.owned(job_id, user.user)
    service.set_execution_duration(
        job, seconds(one(await read_fields(request), "EXECUTIONDURATION"), "EXECUTIONDURATION")
    )
    return _see(request, f"/uws/jobs/{job_id}")


@router.get("/jobs/{job_id}/destruction", response_class=PlainTextResponse)
async def get_destruction(request: Request, job_id: str, user: User) -> str:
    """When the job will be destroyed (ISO 8601)."""
    return utc_text(job_service(request).owned(job_id, user.user).destruction) or ""


@router.post(
    "/jobs/{job_id}/destruction",
    status_code=303,
    openapi_extra=_body({"DESTRUCTION": {"type": "string"}}, ["DESTRUCTION"]),
)
async def post_destruction(request: Request, job_id: str, user: User) -> Response:
    """DESTRUCTION=time."""
    service = job_service(request)
    job = service.owned(job_id, user.user)
    service.set_destruction(
        job, timestamp(one(await read_fields(request), "DESTRUCTION") or "", "DESTRUCTION")
    )
    return _see(request, f"/uws/jobs/{job_id}")


@router.get("/jobs/{job_id}/error", response_class=PlainTextResponse)
async def get_error(request: Request, job_id: str, user: User) -> str:
    """The error message of a failed or aborted job (empty otherwise)."""
    return job_service(request).owned(job_id, user.user).error_message or ""


@router.get("/jobs/{job_id}/quote", response_class=PlainTextResponse)
async def get_quote(request: Request, job_id: str, user: User) -> str:
    """No quote is given (empty)."""
    job_service(request).owned(job_id, user.user)
    return ""


@router.get("/jobs/{job_id}/owner", response_class=PlainTextResponse)
async def get_owner(request: Request, job_id: str, user: User) -> str:
    """The job's owner."""
    return job_service(request).owned(job_id, user.user).owner


@router.get("/jobs/{job_id}/parameters")
async def get_parameters(request: Request, job_id: str, user: User) -> Response:
    """The job's parameters."""
    job = job_service(request).owned(job_id, user.user)
    if _wants_json(request):
        return JSONResponse(job_json(job, base_url(request))["parameters"])
    return Response(parameters_xml(job), media_type=XML)


@router.post("/jobs/{job_id}/parameters", status_code=303, openapi_extra=PARAMETERS)
async def post_parameters(request: Request, job_id: str, user: User) -> Response:
    """Add or change parameters of a PENDING job."""
    service = job_service(request)
    job = await service.set_parameters(service.owned(job_id, user.user), await read_fields(request))
    return _see(request, f"/uws/jobs/{job_id}", job)


@router.get("/jobs/{job_id}/results")
@router.get("/jobs/{job_id}/results/", include_in_schema=False)
async def get_results(request: Request, job_id: str, user: User) -> Response:
    """The job's results: archived outputs with size and mime type."""
    job = job_service(request).owned(job_id, user.user)
    if _wants_json(request):
        return JSONResponse(job_json(job, base_url(request))["results"])
    return Response(results_xml(job), media_type=XML)


@router.post("/jobs/{job_id}/results", status_code=201)
@router.post("/jobs/{job_id}/results/", include_in_schema=False)
async def post_results(request: Request, job_id: str) -> Response:
    """A running job's call-back adds results `[{key, value, size, mimeType}]` (django-uws)."""
    service = job_service(request)
    job = service.called_back(job_id, job_token(request))
    job = service.add_results(job, results(await json_body(request), len(job.results)))
    return JSONResponse(job_json(job, base_url(request)), status_code=201)


@router.get("/jobs/{job_id}/logs", summary="A job's logs")
@router.get("/jobs/{job_id}/logs/", include_in_schema=False)
async def get_logs(
    request: Request,
    job_id: str,
    user: User,
    since: str | None = None,
    job: Annotated[str | None, Query(max_length=128)] = None,
) -> JSONResponse:
    """Flow-run log lines after `since` and the tails of the payload jobs' stdout and stderr.

    Poll with `since` set to the last answer's `next_since`; `job` names one payload job.
    """
    service = job_service(request)
    found = service.owned(job_id, user.user)
    return JSONResponse(
        await service.logs(found, timestamp(since, "since") if since else None, job)
    )


@router.get("/jobs/{job_id}/results/{index}", summary="A result file")
async def get_result_file(request: Request, job_id: str, index: int, user: User) -> FileResponse:
    """A result kept in the local archive, served to the job's owner."""
    service = job_service(request)
    job = service.owned(job_id, user.user)
    path = await service.result_file(job, index)
    return FileResponse(path, media_type=job.results[index].mime_type, filename=path.name)
