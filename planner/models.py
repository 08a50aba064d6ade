"""Models of the IVOA Execution Planner seed form: task requests, capabilities, offers.

Field names follow the 2021 seed (`tasktype`, `taskinfo`, `reponseword`, ...) so ESAP and
planner clients can send and read them unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.params import check_value
from core.units import MAX_CORES, Duration, Memory


class TaskType(StrEnum):
    """The kinds of task a facility can be asked to run."""

    EXECUTABLE = "uri://executable"
    DOCKER = "uri://docker-container"
    SINGULARITY = "uri://singularity-container"
    HELM = "uri://kubernetes-helm"
    NOTEBOOK = "uri://jupyter-notebook"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: Any, info: ValidationInfo) -> Any:
        # every text and number a request carries: printable, finite, of a sane size
        return check_value(value, info.field_name or "a field")


class ExecutableInfo(_Strict):
    """A program run directly on the facility's nodes."""

    executable: str = Field(min_length=1, description="Program to run.")


class ContainerInfo(_Strict):
    """A Docker or Singularity/Apptainer container image."""

    image: str = Field(min_length=1, description="Image reference, e.g. docker.io/example:1.0.")


class HelmInfo(_Strict):
    """A Helm chart to install on a Kubernetes cluster."""

    chart: str = Field(min_length=1, description="Chart reference.")
    version: str | None = None


class NotebookInfo(_Strict):
    """A Jupyter notebook to execute."""

    notebook: str = Field(min_length=1, description="Notebook path or URL.")


TASKINFO_MODELS: dict[TaskType, type[_Strict]] = {
    TaskType.EXECUTABLE: ExecutableInfo,
    TaskType.DOCKER: ContainerInfo,
    TaskType.SINGULARITY: ContainerInfo,
    TaskType.HELM: HelmInfo,
    TaskType.NOTEBOOK: NotebookInfo,
}


class Resources(_Strict):
    """Ranges of cores, memory and duration; a missing maximum means "as much as offered"."""

    mincores: int = Field(default=1, ge=1, le=MAX_CORES)
    maxcores: int | None = Field(default=None, ge=1, le=MAX_CORES)
    minmemory: Memory = 0
    maxmemory: Memory | None = None
    minduration: Duration = 0
    maxduration: Duration | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> Self:
        for kind in ("cores", "memory", "duration"):
            low, high = getattr(self, f"min{kind}"), getattr(self, f"max{kind}")
            if high is not None and high < low:
                raise ValueError(f"max{kind} ({high}) is below min{kind} ({low})")
        return self


class TaskRequest(_Strict):
    """Can this task, with these resources, run here? (the planner's input)."""

    tasktype: TaskType
    taskinfo: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    datalocations: tuple[str, ...] = Field(
        default=(),
        description="RSEs holding the task's input data; a facility close to one is preferred.",
    )

    @model_validator(mode="after")
    def _taskinfo_fits_tasktype(self) -> Self:
        model = TASKINFO_MODELS[self.tasktype]
        try:
            model.model_validate(self.taskinfo)
        except ValidationError as exc:
            problems = "; ".join(
                f"taskinfo.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"taskinfo does not fit {self.tasktype.value}: {problems}") from None
        return self


class Capabilities(_Strict):
    """What one facility can run, as the planner sees it."""

    facility: str = Field(min_length=1)
    kind: str = Field(description="Facility kind, e.g. local, dirac, docker.")
    tasktypes: frozenset[TaskType]
    maxcores: int = Field(ge=1)
    maxmemory: Memory
    maxduration: Duration
    servicetype: str = Field(description="URI of the service an accepted offer is run through.")
    endpoint: str | None = None
    preference: int = Field(
        default=100, description="Lower is preferred when several facilities can do a task."
    )
    closerse: str | None = Field(
        default=None, description="The Rucio RSE next to the facility, where inputs are staged."
    )


class OfferedResources(_Strict):
    """The ranges a facility offers; every bound is set."""

    mincores: int
    maxcores: int
    minmemory: Memory
    maxmemory: Memory
    minduration: Duration
    maxduration: Duration


class ServiceInfo(_Strict):
    """Where to send the task if the offer is taken."""

    facility: str
    endpoint: str | None = None
    closerse: str | None = None


class Offer(_Strict):
    """One facility's YES: the service to use and the resources it grants."""

    servicetype: str
    serviceinfo: ServiceInfo
    resources: OfferedResources


class PlanResponse(_Strict):
    """The planner's answer: YES with offers (best first) or NO with a reason per facility.

    The top-level `servicetype`, `serviceinfo` and `resources` repeat the best offer, as
    the seed's single-offer answer had them.
    """

    reponseword: Literal["YES", "NO"]
    servicetype: str | None = None
    serviceinfo: ServiceInfo | None = None
    resources: OfferedResources | None = None
    offers: tuple[Offer, ...] = ()
    reasons: dict[str, str] = Field(default_factory=dict)
