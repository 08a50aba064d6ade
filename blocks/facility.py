"""The one facility protocol every backend implements (local, DIRAC, Docker, ...).

Bulk by default: submit a batch, poll many jobs in one call, fetch, cancel. The contract is
written once, on `FacilityBlock`, and tests/test_facility_contract.py checks it on each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from core.errors import FatalError, JobRefused
from core.jobs import JobArray, JobLog, JobOutputs, JobRef, JobSpec, JobStatus
from core.states import JobState
from core.units import Duration, Memory, format_memory
from planner.models import Capabilities, TaskType

CONTAINER_TYPES = frozenset({TaskType.DOCKER, TaskType.SINGULARITY})
LOG_TAIL = 16_384
"""Bytes of each log stream a log tail gives by default."""


class FacilityBlock(Block, ABC):
    """A place where payload jobs run, configured as a Prefect Block.

    Subclasses set `tasktypes` and `servicetype`, and may give the limits other defaults.
    Every facility keeps this contract:

    - `submit(specs)` checks every spec first (`check`): one over the facility's cores,
      memory or wall time, or of a kind it does not run (an image on a facility of
      programs, none on a container facility), is a `JobRefused` naming the limit, raised
      before anything is submitted; tasks never retry it. A spec whose name was submitted
      before gives back the same ref and submits nothing; the same name with another spec
      is a `JobRefused` (names are idempotency keys).
    - `poll(refs)` asks the backend once for all refs (one more call per page on DIRAC)
      and answers in the same order. A ref the facility does not know is FAILED with a
      detail starting "lost:"; one bad ref never fails the call. Polling observes: it may
      write down what it saw in the facility's own records, it does not act on jobs.
    - Native states become `JobState` only through `core.states` (DIRAC_STATUS,
      DOCKER_STATUS, and `ended` for a process or container that ended).
    - `fetch(refs, dest)` brings, for final jobs, the regular files inside the job's folder
      that its output patterns match, and its stdout and stderr, under `dest/<job name>/`;
      links and special files are refused by name (`JobOutputs.refused`). A lost ref gives
      empty outputs.
    - `cancel(refs)` ends jobs not yet final as CANCELLED and leaves final ones as they
      are; it returns the states after.
    - `logs(refs)` gives the end of each job's stdout and stderr while it runs and after
      it ended, as far as the backend can see them (DIRAC: its statuses while it runs, the
      output sandbox's logs once done); a lost ref gives empty logs, never an error.
    - Wall time is enforced by the facility whether or not anyone polls.

    What a backend cannot honour it says here: DIRAC compares the spec behind a reused
    name only when the earlier submission was made from this home (DiracX 0.7 cannot
    return a job's JDL), and enforces wall time as DIRAC does (CPUTime, by the pilot).
    Kubernetes' pod log API gives stdout and stderr as one stream: both are in stdout.
    """

    tasktypes: ClassVar[frozenset[TaskType]] = frozenset({TaskType.EXECUTABLE})
    servicetype: ClassVar[str] = ""

    kind: ClassVar[str] = ""
    runtime_engine: ClassVar[str] = "process"
    """What runs the payload, as ESAP's facility catalogue says it (Docker, Singularity, ...)."""
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

    def check(self, spec: JobSpec) -> None:
        """JobRefused unless the facility can take the job: its kind, cores, memory, time."""
        runs_images = bool(self.task_types() & CONTAINER_TYPES)
        if runs_images and spec.image is None:
            raise JobRefused(
                f"job {spec.name} names no image; facility {self.facility_name} runs containers"
            )
        if not runs_images and spec.image is not None:
            raise JobRefused(
                f"job {spec.name} names image {spec.image}; facility {self.facility_name} "
                "runs programs, not container images"
            )
        if spec.cores > self.max_cores:
            raise JobRefused(
                f"job {spec.name} asks for {spec.cores} cores; facility "
                f"{self.facility_name} has {self.max_cores}"
            )
        if spec.memory is not None and spec.memory > self.max_memory:
            raise JobRefused(
                f"job {spec.name} asks for {format_memory(spec.memory)} of memory; facility "
                f"{self.facility_name} has {format_memory(self.max_memory)}"
            )
        if self.walltime_of(spec) > self.max_duration:
            raise JobRefused(
                f"job {spec.name} asks for {self.walltime_of(spec)}s wall time; facility "
                f"{self.facility_name} allows {self.max_duration}s"
            )

    def lost(self, ref: JobRef) -> JobStatus:
        """The status of a ref this facility does not know."""
        return JobStatus(
            ref=ref,
            state=JobState.FAILED,
            detail=f"lost: facility {self.facility_name} does not know job {ref.job_id}",
        )

    def endpoint(self) -> str | None:
        """Where the facility's service is, for the planner's offers."""
        return None

    def task_types(self) -> frozenset[TaskType]:
        """The task types this facility runs (its kind's, unless its settings add some)."""
        return self.tasktypes

    def capabilities(self) -> Capabilities:
        """Task types and resource limits, for the planner."""
        return Capabilities(
            facility=self.facility_name,
            kind=self.kind,
            tasktypes=self.task_types(),
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
        """Submit a batch of jobs, all checked first; names submitted before are not again."""

    def submit_array(self, array: JobArray) -> list[JobRef]:
        """Submit a job array; facilities without native arrays submit its expansion."""
        return self.submit(array.expand())

    def reschedule(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Run failed jobs again under the same refs, where the backend can."""
        raise FatalError(f"facility {self.facility_name} cannot reschedule jobs")

    @abstractmethod
    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """The states of many jobs, in one call to the backend; same order; lost refs FAILED."""

    @abstractmethod
    def fetch(self, refs: Sequence[JobRef], dest: Path) -> list[JobOutputs]:
        """Bring the declared outputs and logs of finished jobs under `dest`/<job name>/."""

    @abstractmethod
    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Stop the jobs; final jobs are left as they are. Returns their states after."""

    @abstractmethod
    def logs(self, refs: Sequence[JobRef], limit: int = LOG_TAIL) -> list[JobLog]:
        """The end (at most `limit` bytes each) of the jobs' stdout and stderr, same order."""
