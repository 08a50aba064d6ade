"""Every facility and store block type, imported together: Prefect's collection entry point.

Importing this module registers them all (and loads every backend SDK).
"""

from __future__ import annotations

from blocks.apptainer import ApptainerFacility
from blocks.archive import LocalArchive, StoreBlock
from blocks.dirac.facility import DiracFacility
from blocks.docker import DockerFacility
from blocks.facility import FacilityBlock
from blocks.kubernetes import KubernetesFacility
from blocks.local import LocalFacility
from blocks.rucio import RucioStore

FACILITY_TYPES: tuple[type[FacilityBlock], ...] = (
    LocalFacility,
    DiracFacility,
    DockerFacility,
    ApptainerFacility,
    KubernetesFacility,
)
STORE_TYPES: tuple[type[StoreBlock], ...] = (LocalArchive, RucioStore)
