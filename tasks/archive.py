"""The archive task: keep a run's outputs in a store and show them as a table artifact.

Archiving is idempotent, so the task can retry freely.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from blocks.archive import ArchivedFile, StoreBlock
from core.jobs import JobOutputs
from core.units import human_memory
from tasks.keys import artifact_key
from tasks.retry import unless_fatal

ARCHIVED = "archived-outputs"
"""The kind of artifact that lists a run's archived files (the gateway's UWS results)."""


@task(
    name="archive-outputs",
    task_run_name="archive-outputs to {store.store_name}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=unless_fatal,
)
def archive_outputs(
    store: StoreBlock, run_key: str, outputs: Sequence[JobOutputs]
) -> list[ArchivedFile]:
    """Archive every output file under `run_key`; record file, size, checksums, location."""
    files = [f for item in outputs for f in item.files]
    archived = store.archive(run_key, files)
    create_table_artifact(
        [a.model_dump() for a in archived],
        key=artifact_key(ARCHIVED),
        description=f"{len(archived)} file(s) archived to {store.store_name}",
    )
    logger = get_run_logger()
    for item in archived:
        logger.info("archived %s (%s) to %s", item.name, human_memory(item.size), item.location)
    return archived


@task(name="find-archived", retries=2, retry_delay_seconds=5, retry_condition_fn=unless_fatal)
def find_archived(store: StoreBlock, run_key: str) -> list[str]:
    """Names of the files a store already keeps under `run_key`."""
    return store.existing(run_key)
