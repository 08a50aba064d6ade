"""UWS jobs as Prefect flow runs: create, run, abort, delete, change, call back, wait.

The typed service behind the thin UWS routes; it raises the gateway's domain errors and
changes jobs through `JobUpdate`s. Following Prefect is `gateway.sync`'s work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import stat
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from fastapi import Request
from prefect.blocks.system import Secret
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import State, StateType
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling

from blocks.registry import BlockNames, archive_roots, block_names
from core.callbacks import callback_block
from core.params import ParameterError
from core.states import ABORTABLE_PHASES, ACTIVE_PHASES, UWSPhase
from gateway.auth import current_user, job_token
from gateway.errors import (
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from gateway.logs import job_logs
from gateway.records import JobRecord, JobUpdate, Result
from gateway.settings import GatewaySettings
from gateway.store import JobStore
from gateway.uws_input import one, read_fields
from gateway.workflows import job_parameters, run_tags

CALLBACK_PHASES = {
    "EXECUTING": UWSPhase.EXECUTING,
    "COMPLETE": UWSPhase.COMPLETED,
    "ERROR": UWSPhase.ERROR,
}
"""What a job's call-back may report (django-uws's words) and the phase each means."""


def now() -> datetime:
    """The current time, UTC, to the second (as UWS shows it)."""
    return datetime.now(UTC).replace(microsecond=0)


def token_hash(token: str) -> str:
    """How job tokens are kept: sha256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def ended(phase: UWSPhase, **fields: Any) -> JobUpdate:
    """The update that makes a job final: its phase, end time, and its token spent."""
    return JobUpdate(phase=phase, end_time=fields.pop("end_time", now()), token_hash=None, **fields)


class JobService:
    """The UWS job operations over one store and one Prefect client."""

    def __init__(self, store: JobStore, client: PrefectClient, settings: GatewaySettings) -> None:
        self.store, self.client, self.settings = store, client, settings
        self._changed: dict[str, asyncio.Event] = {}
        self._deployments: dict[str, uuid.UUID] = {}
        self._names: BlockNames | None = None
        self._roots: list[Path] | None = None

    # ---- reading

    def get(self, job_id: str) -> JobRecord:
        """The job; NotFound when there is none."""
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def owned(self, job_id: str, user: str) -> JobRecord:
        """The job if it exists and belongs to `user`: NotFound, or Forbidden for another's."""
        job = self.get(job_id)
        if job.owner != user:
            raise Forbidden(f"job {job_id} belongs to another user")
        return job

    async def visible(self, job_id: str, request: Request) -> JobRecord:
        """The job for whoever asks: its owner (bearer), or its running payload (job token)."""
        token = job_token(request)
        if token is not None:
            return self.called_back(job_id, token)
        return self.owned(job_id, (await current_user(request)).user)

    async def wait(self, job: JobRecord, seconds: float, phase: UWSPhase | None) -> JobRecord:
        """Block until the job leaves `phase` (default: its current active phase) or timeout."""
        watched = phase or job.phase
        if job.phase != watched or job.phase not in (UWSPhase.PENDING, *ACTIVE_PHASES):
            return job
        limit = self.settings.max_wait if seconds < 0 else min(seconds, self.settings.max_wait)
        if self.store.shared:  # another gateway may be the one that sees the change
            return await self._wait_shared(job, watched, limit)
        event = self._changed.setdefault(job.job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), limit)
        return self.store.get(job.job_id) or job

    async def _wait_shared(self, job: JobRecord, watched: UWSPhase, limit: float) -> JobRecord:
        """Wait by reading the job again every sync interval (woken early by own changes)."""
        deadline = asyncio.get_running_loop().time() + limit
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            event = self._changed.setdefault(job.job_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, self.settings.sync_interval))
            current = await asyncio.to_thread(self.store.get, job.job_id)
            if current is None or current.phase != watched:
                return current or job
        return self.store.get(job.job_id) or job

    async def logs(
        self, job: JobRecord, since: datetime | None, only: str | None
    ) -> dict[str, Any]:
        """The job's flow-run log lines after `since` and its payload jobs' log tails."""
        return await job_logs(self.client, job, since, only)

    async def result_file(self, job: JobRecord, index: int) -> Path:
        """The local file behind result `index` of a job; NotFound unless an archive holds it.

        Served only from under the roots of the local archives (a shared directory when
        workers run on other hosts), as a regular file reached through no link.
        """
        if not 0 <= index < len(job.results):
            raise NotFound(f"job {job.job_id} has no result {index}")
        location = job.results[index].location or ""
        path = Path(unquote(urlparse(location).path))
        try:
            regular = location.startswith("file://") and stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            regular = False
        # an archived copy is a regular file, never a link, under an archive's root
        if not regular or not await self._archived(path):
            raise NotFound(f"result {index} of job {job.job_id} is not served here")
        return path

    async def _archived(self, path: Path) -> bool:
        """Whether `path`, with no link on the way, lies under a local archive's root."""
        if path.resolve() != path:
            return False
        for fresh in (False, True):  # an archive saved since the roots were read
            if fresh or self._roots is None:
                self._roots = await asyncio.to_thread(archive_roots)
            if any(path.is_relative_to(root) for root in self._roots):
                return True
        return False

    # ---- changing

    def change(self, job: JobRecord, update: JobUpdate) -> JobRecord:
        """Apply `update` and wake whoever waits on the job; the job after."""
        changed = self.store.update(job.job_id, update) or job
        self._wake(job.job_id)
        return changed

    def _wake(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    async def submit(self, owner: str, fields: Mapping[str, str]) -> JobRecord:
        """A job from a create request's fields; `PHASE=RUN` among them runs it at once."""
        phase = one(fields, "PHASE")
        if phase is not None and phase.upper() != "RUN":
            raise InvalidRequest("PHASE at creation can only be RUN")
        job = await self.create(owner, {k: v for k, v in fields.items() if k.upper() != "PHASE"})
        if phase is None:
            return job
        try:
            return await self.run(job)
        except BaseException:  # the client is told it failed: no half-made job stays behind
            self.store.delete(job.job_id)
            raise

    async def create(self, owner: str, given: Mapping[str, str]) -> JobRecord:
        """A PENDING job, its workflow and parameters checked (its token comes with RUN)."""
        try:
            checked = job_parameters(given)
        except ParameterError as exc:
            raise InvalidRequest(str(exc)) from None
        workflow, parameters = checked.workflow, checked.parameters
        await self._check_names(parameters)
        created = now()
        run_id = next((v for k, v in given.items() if k.lower() == "runid"), None)
        job = JobRecord(
            job_id=self.store.new_job_id(),
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
            token_hash=None,
        )
        self.store.insert(job)
        return job

    async def _check_names(self, parameters: Mapping[str, Any]) -> None:
        """InvalidRequest for a facility or store no block has (read again on a miss).

        Only the name asked for is told: the names of others' facilities are not.
        """
        for parameter, what in (("facility", "facility"), ("store", "store"),
                                ("input_store", "Rucio store")):  # fmt: skip
            value = parameters.get(parameter)
            if not value:
                continue
            plain = str(value).rpartition("/")[2]
            for fresh in (False, True):
                if fresh or self._names is None:
                    self._names = await asyncio.to_thread(block_names)
                known = {
                    "facility": self._names.facilities,
                    "store": self._names.stores,
                    "input_store": self._names.rucio_stores,
                }[parameter]
                if plain in known:
                    break
            else:
                raise InvalidRequest(f"parameter {parameter}: no {what} named {value!r}")

    async def _deployment_id(self, name: str) -> uuid.UUID:
        if name not in self._deployments:
            try:
                deployment = await self.client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise Unavailable(
                    f"deployment {name} is not deployed on this Prefect server"
                ) from None
            self._deployments[name] = deployment.id
        return self._deployments[name]

    async def run(self, job: JobRecord) -> JobRecord:
        """PENDING (or HELD) -> QUEUED: a flow run of the workflow's deployment."""
        runnable = (UWSPhase.PENDING, UWSPhase.HELD)
        claimed = None
        if job.phase in runnable:  # claimed in the table: of two gateways at once, one runs it
            claimed = self.store.update(job.job_id, JobUpdate(phase=UWSPhase.QUEUED), when=runnable)
        if claimed is None:
            current = self.store.get(job.job_id) or job
            raise InvalidTransition(
                f"job {job.job_id} is {current.phase.value}; only a PENDING job can RUN"
            )
        try:
            return await self._start(job)
        except BaseException:
            self.store.update(job.job_id, JobUpdate(phase=job.phase), when=(UWSPhase.QUEUED,))
            raise

    async def _start(self, job: JobRecord) -> JobRecord:
        """The flow run of a claimed job, with its call-back token."""
        from flows.registry import WORKFLOWS

        deployment = await self._deployment_id(WORKFLOWS[job.workflow].deployment)
        token = await self._give_token(job)
        try:
            flow_run = await self.client.create_flow_run_from_deployment(
                deployment,
                parameters=job.flow_parameters,
                tags=["uws", callback_block(job.job_id), *run_tags(job.parameters)],
                idempotency_key=f"uws-{job.job_id}",
            )
        except BaseException as exc:
            await self._drop_token(job)
            if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code == 409:
                # Prefect checks parameters against the deployment's schema once more
                detail = exc.response.json().get("detail", str(exc))
                raise InvalidRequest(f"Prefect refused the parameters: {detail}") from None
            raise
        started = self.store.update(
            job.job_id,
            JobUpdate(flow_run_id=str(flow_run.id), token_hash=token_hash(token)),
            when=(UWSPhase.QUEUED,),
        )
        if started is None:  # aborted or deleted while its flow run was being made
            await self.client.set_flow_run_state(flow_run.id, Cancelled(), force=True)
            await self._drop_token(job)
            return self.store.get(job.job_id) or job
        self._wake(job.job_id)
        return started

    async def _give_token(self, job: JobRecord) -> str:
        """A new job token (40 hex digits, as django-uws's), kept for the job's payloads.

        Prefect keeps it in a Secret block (shown masked); the gateway keeps its hash.
        """
        token = secrets.token_hex(20)
        value = {"url": self.settings.uws_app_url, "job_id": job.job_id, "token": token}
        await Secret(value=value).asave(callback_block(job.job_id), overwrite=True)
        return token

    async def _drop_token(self, job: JobRecord) -> None:
        """Delete the job's call-back Secret block: its token dies with the final phase."""
        with contextlib.suppress(ObjectNotFound):
            found = await self.client.read_block_document_by_name(
                callback_block(job.job_id), block_type_slug="secret"
            )
            await self.client.delete_block_document(found.id)

    async def finish(self, job: JobRecord, update: JobUpdate) -> JobRecord:
        """Apply an update that makes the job final, and spend its token."""
        changed = self.change(job, update | JobUpdate(token_hash=None))
        await self._drop_token(job)
        return changed

    async def abort(self, job: JobRecord, reason: str = "aborted by the user") -> JobRecord:
        """Cancel the flow run (its facility jobs are cancelled by the flow's hook): ABORTED."""
        if job.phase not in ABORTABLE_PHASES:
            raise InvalidTransition(f"job {job.job_id} is {job.phase.value} and cannot be aborted")
        if job.flow_run_id is not None:
            run = await self.client.read_flow_run(uuid.UUID(job.flow_run_id))
            if run.state is not None and not run.state.is_final():
                state: State[Any] = (
                    Cancelling() if run.state.type is StateType.RUNNING else Cancelled()
                )
                await self.client.set_flow_run_state(run.id, state, force=True)
        return await self.finish(job, ended(UWSPhase.ABORTED, error_message=reason))

    async def delete(self, job: JobRecord) -> None:
        """Abort the job if it still runs, then forget it."""
        if job.phase in ABORTABLE_PHASES and job.flow_run_id is not None:
            await self.abort(job, "deleted")
        self.store.delete(job.job_id)
        self._wake(job.job_id)

    def set_execution_duration(self, job: JobRecord, seconds: int) -> JobRecord:
        """Change the allowed wall time (0: unlimited); only before the job runs."""
        if job.phase != UWSPhase.PENDING:
            raise InvalidTransition(
                f"job {job.job_id} is {job.phase.value}; executionduration is fixed"
            )
        return self.change(job, JobUpdate(execution_duration=seconds))

    def set_destruction(self, job: JobRecord, when: datetime) -> JobRecord:
        """Change when the job is destroyed."""
        return self.change(job, JobUpdate(destruction=when.replace(microsecond=0)))

    async def set_parameters(
        self, job: JobRecord, given: Mapping[str, str], *, replace: bool = False
    ) -> JobRecord:
        """Add or change (or with `replace`, set anew) parameters of a PENDING job.

        The whole set is checked again; the workflow stays unless the new set names another.
        """
        if job.phase != UWSPhase.PENDING:
            raise InvalidTransition(f"job {job.job_id} is {job.phase.value}; parameters are fixed")
        merged = dict(given) if replace else {**job.parameters, **given}
        merged["workflow"] = merged.get("workflow") or job.workflow
        try:
            checked = job_parameters(merged)
        except ParameterError as exc:
            raise InvalidRequest(str(exc)) from None
        await self._check_names(checked.parameters)
        return self.change(
            job,
            JobUpdate(
                parameters=merged,
                flow_parameters=checked.parameters,
                workflow=checked.workflow.name,
            ),
        )

    async def amend(self, job: JobRecord, changes: Mapping[str, Any], replace: bool) -> JobRecord:
        """The owner's PUT or PATCH of a django-uws job (fields from `uws_input.job_changes`).

        errorSummary is the job's own to set; the owner may only send back what it shows.
        """
        if changes.get("errorSummary") not in (None, "", job.reported_error):
            raise Forbidden("errorSummary is set by the job's own call-back (its job token)")
        if "parameters" in changes:
            job = await self.set_parameters(job, changes["parameters"], replace=replace)
        if "executionDuration" in changes:
            job = self.set_execution_duration(job, changes["executionDuration"])
        if "destruction" in changes:
            job = self.set_destruction(job, changes["destruction"])
        if "runId" in changes:
            job = self.change(job, JobUpdate(run_id=changes["runId"]))
        return job

    # ---- call-backs from inside a job (django-uws)

    def called_back(self, job_id: str, token: str | None) -> JobRecord:
        """The job whose one-time token this is; one Unauthenticated otherwise.

        An unknown job, a job without a call-back and a wrong token get the same answer, so
        a token holder learns nothing of other jobs.
        """
        try:
            job: JobRecord | None = self.get(job_id)
        except NotFound:
            job = None
        given = token_hash(token) if token else ""
        if job is None or not job.token_hash or not secrets.compare_digest(job.token_hash, given):
            raise Unauthenticated("the job token is not valid")
        return job

    async def set_phase(self, job_id: str, request: Request) -> JobRecord:
        """PHASE posted to a job: RUN or ABORT by its owner, a call-back's with its job token.

        The caller is known before the body is read.
        """
        token = job_token(request)
        if token is not None:
            job = self.called_back(job_id, token)
            return self.report(job, one(await read_fields(request), "PHASE") or "")
        job = self.owned(job_id, (await current_user(request)).user)
        wanted = (one(await read_fields(request), "PHASE") or "").upper()
        if wanted == "RUN":
            return await self.run(job)
        if wanted == "ABORT":
            return await self.abort(job)
        raise InvalidRequest("PHASE must be RUN or ABORT")

    def report(self, job: JobRecord, word: str) -> JobRecord:
        """A call-back's phase (EXECUTING, COMPLETE, ERROR), recorded as `reported_phase`.

        The flow run decides when the job is final; a reported ERROR makes its end an error
        even if the flow run completes (see `gateway.sync`).
        """
        phase = CALLBACK_PHASES.get(word.upper())
        if phase is None:
            raise InvalidRequest(f"a call-back sets PHASE to {', '.join(CALLBACK_PHASES)}")
        return self.change(job, JobUpdate(reported_phase=phase))

    def report_error(self, job: JobRecord, summary: str) -> JobRecord:
        """A call-back's errorSummary (django-uws's client PATCHes it before PHASE=ERROR)."""
        try:
            return self.change(job, JobUpdate(reported_error=summary))
        except ValueError:
            raise InvalidRequest("errorSummary must be printable text of at most 4096") from None

    def add_results(self, job: JobRecord, results: list[Result]) -> JobRecord:
        """Results a running job reports (django-uws), kept with the archived ones at the end."""
        return self.change(job, JobUpdate(results=[*job.results, *results]))
