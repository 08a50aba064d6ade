"""The staging tasks: find where input data is, stage it for a facility, fetch VO datasets.

Progress and results are artifacts; what jobs receive is an `inputs.json` manifest plus files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from blocks.basket import VoItem
from blocks.rucio import RucioStore, StagedInputs, StageProgress
from blocks.vo import FetchedFile, fetch_vo
from core.jobs import InputFile
from tasks.keys import artifact_key
from tasks.retry import unless_fatal

MANIFEST = "inputs.json"
INPUT_DIR = "inputs"


@task(name="locate-inputs", retries=2, retry_delay_seconds=5, retry_condition_fn=unless_fatal)
def locate_inputs(store: RucioStore, dids: Sequence[str]) -> list[str]:
    """RSEs holding the data (whole copies first), for the planner to prefer facilities near."""
    return store.locations(dids)


@task(name="stage-inputs", retries=1, retry_delay_seconds=10, retry_condition_fn=unless_fatal)
def stage_inputs(
    store: RucioStore,
    dids: Sequence[str],
    rse: str | None,
    dest: Path,
    *,
    download: bool,
    lifetime: int | Literal["default"] | None = "default",
    timeout: float = 3600.0,
    poll_interval: float = 2.0,
) -> StagedInputs:
    """Stage `dids` to `rse` (a rule, waited on) or, with no RSE, download them from anywhere.

    `download` also copies staged files into `dest`. A table artifact lists every file.
    """
    logger = get_run_logger()
    if rse is None:
        staged = store.fetch(dids, dest)
    else:
        progress = cast(
            UUID,
            create_progress_artifact(
                progress=0.0, key=artifact_key("staging", rse), description=f"staging to {rse}"
            ),
        )
        last: list[StageProgress] = []

        def report(now: StageProgress) -> None:
            if not last or last[-1].ok != now.ok or last[-1].total != now.total:
                update_progress_artifact(progress, progress=100.0 * now.ok / max(now.total, 1))
                logger.info(
                    "%d of %d file(s) at %s (%d replicating, %d stuck)",
                    now.ok,
                    now.total,
                    rse,
                    now.replicating,
                    now.stuck,
                )
            last[:] = [now]

        staged = store.stage_in(
            dids,
            rse,
            lifetime=lifetime,
            timeout=timeout,
            poll_interval=poll_interval,
            download_to=dest if download else None,
            progress=report,
            warn=logger.warning,
        )
        reused = sum(r.reused for r in staged.rules)
        logger.info("%d rule(s) at %s, %d reused", len(staged.rules), rse, reused)
    create_table_artifact(
        [
            {
                "did": f.did,
                "bytes": f.size,
                "adler32": f.adler32,
                "md5": f.md5,
                "rse": f.rse,
                "pfn": f.pfn,
                "path": str(f.path) if f.path else None,
            }
            for f in staged.files
        ],
        key=artifact_key("staged-inputs"),
        description=f"{len(staged.files)} file(s), {staged.total_bytes} bytes"
        + (f" at {staged.rse}" if staged.rse else " downloaded"),
    )
    return staged


@task(name="fetch-vo-inputs", retries=2, retry_delay_seconds=5, retry_condition_fn=unless_fatal)
def fetch_vo_inputs(items: Sequence[VoItem], dest: Path) -> list[FetchedFile]:
    """Fetch VO basket items with pyvo into `dest`; a table artifact lists them."""
    fetched = fetch_vo(items, dest)
    create_table_artifact(
        [f.model_dump(mode="json", exclude={"path"}) for f in fetched],
        key=artifact_key("vo-inputs"),
        description=f"{len(fetched)} VO dataset(s)",
    )
    return fetched


def job_inputs(staged: StagedInputs | None, vo: Sequence[FetchedFile]) -> list[InputFile]:
    """What each job receives: the `inputs.json` manifest, downloaded files under inputs/.

    The manifest lists every Rucio file (DID, size, checksums, RSE, PFN and, when
    downloaded, its path in the job directory) and every VO dataset.
    """
    files: list[InputFile] = []
    rucio = []
    for item in staged.files if staged else []:
        path = None
        if item.path is not None:
            path = f"{INPUT_DIR}/{item.did.replace(':', '/', 1)}"
            files.append(InputFile(name=path, source=item.path))
        rucio.append({**item.model_dump(mode="json", exclude={"path"}), "path": path})
    vo_entries = []
    for fetched in vo:
        path = f"{INPUT_DIR}/{fetched.name}"
        files.append(InputFile(name=path, source=fetched.path))
        vo_entries.append({**fetched.model_dump(mode="json", exclude={"path"}), "path": path})
    manifest = json.dumps({"rucio": rucio, "vo": vo_entries}, indent=2)
    return [InputFile(name=MANIFEST, content=manifest), *files]
