"""Prefect Block types: facilities (where payload jobs run) and stores (where data lives).

Importing this package registers the block types with Prefect (it is the project's
`prefect.collections` entry point).
"""

from __future__ import annotations

from blocks.apptainer import ApptainerFacility
from blocks.archive import ArchivedFile, LocalArchive, StoreBlock
from blocks.dirac.facility import DiracFacility
from blocks.docker import DockerFacility
from blocks.facility import FacilityBlock
from blocks.jobs import (
    InputFile,
    JobArray,
    JobOutputs,
    JobRef,
    JobSpec,
    JobStatus,
    OutputFile,
)
from blocks.local import LocalFacility
from blocks.rucio import RucioStore
from blocks.states import JobState

FACILITY_TYPES: tuple[type[FacilityBlock], ...] = (
    LocalFacility,
    DiracFacility,
    DockerFacility,
    ApptainerFacility,
)
STORE_TYPES: tuple[type[StoreBlock], ...] = (LocalArchive, RucioStore)

__all__ = [
    "FACILITY_TYPES",
    "STORE_TYPES",
    "ApptainerFacility",
    "ArchivedFile",
    "DiracFacility",
    "DockerFacility",
    "FacilityBlock",
    "InputFile",
    "JobArray",
    "JobOutputs",
    "JobRef",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LocalArchive",
    "LocalFacility",
    "OutputFile",
    "RucioStore",
    "StoreBlock",
]
