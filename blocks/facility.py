"""The one facility protocol every backend implements (local, DIRAC, Docker, ...).

Bulk by default: submit a batch, poll many jobs in one call, fetch, cancel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from prefect.blocks.core import Block

from blocks.errors import FatalError
from blocks.jobs import JobArray, JobOutputs, JobRef, JobSpec, JobStatus
from planner.models import Capabilities


class FacilityBlock(Block, ABC):
    """A place where payload jobs run, configured as a Prefect Block."""

    kind: str = ""

    @property
    def facility_name(self) -> str:
        """The saved block's name, or the facility kind for an unsaved default."""
        return self._block_document_name or self.kind

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """Task types and resource limits, for the planner."""

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
