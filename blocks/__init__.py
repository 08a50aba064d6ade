"""Prefect Block types: facilities (where payload jobs run) and stores (where data lives).

Names load on first use (`from blocks import LocalFacility` imports no DiracX or Docker SDK);
`blocks.catalogue` imports them all and is the `prefect.collections` entry point.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.apptainer import ApptainerFacility
    from blocks.archive import ArchivedFile, LocalArchive, StoreBlock
    from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
    from blocks.dirac.facility import DiracFacility
    from blocks.docker import DockerFacility
    from blocks.facility import FacilityBlock
    from blocks.kubernetes import KubernetesFacility
    from blocks.local import LocalFacility
    from blocks.rucio import RucioStore
    from core.jobs import InputFile, JobArray, JobOutputs, JobRef, JobSpec, JobStatus, OutputFile
    from core.states import JobState

_WHERE = {
    "ApptainerFacility": "blocks.apptainer",
    "ArchivedFile": "blocks.archive",
    "LocalArchive": "blocks.archive",
    "StoreBlock": "blocks.archive",
    "FACILITY_TYPES": "blocks.catalogue",
    "STORE_TYPES": "blocks.catalogue",
    "DiracFacility": "blocks.dirac.facility",
    "DockerFacility": "blocks.docker",
    "FacilityBlock": "blocks.facility",
    "KubernetesFacility": "blocks.kubernetes",
    "LocalFacility": "blocks.local",
    "RucioStore": "blocks.rucio",
    "InputFile": "core.jobs",
    "JobArray": "core.jobs",
    "JobOutputs": "core.jobs",
    "JobRef": "core.jobs",
    "JobSpec": "core.jobs",
    "JobStatus": "core.jobs",
    "OutputFile": "core.jobs",
    "JobState": "core.states",
}

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
    "KubernetesFacility",
    "LocalArchive",
    "LocalFacility",
    "OutputFile",
    "RucioStore",
    "StoreBlock",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
