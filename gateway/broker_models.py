"""IVOA ExecutionBroker documents (offer sets, execution sessions, updates) as pydantic models.

Only the parts this service acts on are strict; the rest of a request is echoed back.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from core.params import check_value
from core.states import ACTIVE_PHASES, UWSPhase

SCHEMA = "https://www.purl.org/ivoa.net/EB/schema/types"
DOCKER = f"{SCHEMA}/executables/docker-container-1.0"
SINGULARITY = f"{SCHEMA}/executables/singularity-container-1.0"
SIMPLE_COMPUTE = f"{SCHEMA}/resources/compute/simple-compute-resource-1.0"
ENUM_UPDATE = "uri:enum-value-update"


class Phase(StrEnum):
    """ExecutionSessionPhase."""

    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True for the phases a session never leaves."""
        return self in _FINAL

    @classmethod
    def of_job(cls, phase: UWSPhase) -> Phase:
        """The phase of an accepted session whose UWS job is in `phase`."""
        if phase in ACTIVE_PHASES or phase in (UWSPhase.PENDING, UWSPhase.UNKNOWN):
            return cls.RUNNING if phase is UWSPhase.EXECUTING else cls.WAITING
        return {
            UWSPhase.COMPLETED: cls.COMPLETED,
            UWSPhase.ARCHIVED: cls.COMPLETED,
            UWSPhase.ERROR: cls.FAILED,
            UWSPhase.ABORTED: cls.CANCELLED,
        }[phase]


_FINAL = frozenset({Phase.REJECTED, Phase.EXPIRED, Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED})


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: Any, info: ValidationInfo) -> Any:
        # every text and number a client sends: printable, finite, of a sane size
        return check_value(value, info.field_name or "a field")


class Message(_Doc):
    """A MessageItem."""

    type: str = "urn:esap-prefect:message"
    time: datetime
    level: Literal["DEBUG", "WARN", "ERROR", "INFO", "OTHER"]
    template: str
    values: dict[str, str] = Field(default_factory=dict)
    message: str


class DockerPlatform(_Doc):
    """DockerPlatformSpec."""

    architecture: str = "amd64"
    os: str = "linux"


class DockerImage(_Doc):
    """DockerImageSpec: where the image is; the first location is used."""

    locations: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    digest: str | None = None
    platform: DockerPlatform | None = None


class DockerNetwork(_Doc):
    """DockerNetworkSpec; published ports are not offered by this service."""

    ports: list[dict[str, Any]] = Field(default_factory=list)


class _Executable(_Doc):
    name: str | None = None
    uuid: str | None = None
    created: datetime | None = None
    messages: list[Message] = Field(default_factory=list)
    access: list[dict[str, Any]] = Field(default_factory=list)


class DockerContainer(_Executable):
    """A docker-container-1.0 executable."""

    type: Literal["https://www.purl.org/ivoa.net/EB/schema/types/executables/docker-container-1.0"]
    image: DockerImage
    privileged: bool = False
    entrypoint: str | None = Field(default=None, min_length=1)
    environment: dict[str, str] = Field(default_factory=dict)
    network: DockerNetwork | None = None


class SingularityContainer(_Executable):
    """A singularity-container-1.0 executable."""

    type: Literal[
        "https://www.purl.org/ivoa.net/EB/schema/types/executables/singularity-container-1.0"
    ]
    location: str = Field(min_length=1)


Executable = Annotated[DockerContainer | SingularityContainer, Field(discriminator="type")]


class MinMax(_Doc):
    """A min/max pair of whole numbers (cores, or GiB of memory)."""

    min: int | None = Field(default=None, ge=1, le=1_000_000)
    max: int | None = Field(default=None, ge=1, le=1_000_000)


class Amount(_Doc):
    """SimpleComputeCores / SimpleComputeMemory: what was requested, what is offered."""

    requested: MinMax | None = None
    offered: MinMax | None = None


class SimpleCompute(_Doc):
    """A simple-compute-resource-1.0; memory in GiB."""

    type: Literal[
        "https://www.purl.org/ivoa.net/EB/schema/types/resources/compute/simple-compute-resource-1.0"
    ]
    name: str | None = None
    uuid: str | None = None
    cores: Amount | None = None
    memory: Amount | None = None
    volumes: list[dict[str, Any]] = Field(default_factory=list)


class ResourceList(_Doc):
    """ExecutionResourceList; this service offers compute only."""

    compute: list[SimpleCompute] = Field(default_factory=list, max_length=1)
    storage: list[dict[str, Any]] = Field(default_factory=list)
    data: list[dict[str, Any]] = Field(default_factory=list)


class ScheduleRequest(_Doc):
    """ScheduleRequestBlock: the duration is an ISO 8601 duration."""

    duration: str | None = None
    start: list[str] = Field(default_factory=list)


class ScheduleItem(_Doc):
    """ScheduleOfferItem."""

    duration: str | None = None
    start: str | None = None


class RequestedSchedule(_Doc):
    """The schedule block of a request."""

    requested: ScheduleRequest | None = None


class OfferSetRequest(_Doc):
    """What the client asks for: an executable and the resources it needs."""

    name: str | None = None
    executable: dict[str, Any]
    resources: ResourceList = Field(default_factory=ResourceList)
    schedule: RequestedSchedule | None = None


class Schedule(_Doc):
    """The schedule of a session: requested, and what is offered."""

    requested: ScheduleRequest | None = None
    preparing: ScheduleItem | None = None
    executing: ScheduleItem | None = None
    releasing: ScheduleItem | None = None


class Option(_Doc):
    """An EnumValueOption the client may apply."""

    type: str = "uri:enum-value-option"
    path: str
    values: list[str]


class _Accessible(_Doc):
    """AccessibleComponent: the fields every response shares."""

    uuid: str
    name: str | None = None
    type: str
    created: datetime
    href: str
    messages: list[Message] = Field(default_factory=list)


class Session(_Accessible):
    """ExecutionSessionResponse."""

    type: str = "https://www.purl.org/ivoa.net/EB/schema/types/sessions/execution-session-1.0"
    phase: Phase
    expires: datetime | None = None
    executable: DockerContainer | SingularityContainer
    resources: ResourceList
    schedule: Schedule
    options: list[Option] = Field(default_factory=list)


class OfferSet(_Accessible):
    """OfferSetResponse."""

    type: str = "https://www.purl.org/ivoa.net/EB/schema/types/offersets/offerset-response-1.0"
    result: Literal["YES", "NO"]
    offers: list[Session] = Field(default_factory=list)


class Update(_Doc):
    """An AbstractUpdate; the service acts on enum updates of `phase`."""

    type: str
    path: str
    value: str | int | None = None
    delta: int | None = None
    units: str | None = None


class UpdateRequest(_Doc):
    """UpdateRequest: one update of a session."""

    update: Update
