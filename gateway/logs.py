"""A job's logs while it runs and after: its flow run's log lines, its payload jobs' tails.

Lines come from Prefect; tails from the facilities (the facility contract's `logs`), for
the payload jobs the run listed in its `payload-jobs` artifact. `since` makes polling cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.sorting import LogSort

from blocks.registry import load_facility
from core.jobs import JobLog, JobRef
from gateway.documents import json_id, utc_text
from gateway.records import JobRecord
from gateway.redact import public_message
from tasks.jobs import PAYLOAD_JOBS
from tasks.keys import workflow_key

log = logging.getLogger("esap.gateway")

MAX_LINES = 200  # the most Prefect gives in one read
MAX_JOBS = 20


async def job_logs(
    client: PrefectClient, job: JobRecord, since: datetime | None, only: str | None
) -> dict[str, Any]:
    """The job's logs after `since` (all when None); `only` names one payload job.

    `next_since` is what to ask with next time to get only the lines that are new; payload
    tails come whole, when they changed after `since`.
    """
    lines: list[dict[str, Any]] = []
    tails: list[dict[str, Any]] = []
    if job.flow_run_id is not None:
        run = uuid.UUID(job.flow_run_id)
        lines = await _lines(client, run, since)
        tails = await _tails(client, job, run, since, only)
    # the line after the last one seen: lines reach Prefect in batches, so "now" could skip some
    next_since = lines[-1]["_at"] + timedelta(microseconds=1) if lines else since
    for line in lines:
        del line["_at"]
    return {
        "jobId": json_id(job.job_id),
        "phase": job.phase.value,
        "since": None if since is None else since.isoformat(),
        "next_since": None if next_since is None else next_since.isoformat(),
        "flow_run": lines,
        "payload_jobs": tails,
    }


async def _lines(
    client: PrefectClient, run: uuid.UUID, since: datetime | None
) -> list[dict[str, Any]]:
    found = await client.read_logs(
        log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run]),
            timestamp=LogFilterTimestamp(after_=since) if since else None,
        ),
        limit=MAX_LINES,
        sort=LogSort.TIMESTAMP_ASC,
    )
    return [
        {
            "time": utc_text(line.timestamp),
            "level": logging.getLevelName(line.level),
            "message": line.message,
            "_at": line.timestamp,
        }
        for line in found
    ]


async def _refs(client: PrefectClient, job: JobRecord, run: uuid.UUID) -> list[JobRef]:
    """The payload jobs the run listed (at most 1,000 per submission)."""
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[workflow_key(job.workflow, PAYLOAD_JOBS)]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[run]),
        )
    )
    refs = []
    for artifact in artifacts:
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        for row in rows if isinstance(rows, list) else []:
            refs.append(JobRef(facility=row["facility"], job_id=row["job_id"], name=row["name"]))
    return refs


def _read(refs: list[JobRef]) -> list[tuple[JobRef, JobLog | None, str]]:
    """Each facility asked once for its jobs' tails; one that cannot answer says why."""
    by_facility: dict[str, list[JobRef]] = defaultdict(list)
    for ref in refs:
        by_facility[ref.facility].append(ref)
    found: dict[JobRef, tuple[JobLog | None, str]] = {}
    for name, some in by_facility.items():
        try:
            for entry in load_facility(name).logs(some):
                found[entry.ref] = (entry, "")
        except Exception as exc:  # a facility away must not hide the others' logs
            log.info("logs of jobs on facility %s: %s", name, exc)
            for ref in some:
                found[ref] = (None, public_message(f"facility {name} cannot say: {exc}"))
    return [(ref, *found[ref]) for ref in refs]


async def _tails(
    client: PrefectClient,
    job: JobRecord,
    run: uuid.UUID,
    since: datetime | None,
    only: str | None,
) -> list[dict[str, Any]]:
    refs = [r for r in await _refs(client, job, run) if only is None or r.name == only]
    tails = []
    for ref, entry, problem in await asyncio.to_thread(_read, refs[:MAX_JOBS]):
        if entry is not None and since and entry.updated and entry.updated < since:
            continue  # nothing new
        tails.append(
            {
                "name": ref.name,
                "facility": ref.facility,
                "job_id": ref.job_id,
                "detail": problem or (entry.detail if entry else ""),
                "stdout": entry.stdout if entry else "",
                "stderr": entry.stderr if entry else "",
                "updated": utc_text(entry.updated) if entry else None,
            }
        )
    return tails
