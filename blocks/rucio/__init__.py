"""Rucio, the ESCAPE data lake: the store block, data identifiers and stage-in.

`RucioStore` archives outputs and stages inputs; the modules below it hold the pieces.
"""

from __future__ import annotations

from blocks.rucio.dids import Did
from blocks.rucio.staging import StagedFile, StagedInputs, StageProgress, StagingError
from blocks.rucio.store import RucioStore

__all__ = ["Did", "RucioStore", "StageProgress", "StagedFile", "StagedInputs", "StagingError"]
