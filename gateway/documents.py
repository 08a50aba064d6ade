"""UWS 1.1 documents (vo-models' pydantic-xml models) and django-uws JSON for gateway jobs.

Both views come from the same `JobRecord`; the job token never appears in either.
Job-list entries are rendered once per change and kept cut around their base URL, so a list
of thousands of jobs is joined text, not thousands of models (see `ListEntry`).
"""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, NamedTuple
from xml.sax.saxutils import escape

from pydantic_xml import BaseXmlModel, element
from vo_models.uws import (
    ErrorSummary,
    Jobs,
    JobSummary,
    Parameter,
    ResultReference,
    Results,
    ShortJobDescription,
)
from vo_models.uws.models import NSMAP
from vo_models.uws.types import ErrorType, ExecutionPhase
from vo_models.vosi.availability import Availability

from gateway.records import JobRecord


class JobParameters(BaseXmlModel, tag="parameters", ns="uws", nsmap=NSMAP):
    """A job's parameters, whatever their names."""

    parameter: list[Parameter] = element(tag="parameter", default_factory=list)


ESAP_NS = "urn:esap-prefect:uws"


class CallBackInfo(BaseXmlModel, tag="jobInfo", ns="uws", nsmap={**NSMAP, "esap": ESAP_NS}):
    """What the job's own call-backs last reported (django-uws's PHASE words as UWS phases)."""

    reported_phase: str = element(tag="reportedPhase", ns="esap")


class JobDocument(JobSummary[JobParameters]):
    """`uws:job` with the call-back's report in `uws:jobInfo` (which takes any element)."""

    job_info: CallBackInfo | None = element(tag="jobInfo", ns="uws", default=None)  # type: ignore[assignment]


def _parameters(job: JobRecord) -> JobParameters:
    return JobParameters(parameter=[Parameter(id=k, value=v) for k, v in job.parameters.items()])


def _results(job: JobRecord) -> Results:
    return Results(
        results=[
            ResultReference(id=r.id, href=r.href, size=r.size, mime_type=r.mime_type)
            for r in job.results
        ]
    )


def _error(job: JobRecord) -> ErrorSummary | None:
    if job.error_message is None or job.phase.value not in ("ERROR", "ABORTED"):
        return None
    kind = ErrorType.TRANSIENT if job.error_type == "transient" else ErrorType.FATAL
    return ErrorSummary(message=job.error_message, type=kind, has_detail=False)


def job_xml(job: JobRecord) -> bytes:
    """The `uws:job` document."""
    document = JobDocument(
        job_id=job.job_id,
        run_id=job.run_id,
        owner_id=job.owner,
        phase=ExecutionPhase(job.phase.value),
        creation_time=job.creation_time,
        start_time=job.start_time,
        end_time=job.end_time,
        execution_duration=job.execution_duration,
        destruction=job.destruction,
        parameters=_parameters(job),
        results=_results(job),
        error_summary=_error(job),
        job_info=None
        if job.reported_phase is None
        else CallBackInfo(reported_phase=job.reported_phase.value),
    )
    return _xml(document)


def _listed_alone(job: JobRecord, base_url: str) -> bytes:
    reference = ShortJobDescription(
        job_id=job.job_id,
        href=f"{base_url}/uws/jobs/{job.job_id}",
        phase=ExecutionPhase(job.phase.value),
        run_id=job.run_id,
        owner_id=job.owner,
        creation_time=job.creation_time,
    )
    return _xml(Jobs(jobref=[reference]))


def parameters_xml(job: JobRecord) -> bytes:
    """The `uws:parameters` document."""
    return _xml(_parameters(job))


def results_xml(job: JobRecord) -> bytes:
    """The `uws:results` document."""
    return _xml(_results(job))


def availability_xml(available: bool, note: str) -> bytes:
    """A VOSI availability answer."""
    return _xml(Availability(available=available, note=[note]))


def _xml(document: BaseXmlModel) -> bytes:
    xml = document.to_xml(encoding="UTF-8", xml_declaration=True)
    return xml if isinstance(xml, bytes) else xml.encode()


_EMPTY_LIST = _xml(Jobs(jobref=[])).decode()
if not _EMPTY_LIST.endswith("/>"):
    raise RuntimeError(f"unexpected empty uws:jobs document from vo-models: {_EMPTY_LIST}")
JOBS_OPEN = _EMPTY_LIST[:-2] + ">"
JOBS_CLOSE = "</uws:jobs>"

ListFormat = Literal["json", "xml"]
RENDERING = 3
"""Raise it whenever `list_entry` renders differently: kept entries are then rendered anew."""


class ListEntry(NamedTuple):
    """A job's list entries, django-uws JSON and `uws:jobref`, cut where the base URL goes.

    entry = head + base URL + tail
    """

    json_head: str
    json_tail: str
    xml_head: str
    xml_tail: str


def _cut(text: str, mark: str) -> tuple[str, str]:
    head, *tail = text.split(mark)
    if len(tail) != 1:
        raise RuntimeError(f"the base URL mark appears {len(tail)} times in a list entry")
    return head, tail[0]


def list_entry(job: JobRecord) -> ListEntry:
    """The job's entries in both job-list formats, rendered by vo-models and `job_json`."""
    mark = uuid.uuid4().hex
    json_text = json.dumps(job_json(job, mark), ensure_ascii=False, separators=(",", ":"))
    xml_text = _listed_alone(job, mark).decode()
    if not (xml_text.startswith(JOBS_OPEN) and xml_text.endswith(JOBS_CLOSE)):
        raise RuntimeError(f"unexpected uws:jobs document from vo-models: {xml_text[:200]}")
    return ListEntry(
        *_cut(json_text, mark), *_cut(xml_text[len(JOBS_OPEN) : -len(JOBS_CLOSE)], mark)
    )


def base_text(base_url: str, form: ListFormat) -> str:
    """The base URL as it appears inside a JSON string or an XML attribute."""
    if form == "json":
        return json.dumps(base_url, ensure_ascii=False)[1:-1]
    return escape(base_url, {'"': "&quot;"})


def jobs_document(entries: list[str], form: ListFormat) -> bytes:
    """The job list from its entries: a JSON array or a `uws:jobs` document."""
    if form == "json":
        return ("[" + ",".join(entries) + "]").encode()
    return (JOBS_OPEN + "".join(entries) + JOBS_CLOSE).encode()


@dataclass(frozen=True)
class JobList:
    """A job-list document as sent, plain or gzip-compressed (once, when first asked for)."""

    body: bytes

    @cached_property
    def gzipped(self) -> bytes:
        """The body gzip-compressed (level 1: 10,000 jobs of JSON, 5 MB, in about 7 ms)."""
        return gzip.compress(self.body, compresslevel=1, mtime=0)


def utc_text(value: datetime | None) -> str | None:
    """ISO 8601 with a Z, as UWS and django-uws clients read times."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def json_id(job_id: str) -> int | str:
    """The job id as django-uws writes it: a number (ids from before numbering stay text)."""
    number = job_id.isascii() and job_id.isdigit() and len(job_id) < 19
    return int(job_id) if number and str(int(job_id)) == job_id else job_id


def job_json(job: JobRecord, base_url: str) -> dict[str, Any]:
    """The job in django-uws's field names (ESAP's GUI reads these).

    `reportedPhase` is what the job's own call-backs last said (the flow run decides `phase`).
    """
    error = _error(job)
    return {
        "url": f"{base_url}/uws/jobs/{job.job_id}/",
        "jobId": json_id(job.job_id),
        "runId": job.run_id,
        "ownerId": job.owner,
        "phase": job.phase.value,
        "quote": None,
        "creationTime": utc_text(job.creation_time),
        "startTime": utc_text(job.start_time),
        "endTime": utc_text(job.end_time),
        "executionDuration": job.execution_duration,
        "destruction": utc_text(job.destruction),
        "errorSummary": job.reported_error if error is None else error.message,
        "reportedPhase": None if job.reported_phase is None else job.reported_phase.value,
        "parameters": [
            {"key": k, "value": v, "byReference": False, "isPost": True}
            for k, v in job.parameters.items()
        ],
        "results": [
            {"key": r.id, "value": r.href, "size": r.size, "mimeType": r.mime_type}
            for r in job.results
        ],
    }
