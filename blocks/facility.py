"""The one facility protocol every backend implements (local, DIRAC, Docker, ...).

Bulk by default: submit a batch, poll many jobs in one call, fetch, cancel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from core.errors import FatalError
from core.jobs import JobArray, JobOutputs, JobRef, JobSpec, JobStatus
from core.units import Duration, Memory
from planner.models import Capabilities, TaskType


class FacilityBlock(Block, ABC):
    """A place where payload jobs run, configured as a Prefect Block.

    Subclasses set `tasktypes` and `servicetype`, and may give the limits other defaults.
    """

    tasktypes: ClassVar[frozenset[TaskType]] = frozenset({TaskType.EXECUTABLE})
    servicetype: ClassVar[str] = ""

    kind: str = ""
    max_cores: int = Field(default=1, ge=1, description="Most cores one job may ask for.")
    max_memory: Memory = Field(
        default="2G", validate_default=True, description="Most memory one job may ask for."
    )
    max_duration: Duration = Field(
        default="24h", validate_default=True, description="Longest wall time one job may ask for."
    )
    preference: int = Field(default=100, description="Planner rank, lower preferred.")
    close_rse: str | None = Field(
        default=None,
        description="Rucio RSE next to this facility: inputs are staged there, and the "
        "planner prefers this facility for data already there.",
    )
    default_walltime: Duration = Field(
        default="1h",
        validate_default=True,
        description="Wall time (DIRAC: CPUTime) of jobs that set none.",
    )

    @property
    def facility_name(self) -> str:
        """The saved block's name, or the facility kind for an unsaved default."""
        return self._block_document_name or self.kind

    def walltime_of(self, spec: JobSpec) -> int:
        """The job's wall time in seconds, the facility default when the job sets none."""
        return spec.walltime if spec.walltime is not None else self.default_walltime

    def check_limits(self, spec: JobSpec) -> None:
        """ValueError when the job asks for more cores, memory or wall time than offered."""
        if spec.cores > self.max_cores:
            raise ValueError(
                f"job {spec.name} asks for {spec.cores} cores; facility "
                f"{self.facility_name} has {self.max_cores}"
            )
        if spec.memory is not None and spec.memory > self.max_memory:
            raise ValueError(f"job {spec.name} asks for more memory than {self.facility_name} has")
        if self.walltime_of(spec) > self.max_duration:
            raise ValueError(
                f"job {spec.name} asks for {self.walltime_of(spec)}s wall time; facility "
                f"{self.facility_name} allows {self.max_duration}s"
            )

    def check_container(self, spec: JobSpec) -> None:
        """check_limits, and ValueError when the job names no image (container facilities)."""
        if spec.image is None:
            raise ValueError(
                f"job {spec.name} names no image; facility {self.facility_name} runs containers"
            )
        self.check_limits(spec)

    def endpoint(self) -> str | None:
        """Where the facility's service is, for the planner's offers."""
        return None

    def capabilities(self) -> Capabilities:
        """Task types and resource limits, for the planner."""
        return Capabilities(
            facility=self.facility_name,
            kind=self.kind,
            tasktypes=self.tasktypes,
            maxcores=self.max_cores,
            maxmemory=self.max_memory,
            maxduration=self.max_duration,
            servicetype=self.servicetype,
            endpoint=self.endpoint(),
            preference=self.preference,
            closerse=self.close_rse,
        )

    @abstractmethod
    def submit(self, specs: Sequence[JobSpec]) -> list[JobRef]:
        """Submit a batch of jobs; a job whose name was submitted before is not submitted again."""

    def submit_array(self, array: JobArray) -> list[JobRef]:
        """Submit a job array; facilities without native arrays submit its expansion."""
        return self.submit(array.expand())

    def reschedule(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Run failed jobs again under the same refs, where the backend can."""
        raise FatalError(f"facility {self.facility_name} cannot reschedule jobs")

    @abstractmethod
    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """The states of many jobs, in one call to the backend; same order as `refs`."""

    @abstractmethod
    def fetch(self, refs: Sequence[JobRef], dest: Path) -> list[JobOutputs]:
        """Bring the declared outputs and logs of finished jobs under `dest`/<job name>/."""

    @abstractmethod
    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Stop the jobs; final jobs are left as they are. Returns their states after."""
