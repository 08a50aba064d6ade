"""ESAP data staging: bring Rucio data (and VO basket items) to an RSE or a facility.

plan (what, where it is, where it goes) -> stage (rule, wait, optional download) -> report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from blocks.basket import InputItems, Inputs, parse_inputs
from blocks.registry import load_facility, load_rucio_store
from blocks.rucio import RucioStore, StagedFile
from blocks.rucio.staging import Rule
from blocks.vo import FetchedFile
from core.errors import FatalError, UnknownBlockError
from core.units import parse_duration
from tasks.retry import unless_fatal
from tasks.stage import fetch_vo_inputs, locate_inputs, stage_inputs


class StagingPlan(BaseModel):
    """Where the data goes and where it is now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rse: str
    via_facility: str | None
    inputs: Inputs
    locations: list[str]


class DataStagingResult(BaseModel):
    """What a staging run left where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rse: str
    rules: list[Rule]
    files: list[StagedFile]
    vo: list[FetchedFile]
    total_bytes: int


def _target_rse(target: str, store: RucioStore) -> tuple[str, str | None]:
    try:
        facility = load_facility(target)
    except UnknownBlockError:
        store.check_rse(target)
        return target, None
    if not facility.close_rse:
        raise FatalError(
            f"facility {target!r} declares no close RSE: name an RSE, or set the "
            "facility's close_rse"
        )
    return facility.close_rse, target


@task(name="plan-staging", retries=1, retry_delay_seconds=5, retry_condition_fn=unless_fatal)
def plan_staging(
    items: list[str | dict[str, Any]], target: str, store: RucioStore, download: bool
) -> StagingPlan:
    """Resolve the inputs and the target RSE; say what goes where as a markdown artifact."""
    inputs = parse_inputs(items)
    if not inputs.dids and not inputs.vo:
        raise FatalError("nothing to stage: give at least one DID or basket item")
    if inputs.vo and not download:
        raise FatalError("VO basket items can only be downloaded: set download_to")
    rse, facility = _target_rse(target, store)
    locations = locate_inputs.fn(store, inputs.dids) if inputs.dids else []
    lines = [
        f"### Staging to `{rse}`" + (f" (close to facility `{facility}`)" if facility else ""),
        "",
        *(f"- Rucio `{did}`" for did in inputs.dids),
        *(f"- {v.archive} item {v.index}: {v.datalink or v.access_url}" for v in inputs.vo),
        "",
        "Data now at: " + (", ".join(f"`{r}`" for r in locations) or "(VO services only)"),
    ]
    create_markdown_artifact("\n".join(lines), key="staging-plan", description="Staging plan")
    return StagingPlan(rse=rse, via_facility=facility, inputs=inputs, locations=locations)


@task(name="report-staging")
def report_staging(result: DataStagingResult) -> None:
    """One table of every file: name, where, bytes, checksums."""
    rows = [
        {
            "name": f.did,
            "where": f.rse,
            "pfn_or_path": str(f.path or f.pfn),
            "bytes": f.size,
            "adler32": f.adler32,
            "md5": f.md5,
        }
        for f in result.files
    ] + [
        {
            "name": v.source,
            "where": "download",
            "pfn_or_path": str(v.path),
            "bytes": v.size,
            "adler32": v.adler32,
            "md5": None,
        }
        for v in result.vo
    ]
    create_table_artifact(
        rows,
        key="staging-report",
        description=f"{len(rows)} file(s), {result.total_bytes} bytes at {result.rse}",
    )


@flow(
    name="data-staging",
    flow_run_name="data-staging-to-{target}",
    persist_result=True,
    result_serializer="json",
)
def data_staging(
    inputs: Annotated[InputItems, Field(min_length=1)],
    target: str,
    lifetime: str | None = "7d",
    download_to: str | None = None,
    store: str | None = None,
    timeout: float = 3600.0,
) -> DataStagingResult:
    """Stage Rucio data and ESAP basket items to an RSE or next to a facility.

    Args:
        inputs: Rucio DIDs (scope:name; datasets and containers expand to their files) or
            ESAP basket items ({archive, record}).
        target: An RSE, or a facility whose close RSE receives the data.
        lifetime: How long the staging rule holds the data (e.g. 7d); empty for no expiry.
        download_to: Also download the files into this directory (needed for VO items).
        store: Rucio store to stage with; the only saved one when empty.
        timeout: Seconds to wait for the data to arrive at the RSE.
    """
    seconds = parse_duration(lifetime) if lifetime else None
    rucio = load_rucio_store(store)
    plan = plan_staging(inputs, target, rucio, download_to is not None)
    dest = Path(download_to).expanduser().resolve() if download_to else None
    staged = None
    if plan.inputs.dids:
        staged = stage_inputs(
            rucio,
            plan.inputs.dids,
            plan.rse,
            dest or Path("."),
            download=dest is not None,
            lifetime=seconds,
            timeout=timeout,
        )
    vo = fetch_vo_inputs(plan.inputs.vo, dest) if plan.inputs.vo and dest else []
    files = staged.files if staged else []
    result = DataStagingResult(
        rse=plan.rse,
        rules=staged.rules if staged else [],
        files=files,
        vo=vo,
        total_bytes=sum(f.size for f in files) + sum(v.size for v in vo),
    )
    report_staging(result)
    return result
