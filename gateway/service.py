"""UWS jobs as Prefect flow runs: create, run, abort, delete, and follow their phases.

One sync loop reads the states of all active flow runs in bulk; requests read only the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import secrets
import stat
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fastapi import HTTPException
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling

from core.params import ParameterError
from core.states import PREFECT_TO_UWS, UWSPhase
from gateway.records import JobRecord, Result
from gateway.redact import public_message
from gateway.settings import GatewaySettings
from gateway.store import ACTIVE, JobStore
from gateway.workflows import job_parameters

log = logging.getLogger("esap.gateway")

FINAL = (UWSPhase.COMPLETED, UWSPhase.ERROR, UWSPhase.ABORTED, UWSPhase.ARCHIVED)
ABORTABLE = (UWSPhase.PENDING, *ACTIVE)
CHUNK = 200


def now() -> datetime:
    """The current time, UTC, to the second (as UWS shows it)."""
    return datetime.now(UTC).replace(microsecond=0)


def token_hash(token: str) -> str:
    """How job tokens are kept: sha256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class JobService:
    """The UWS job operations over one store and one Prefect client."""

    def __init__(self, store: JobStore, client: PrefectClient, settings: GatewaySettings) -> None:
        self.store, self.client, self.settings = store, client, settings
        self._changed: dict[str, asyncio.Event] = {}
        self._deployments: dict[str, uuid.UUID] = {}

    # ---- reading

    def owned(self, job_id: str, user: str) -> JobRecord:
        """The job if it exists and belongs to `user`: 404 otherwise, 403 for another's."""
        job = self.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        if job.owner != user:
            raise HTTPException(403, f"job {job_id} belongs to another user")
        return job

    async def wait(self, job: JobRecord, seconds: float, phase: UWSPhase | None) -> JobRecord:
        """Block until the job leaves `phase` (default: its current active phase) or timeout."""
        watched = phase or job.phase
        if job.phase != watched or job.phase not in (UWSPhase.PENDING, *ACTIVE):
            return job
        limit = self.settings.max_wait if seconds < 0 else min(seconds, self.settings.max_wait)
        event = self._changed.setdefault(job.job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), limit)
        return self.store.get(job.job_id) or job

    def _notify(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    # ---- changing

    async def create(self, owner: str, given: Mapping[str, str]) -> tuple[JobRecord, str]:
        """A PENDING job (its workflow and parameters checked) and its one-time job token."""
        try:
            workflow, parameters = job_parameters(given)
        except ParameterError as exc:
            raise HTTPException(400, str(exc)) from None
        token = secrets.token_hex(20)
        created = now()
        run_id = next((v for k, v in given.items() if k.lower() == "runid"), None)
        job = JobRecord(
            job_id=uuid.uuid4().hex,
            owner=owner,
            workflow=workflow.name,
            run_id=run_id,
            phase=UWSPhase.PENDING,
            parameters={k: v for k, v in given.items() if k.lower() not in ("phase", "runid")},
            flow_parameters=parameters,
            creation_time=created,
            start_time=None,
            end_time=None,
            execution_duration=0,
            destruction=created + timedelta(days=self.settings.destruction_days),
            error_type=None,
            error_message=None,
            results=[],
            flow_run_id=None,
            token_hash=token_hash(token),
        )
        self.store.insert(job)
        return job, token

    async def _deployment_id(self, name: str) -> uuid.UUID:
        if name not in self._deployments:
            try:
                deployment = await self.client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise HTTPException(
                    503, f"deployment {name} is not deployed on this Prefect server"
                ) from None
            self._deployments[name] = deployment.id
        return self._deployments[name]

    async def run(self, job: JobRecord) -> JobRecord:
        """PENDING (or HELD) -> QUEUED: a flow run of the workflow's deployment."""
        if job.phase not in (UWSPhase.PENDING, UWSPhase.HELD):
            raise HTTPException(
                400, f"job {job.job_id} is {job.phase.value}; only a PENDING job can RUN"
            )
        from flows.registry import WORKFLOWS

        deployment = await self._deployment_id(WORKFLOWS[job.workflow].deployment)
        try:
            flow_run = await self.client.create_flow_run_from_deployment(
                deployment,
                parameters=job.flow_parameters,
                tags=["uws"],
                idempotency_key=f"uws-{job.job_id}",
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 409:
                raise
            # Prefect checks parameters against the deployment's schema once more
            detail = exc.response.json().get("detail", str(exc))
            raise HTTPException(400, f"Prefect refused the parameters: {detail}") from None
        self.store.update(job.job_id, phase=UWSPhase.QUEUED, flow_run_id=str(flow_run.id))
        self._notify(job.job_id)
        return self.store.get(job.job_id) or job

    async def abort(self, job: JobRecord, reason: str = "aborted by the user") -> JobRecord:
        """Cancel the flow run (its facility jobs are cancelled by the flow's hook): ABORTED."""
        if job.phase not in ABORTABLE:
            raise HTTPException(400, f"job {job.job_id} is {job.phase.value} and cannot be aborted")
        if job.flow_run_id is not None:
            run = await self.client.read_flow_run(uuid.UUID(job.flow_run_id))
            if run.state is not None and not run.state.is_final():
                state: State[Any] = (
                    Cancelling() if run.state.type is StateType.RUNNING else Cancelled()
                )
                await self.client.set_flow_run_state(run.id, state, force=True)
        self.store.update(
            job.job_id,
            phase=UWSPhase.ABORTED,
            end_time=now(),
            error_message=reason,
            token_hash=None,
        )
        self._notify(job.job_id)
        return self.store.get(job.job_id) or job

    async def delete(self, job: JobRecord) -> None:
        """Abort the job if it still runs, then forget it."""
        if job.phase in ABORTABLE and job.flow_run_id is not None:
            await self.abort(job, "deleted")
        self.store.delete(job.job_id)
        self._notify(job.job_id)

    def set_execution_duration(self, job: JobRecord, seconds: int) -> None:
        """Change the allowed wall time (0: unlimited); only before the job runs."""
        if job.phase != UWSPhase.PENDING:
            raise HTTPException(
                400, f"job {job.job_id} is {job.phase.value}; executionduration is fixed"
            )
        if seconds < 0:
            raise HTTPException(400, "executionduration must be a number of seconds >= 0")
        self.store.update(job.job_id, execution_duration=seconds)

    def set_destruction(self, job: JobRecord, when: datetime) -> None:
        """Change when the job is destroyed."""
        self.store.update(job.job_id, destruction=when.astimezone(UTC).replace(microsecond=0))

    async def set_parameters(self, job: JobRecord, given: Mapping[str, str]) -> JobRecord:
        """Add or change parameters of a PENDING job; the whole set is checked again."""
        if job.phase != UWSPhase.PENDING:
            raise HTTPException(400, f"job {job.job_id} is {job.phase.value}; parameters are fixed")
        merged = {**job.parameters, **given}
        merged["workflow"] = merged.get("workflow") or job.workflow
        try:
            workflow, parameters = job_parameters(merged)
        except ParameterError as exc:
            raise HTTPException(400, str(exc)) from None
        self.store.update(
            job.job_id, parameters=merged, flow_parameters=parameters, workflow=workflow.name
        )
        return self.store.get(job.job_id) or job

    def callback(self, job: JobRecord, token: str | None) -> None:
        """Check a running job's one-time token (django-uws call-backs)."""
        if job.token_hash is None or token is None:
            raise HTTPException(403, "this job takes no call-back")
        if not secrets.compare_digest(job.token_hash, token_hash(token)):
            raise HTTPException(403, "the job token is not valid")

    def report(self, job: JobRecord, phase: UWSPhase, results: list[Result] | None = None) -> None:
        """A call-back's phase change; final phases spend the token."""
        changes: dict[str, Any] = {"phase": phase}
        if phase is UWSPhase.EXECUTING:
            changes["start_time"] = now()
        if phase in FINAL:
            changes.update(end_time=now(), token_hash=None)
        if results is not None:
            changes["results"] = [*job.results, *results]
        self.store.update(job.job_id, **changes)
        self._notify(job.job_id)

    # ---- following Prefect

    async def sync_forever(self) -> None:
        """Follow flow runs until cancelled; a failing cycle is logged and retried."""
        while True:
            try:
                await self.sync_once()
            except Exception:
                log.exception("gateway sync cycle failed")
            await asyncio.sleep(self.settings.sync_interval)

    async def sync_once(self) -> None:
        """One bulk read of every active job's flow run; phases, times, errors, results.

        A job becomes final only together with its results, so a waiting client never sees
        a COMPLETED job without them.
        """
        active = self.store.active()
        finished: dict[str, tuple[JobRecord, dict[str, Any]]] = {}
        for start in range(0, len(active), CHUNK):
            chunk = {j.flow_run_id: j for j in active[start : start + CHUNK] if j.flow_run_id}
            runs = await self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[uuid.UUID(i) for i in chunk])
                ),
                limit=len(chunk),
            )
            for gone in set(chunk) - {str(run.id) for run in runs}:
                finished[gone] = (chunk[gone], self._vanished())
            for run in runs:
                job = chunk[str(run.id)]
                with self._isolated(job, "follow its flow run"):
                    changes = self._changes(job, run)
                    if not changes:
                        continue
                    if changes["phase"] in FINAL:
                        finished[str(run.id)] = (job, changes)
                    else:
                        self.store.update(job.job_id, **changes)
                        self._notify(job.job_id)
        if finished:
            results = await self._results(finished)
            for run_id, (job, changes) in finished.items():
                with self._isolated(job, "record its end"):
                    self.store.update(job.job_id, **changes, results=results.get(run_id, []))
                    self._notify(job.job_id)
        await self._expire()

    @contextlib.contextmanager
    def _isolated(self, job: JobRecord, what: str) -> Iterator[None]:
        """One job's failure is logged and skipped; the cycle goes on for everyone else."""
        try:
            yield
        except Exception:
            log.exception("gateway sync: could not %s for job %s", what, job.job_id)

    def _vanished(self) -> dict[str, Any]:
        """A job whose flow run was deleted in Prefect (by an operator): an error."""
        return {
            "phase": UWSPhase.ERROR,
            "end_time": now(),
            "token_hash": None,
            "error_type": "fatal",
            "error_message": "the Prefect flow run of this job was deleted",
        }

    def _changes(self, job: JobRecord, run: FlowRun) -> dict[str, Any]:
        if run.state is None:
            return {}
        phase = PREFECT_TO_UWS.get(run.state.type.value, UWSPhase.UNKNOWN)
        if phase is job.phase:
            return {}
        changes: dict[str, Any] = {"phase": phase}
        if run.start_time is not None and job.start_time is None:
            changes["start_time"] = run.start_time.replace(microsecond=0)
        if phase in FINAL:
            changes["end_time"] = (run.end_time or now()).replace(microsecond=0)
            changes["token_hash"] = None
        if phase is UWSPhase.ERROR:
            changes["error_type"] = "transient" if run.state.type is StateType.CRASHED else "fatal"
            changes["error_message"] = public_message(run.state.message or run.state.name or "")
        return changes

    async def _results(
        self, jobs: dict[str, tuple[JobRecord, dict[str, Any]]]
    ) -> dict[str, list[Result]]:
        """The archived outputs of finished runs, from their `archived-outputs` artifacts."""
        artifacts = await self.client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["archived-outputs"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(i) for i in jobs]),
            )
        )
        found: dict[str, list[Result]] = {}
        for artifact in artifacts:
            entry = jobs.get(str(artifact.flow_run_id))
            rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            if entry is None or not isinstance(rows, list):
                continue
            with self._isolated(entry[0], "read its results"):
                found[str(artifact.flow_run_id)] = [
                    self._result(entry[0], i, row) for i, row in enumerate(rows)
                ]
        return found

    def _result(self, job: JobRecord, index: int, row: dict[str, Any]) -> Result:
        location = str(row["location"])
        href = location
        if location.startswith("file://"):
            href = f"{self.settings.base_url}/uws/jobs/{job.job_id}/results/{index}"
        mime, _ = mimetypes.guess_type(Path(urlparse(location).path).name)
        return Result(
            id=str(row["name"]), href=href, size=row.get("size"), mime_type=mime, location=location
        )

    async def _expire(self) -> None:
        moment = now()
        for job in self.store.expired(moment):
            with self._isolated(job, "destroy it"):
                await self.delete(job)
        for job in self.store.active():
            limit = job.execution_duration
            if job.phase is not UWSPhase.EXECUTING or not limit or job.start_time is None:
                continue
            with self._isolated(job, "enforce its executionduration"):
                if (moment - job.start_time).total_seconds() > limit:
                    await self.abort(
                        job, f"exceeded its executionduration of {job.execution_duration} s"
                    )

    def result_file(self, job: JobRecord, index: int) -> Path:
        """The local file behind result `index` of a job; 404 unless it is a local archive."""
        if not 0 <= index < len(job.results):
            raise HTTPException(404, f"job {job.job_id} has no result {index}")
        location = job.results[index].location or ""
        path = Path(urlparse(location).path)
        try:
            regular = location.startswith("file://") and stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            regular = False
        if not regular:  # an archived copy is a regular file, never a link
            raise HTTPException(404, f"result {index} of job {job.job_id} is not served here")
        return path
