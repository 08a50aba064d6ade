"""The IVOA ExecutionBroker over the planner and UWS jobs: offer sets, sessions, acceptance.

An offer is the planner's YES for one facility; accepting it creates and runs a UWS job of
the run-container workflow, and the session's phase follows that job. Storage is
`OfferStore`'s; this module translates between the broker's documents and the planner.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.params import describe
from gateway.broker_models import (
    DOCKER,
    ENUM_UPDATE,
    SIMPLE_COMPUTE,
    SINGULARITY,
    Amount,
    DockerContainer,
    Executable,
    Message,
    MinMax,
    OfferSet,
    OfferSetRequest,
    Option,
    Phase,
    ResourceList,
    Schedule,
    ScheduleItem,
    Session,
    SimpleCompute,
    SingularityContainer,
    UpdateRequest,
)
from gateway.broker_store import OfferStore, StoredSession
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.service import JobService, now
from planner.matching import match
from planner.models import Capabilities, Offer, Resources, TaskRequest, TaskType

GIB = 1024**3
DEFAULT_DURATION = 3600
_EXECUTABLE: TypeAdapter[DockerContainer | SingularityContainer] = TypeAdapter(Executable)
_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def iso_duration(seconds: int) -> str:
    """Seconds as an ISO 8601 duration: PT1H30M."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return f"PT{text or '0S'}"


def _interval(start: datetime, seconds: int) -> str:
    return f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')}/{iso_duration(seconds)}"


def _message(level: str, text: str, **values: str) -> Message:
    return Message(
        time=now(), level=level, template=text, values=values, message=text.format(**values)
    )


class Refusal(Exception):
    """The request is well formed but cannot be offered: the answer is NO with this reason."""


def _requested_seconds(request: OfferSetRequest) -> int:
    text = (
        request.schedule.requested.duration
        if request.schedule and request.schedule.requested
        else None
    )
    if not text:
        return DEFAULT_DURATION
    try:
        seconds = int(_DURATION.validate_python(text).total_seconds())
    except ValidationError:
        raise InvalidRequest(
            f"schedule.requested.duration: {text!r} is not an ISO 8601 duration"
        ) from None
    if seconds <= 0:
        raise InvalidRequest("schedule.requested.duration must be positive")
    return seconds


def _executable(request: OfferSetRequest) -> DockerContainer | SingularityContainer:
    kind = request.executable.get("type")
    if kind not in (DOCKER, SINGULARITY):
        raise Refusal(
            f"executable type {kind!r} is not run here; this service runs {DOCKER} and "
            f"{SINGULARITY}"
        )
    try:
        executable = _EXECUTABLE.validate_python(request.executable)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid executable: {describe(exc)}") from None
    if isinstance(executable, DockerContainer):
        if executable.privileged:
            raise Refusal("privileged containers are not run here")
        if executable.network is not None and executable.network.ports:
            raise Refusal("published network ports are not offered here")
    return executable


def _compute(request: OfferSetRequest) -> SimpleCompute:
    resources = request.resources
    if resources.storage or resources.data:
        raise Refusal("storage and data resources are not offered here; stage data with Rucio")
    if not resources.compute:
        return SimpleCompute(type=SIMPLE_COMPUTE, name="compute")
    compute = resources.compute[0]
    if compute.volumes:
        raise Refusal("compute volumes are not offered here")
    for what, amount in (("cores", compute.cores), ("memory", compute.memory)):
        asked = amount.requested if amount else None
        if asked and asked.min and asked.max and asked.max < asked.min:
            raise InvalidRequest(f"resources.compute.{what}.requested: max is below min")
    return compute


def _task(
    executable: DockerContainer | SingularityContainer, compute: SimpleCompute, seconds: int
) -> TaskRequest:
    cores = compute.cores.requested if compute.cores and compute.cores.requested else MinMax()
    memory = compute.memory.requested if compute.memory and compute.memory.requested else MinMax()
    if isinstance(executable, DockerContainer):
        tasktype, image = TaskType.DOCKER, executable.image.locations[0]
    else:
        tasktype, image = TaskType.SINGULARITY, executable.location
    return TaskRequest(
        tasktype=tasktype,
        taskinfo={"image": image},
        resources=Resources(
            mincores=cores.min or 1,
            maxcores=cores.max,
            minmemory=(memory.min or 0) * GIB,
            maxmemory=memory.max * GIB if memory.max else None,
            minduration=seconds,
        ),
    )


def _offered(compute: SimpleCompute, task: TaskRequest, offer: Offer) -> SimpleCompute:
    got = offer.resources
    memory_max = max(1, got.maxmemory // GIB)
    memory_min = min(memory_max, max(1, math.ceil(task.resources.minmemory / GIB)))
    return compute.model_copy(
        update={
            "cores": Amount(
                requested=compute.cores.requested if compute.cores else None,
                offered=MinMax(min=got.mincores, max=got.maxcores),
            ),
            "memory": Amount(
                requested=compute.memory.requested if compute.memory else None,
                offered=MinMax(min=memory_min, max=memory_max),
            ),
        }
    )


class Broker:
    """Offer sets and sessions: made from the planner's answers, run as UWS jobs."""

    def __init__(
        self,
        offers: OfferStore,
        service: JobService,
        capabilities: Callable[[], list[Capabilities]],
        offer_seconds: float,
    ) -> None:
        self.offers, self.service = offers, service
        self._capabilities = capabilities
        self._offer_seconds = offer_seconds
        self._lock = asyncio.Lock()

    async def offer(self, owner: str, body: Any, base: str) -> OfferSet:
        """Offers (best first, each an OFFERED session that expires) or NO with reasons."""
        try:
            request = OfferSetRequest.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest(f"invalid offer set request: {describe(exc)}") from None
        seconds = _requested_seconds(request)
        created = now()
        set_id = str(uuid.uuid4())
        offers: list[tuple[Session, str]] = []
        messages: list[Message] = []
        try:
            executable = _executable(request)
            compute = _compute(request)
            task = _task(executable, compute, seconds)
            capabilities = await asyncio.to_thread(self._capabilities)
            answer = match(task, capabilities)
            if answer.reponseword == "NO":
                raise Refusal(
                    "; ".join(f"{name}: {why}" for name, why in sorted(answer.reasons.items()))
                )
        except Refusal as refusal:
            messages.append(_message("WARN", "{reason}", reason=str(refusal)))
        else:
            expires = created + timedelta(seconds=self._offer_seconds)
            offers = [
                (_session(request, executable, compute, task, offer, created, expires, base),
                 offer.serviceinfo.facility)
                for offer in answer.offers
            ]  # fmt: skip
        sessions = [session for session, _ in offers]
        result = OfferSet(
            uuid=set_id,
            name=request.name,
            created=created,
            href=f"{base}/offersets/{set_id}",
            messages=messages,
            result="YES" if sessions else "NO",
            offers=sessions,
        )
        self.offers.save(owner, result, sessions, [facility for _, facility in offers])
        return result

    # ---- reading

    def offerset(self, owner: str, set_id: str) -> OfferSet:
        """An offer set with its sessions' current phases."""
        found = self.offers.offerset(set_id)
        if found is None:
            raise NotFound(f"no offer set {set_id}")
        if found[0] != owner:
            raise Forbidden(f"offer set {set_id} belongs to another user")
        sessions = [self._current(s) for s in self.offers.sessions(set_id)]
        return found[1].model_copy(update={"offers": sessions})

    def session(self, owner: str, session_id: str) -> Session:
        """One session, its phase following its UWS job."""
        return self._current(self._owned(owner, session_id))

    def _owned(self, owner: str, session_id: str) -> StoredSession:
        stored = self.offers.session(session_id)
        if stored is None:
            raise NotFound(f"no session {session_id}")
        if stored.owner != owner:
            raise Forbidden(f"session {session_id} belongs to another user")
        return stored

    def _phase(self, stored: StoredSession) -> Phase:
        if stored.phase is Phase.OFFERED and stored.expires and stored.expires < now():
            return Phase.EXPIRED
        if stored.phase is Phase.ACCEPTED and stored.job_id:
            job = self.service.store.get(stored.job_id)
            if job is not None:
                return Phase.of_job(job.phase)
        return stored.phase

    def _current(self, stored: StoredSession) -> Session:
        session, phase = stored.document, self._phase(stored)
        messages = list(session.messages)
        if stored.job_id:
            job = self.service.store.get(stored.job_id)
            href = f"{self.service.settings.base_url}/uws/jobs/{stored.job_id}"
            messages.append(_message("INFO", "UWS job {href}", href=href))
            if job is not None and job.error_message and phase in (Phase.FAILED, Phase.CANCELLED):
                messages.append(_message("ERROR", "{error}", error=job.error_message))
        return session.model_copy(
            update={
                "phase": phase,
                "expires": session.expires if phase is Phase.OFFERED else None,
                "messages": messages,
                "options": [] if phase.is_final else session.options,
            }
        )

    # ---- changing

    async def update(self, owner: str, session_id: str, body: Any) -> Session:
        """Apply an enum update of `phase`: ACCEPTED (starts the run), REJECTED, CANCELLED."""
        try:
            update = UpdateRequest.model_validate(body).update
        except ValidationError as exc:
            raise InvalidRequest(f"invalid update request: {describe(exc)}") from None
        if update.type != ENUM_UPDATE or update.path != "phase":
            raise InvalidRequest(
                f"only {ENUM_UPDATE} of path phase is supported (got {update.type} of "
                f"{update.path})"
            )
        wanted = str(update.value)
        if wanted not in (Phase.ACCEPTED, Phase.REJECTED, Phase.CANCELLED):
            raise InvalidRequest(
                f"phase {wanted!r} cannot be set; use ACCEPTED, REJECTED or CANCELLED"
            )
        async with self._lock:
            stored = self._owned(owner, session_id)
            phase = self._phase(stored)
            if wanted == Phase.ACCEPTED and phase is Phase.OFFERED:
                await self._accept(owner, session_id, stored)
            elif wanted in (Phase.REJECTED, Phase.CANCELLED) and phase is Phase.OFFERED:
                self.offers.set_phase(session_id, Phase(wanted))
            elif wanted == Phase.CANCELLED and phase in (Phase.WAITING, Phase.RUNNING):
                job = self.service.store.get(stored.job_id or "")
                if job is not None:
                    await self.service.abort(job, "session cancelled")
            else:
                raise Conflict(f"session {session_id} is {phase.value}; cannot {wanted}")
        return self.session(owner, session_id)

    async def _accept(self, owner: str, session_id: str, stored: StoredSession) -> None:
        parameters = _job_parameters(stored.document, stored.facility)
        job = await self.service.create(owner, parameters)
        try:
            await self.service.run(job)
        except BaseException:
            await self.service.delete(job)  # the session stays OFFERED, with no job behind it
            raise
        self.offers.accept(session_id, job.job_id)


def _session(
    request: OfferSetRequest,
    executable: DockerContainer | SingularityContainer,
    compute: SimpleCompute,
    task: TaskRequest,
    offer: Offer,
    created: datetime,
    expires: datetime,
    base: str,
) -> Session:
    """The OFFERED session of one planner offer."""
    session_id = str(uuid.uuid4())
    duration = min(offer.resources.maxduration, task.resources.minduration)
    return Session(
        uuid=session_id,
        name=request.name,
        created=created,
        href=f"{base}/sessions/{session_id}",
        messages=[
            _message(
                "INFO",
                "offered by facility {facility} ({servicetype})",
                facility=offer.serviceinfo.facility,
                servicetype=offer.servicetype,
            )
        ],
        phase=Phase.OFFERED,
        expires=expires,
        executable=executable,
        resources=ResourceList(compute=[_offered(compute, task, offer)]),
        schedule=Schedule(
            requested=request.schedule.requested if request.schedule else None,
            executing=ScheduleItem(start=_interval(created, 0), duration=iso_duration(duration)),
        ),
        options=[Option(path="phase", values=["ACCEPTED", "REJECTED", "CANCELLED"])],
    )


def _job_parameters(session: Session, facility: str) -> dict[str, str]:
    """The run-container job an accepted session runs."""
    executable = session.executable
    compute = session.resources.compute[0]
    cores = compute.cores.offered.min if compute.cores and compute.cores.offered else 1
    asked = compute.memory.requested if compute.memory else None
    duration = session.schedule.executing.duration if session.schedule.executing else None
    parameters = {
        "workflow": "run-container",
        "facility": facility,
        "cores": str(cores or 1),
        "walltime": str(int(_DURATION.validate_python(duration).total_seconds()))
        if duration
        else str(DEFAULT_DURATION),
    }
    if asked is not None and asked.min:
        parameters["memory"] = f"{asked.min}G"
    if isinstance(executable, DockerContainer):
        parameters["runtime"] = "docker"
        parameters["image"] = executable.image.locations[0]
        if executable.entrypoint:
            parameters["command"] = json.dumps([executable.entrypoint])
        if executable.environment:
            parameters["environment"] = json.dumps(executable.environment)
    else:
        parameters["runtime"] = "singularity"
        parameters["image"] = executable.location
    return parameters
