"""ESAP's mount (`/esap-api` by default): django-uws under ESAP, and ESAP's batch catalogue.

JSON only, ESAP's paginated lists, DRF's trailing slashes, `PUT`/`PATCH` of a job, 303s with
the job's JSON; the same jobs as the `/uws` tree. Handlers are thin, over `JobService`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core.params import ParameterError, check_text
from gateway.app_state import base_url, job_service
from gateway.auth import current_user, job_token
from gateway.bodies import json_body
from gateway.catalogue import facility_entries, workflow_entries
from gateway.documents import job_json, jobs_document
from gateway.errors import Forbidden, InvalidRequest
from gateway.pages import page_of, paged_items, paged_json
from gateway.records import JobRecord
from gateway.uws_input import job_changes, one, read_fields, results, timestamp

JSON = "application/json"
Handler = Callable[..., Any]


def _mount(request: Request) -> str:
    """The URL of ESAP's mount: job URLs under it are django-uws's."""
    return f"{base_url(request)}{request.app.state.settings.esap_prefix}"


def _job(request: Request, job: JobRecord, status: int = 200) -> JSONResponse:
    return JSONResponse(job_json(job, _mount(request)), status_code=status)


def _see(request: Request, job: JobRecord) -> JSONResponse:
    """303 to the job, its JSON in the body (django-uws's worker client reads it)."""
    answer = job_json(job, _mount(request))
    return JSONResponse(answer, status_code=303, headers={"Location": answer["url"]})


ROUTES: list[tuple[str, list[str], Handler, dict[str, Any]]] = []


def _route(
    path: str, methods: list[str], summary: str, **extra: Any
) -> Callable[[Handler], Handler]:
    """Note a handler of ESAP's mount; `esap_router` adds it under both spellings of `path`."""

    def note(handler: Handler) -> Handler:
        ROUTES.append((path, methods, handler, {"summary": summary, **extra}))
        return handler

    return note


@_route("/uws", ["GET"], "django-uws's API root")
async def api_root(request: Request) -> dict[str, str]:
    """The app's resources, as DRF's router lists them."""
    return {"jobs": f"{_mount(request)}/uws/jobs/"}


@_route("/uws/jobs", ["GET"], "List jobs (ESAP's pages)")
async def list_jobs(request: Request) -> Response:
    """The caller's jobs, newest first, `page` by `page` (`page_size` 50, at most 500)."""
    user = await current_user(request)
    store = job_service(request).store
    page = page_of(request, store.count(user.user))
    entries = store.entries("json", _mount(request), user.user, last=page.size, offset=page.offset)
    body = paged_json(request, base_url(request), page, "UWS jobs", jobs_document(entries, "json"))
    return Response(body, media_type=JSON)


@_route("/uws/jobs", ["POST"], "Create a job", status_code=303)
async def create_job(request: Request) -> Response:
    """A new job from `{runId, parameters: [{key, value}]}` or form fields; PHASE=RUN runs it."""
    user = await current_user(request)
    job = await job_service(request).submit(user.user, await read_fields(request))
    return _see(request, job)


@_route("/uws/jobs/{job_id}", ["GET"], "A job")
async def get_job(request: Request, job_id: str) -> Response:
    """The job, for its owner or its running payload (`Authorization: Token ...`)."""
    return _job(request, await job_service(request).visible(job_id, request))


@_route("/uws/jobs/{job_id}", ["PUT", "PATCH"], "Change a job")
async def change_job(request: Request, job_id: str) -> Response:
    """Owner: runId, and while PENDING parameters and executionDuration; destruction.

    A job token: errorSummary only (django-uws's `fail_job`). PUT replaces the
    parameters, PATCH adds to them.
    """
    service = job_service(request)
    changes = await job_changes(request)
    token = job_token(request)
    if token is not None:
        job = service.called_back(job_id, token)
        if set(changes) - {"errorSummary"}:
            raise Forbidden("a job token may only set errorSummary")
        if "errorSummary" in changes:
            job = service.report_error(job, str(changes["errorSummary"]))
        return _job(request, job)
    job = service.owned(job_id, (await current_user(request)).user)
    job = await service.amend(job, changes, replace=request.method == "PUT")
    return _job(request, job)


@_route("/uws/jobs/{job_id}", ["DELETE"], "Delete a job", status_code=204)
async def delete_job(request: Request, job_id: str) -> Response:
    """Abort the job if it runs, and forget it (204, as DRF answers)."""
    service = job_service(request)
    await service.delete(service.owned(job_id, (await current_user(request)).user))
    return Response(status_code=204)


@_route("/uws/jobs/{job_id}/phase", ["POST"], "Change a job's phase", status_code=303)
async def post_phase(request: Request, job_id: str) -> Response:
    """RUN or ABORT (the owner); EXECUTING, COMPLETE, ERROR (the job's token): a 303."""
    return _see(request, await job_service(request).set_phase(job_id, request))


@_route("/uws/jobs/{job_id}/results", ["POST"], "Add results (call-back)", status_code=201)
async def post_results(request: Request, job_id: str) -> Response:
    """A running job adds results `[{key, value, size, mimeType}]` with its token."""
    service = job_service(request)
    job = service.called_back(job_id, job_token(request))
    body = await json_body(request)
    return _job(request, service.add_results(job, results(body, len(job.results))), 201)


@_route("/uws/jobs/{job_id}/logs", ["GET"], "A job's logs")
async def get_logs(request: Request, job_id: str) -> dict[str, Any]:
    """Flow-run log lines after `since`, the payload jobs' log tails (`job`: one of them)."""
    service = job_service(request)
    job = service.owned(job_id, (await current_user(request)).user)
    since = request.query_params.get("since")
    only = request.query_params.get("job")
    if only is not None and len(only) > 128:
        raise InvalidRequest("job: at most 128 characters")
    return await service.logs(job, timestamp(since, "since") if since else None, only)


@_route("/batch/workflows/search", ["GET", "POST"], "ESAP's workflow catalogue")
async def search_workflows(request: Request) -> dict[str, Any]:
    """Workflows deployed in Prefect whose name, description or tags hold `keyword`."""
    await current_user(request)
    keyword = await _keyword(request)
    entries = await workflow_entries(job_service(request).client, keyword)
    return paged_items(request, base_url(request), entries, "Workflows", lambda e: e)


@_route("/batch/facilities/search", ["GET"], "ESAP's facility catalogue")
async def search_facilities(request: Request) -> dict[str, Any]:
    """Facilities saved as blocks whose name, description, type or task types hold `keyword`."""
    await current_user(request)
    entries = await facility_entries(base_url(request), await _keyword(request))
    return paged_items(request, base_url(request), entries, "Facilities", lambda e: e)


def esap_router(prefix: str) -> APIRouter:
    """The routes of ESAP's mount at `prefix`, with and without DRF's trailing slash."""
    router = APIRouter(prefix=prefix, tags=["ESAP (django-uws)"])
    for path, methods, handler, extra in ROUTES:
        router.add_api_route(f"{path}/", handler, methods=methods, **extra)
        router.add_api_route(path, handler, methods=methods, include_in_schema=False, **extra)
    return router


async def _keyword(request: Request) -> str:
    """`keyword` from the query, or from a POSTed form or JSON object."""
    keyword = request.query_params.get("keyword")
    if keyword is None and request.method == "POST":
        keyword = one({k.upper(): v for k, v in (await read_fields(request)).items()}, "KEYWORD")
    try:
        return check_text(keyword or "", "keyword", 256)
    except ParameterError as exc:
        raise InvalidRequest(str(exc)) from None
