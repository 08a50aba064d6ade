"""CTA Monte Carlo production, after CTADIRAC's MCPipeJob: one job per run, as a job array.

Runs already archived for the same configuration are found and not simulated again.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Annotated

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from blocks.archive import ArchivedFile
from blocks.registry import load_store
from containers import payload
from core.jobs import InputFile, JobArray, JobSpec
from core.states import JobState
from flows.pipeline import (
    JobReport,
    PipelineResult,
    archive_by_run,
    cancel_facility_jobs,
    execute,
    job_prefix,
    run_number,
)
from planner.models import PlanResponse, Resources, TaskRequest, TaskType
from tasks.archive import find_archived

WORKFLOW = "cta-mc-production"
_RUN_FILE = re.compile(r"^run(\d{6})/run\d{6}\.(corsika\.json|simtel\.json)$")


class Site(StrEnum):
    """CTAO array sites."""

    PARANAL = "Paranal"
    LAPALMA = "LaPalma"


class Particle(StrEnum):
    """Primary particles."""

    GAMMA = "gamma"
    GAMMA_DIFFUSE = "gamma-diffuse"
    ELECTRON = "electron"
    PROTON = "proton"
    HELIUM = "helium"
    MUON = "muon"


class Pointing(StrEnum):
    """Telescope pointing azimuth."""

    NORTH = "North"
    SOUTH = "South"
    EAST = "East"
    WEST = "West"


class Moon(StrEnum):
    """Moon phase; sets the night-sky background level."""

    DARK = "dark"
    HALF = "half"
    FULL = "full"

    @property
    def nsb(self) -> float:
        """Night-sky background relative to dark sky, as CTADIRAC uses it."""
        return {"dark": 1.0, "half": 5.0, "full": 19.0}[self.value]


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ProductionConfig(BaseModel):
    """Everything that makes two runs with the same number the same simulation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Site
    particle: Particle
    pointing: Pointing
    zenith_angle: float = Field(ge=0, le=70)
    moon: Moon
    array_layout: Name
    showers_per_run: int = Field(ge=1, le=10_000_000)
    corsika_only: bool
    software_version: Name

    @property
    def key(self) -> str:
        """A short digest of the configuration: where its runs are archived."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def archive_key(self) -> str:
        """<workflow>/<site>/<particle>/<digest>."""
        return f"{WORKFLOW}/{self.site.value}/{self.particle.value}/{self.key}"

    def outputs(self) -> list[str]:
        """The files every run must produce (the steering card goes with them)."""
        names = ["run%s.corsika.input", "run%s.corsika.json"]
        return names if self.corsika_only else [*names, "run%s.simtel.json"]


class CTAMCResult(BaseModel):
    """What a production run returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: ProductionConfig
    archive_key: str
    requested: list[int]
    already_archived: list[int]
    simulated: list[int]
    failed: list[int]
    rescheduled: int
    facility: str | None
    store: str
    jobs: list[JobReport]
    archived: list[ArchivedFile]


def archived_runs(config: ProductionConfig, names: list[str]) -> set[int]:
    """Run numbers whose every required output is in the store already."""
    wanted = {"corsika.json"} if config.corsika_only else {"corsika.json", "simtel.json"}
    found: dict[int, set[str]] = {}
    for name in names:
        match = _RUN_FILE.fullmatch(name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    return {run for run, kinds in found.items() if wanted <= kinds}


def _summary(config: ProductionConfig, result: CTAMCResult) -> str:
    rows = [
        ("runs requested", len(result.requested)),
        ("already archived (skipped)", len(result.already_archived)),
        ("simulated now", len(result.simulated)),
        ("failed", len(result.failed)),
        ("reschedules", result.rescheduled),
    ]
    lines = [
        f"### CTA MC production: {config.particle.value} at {config.site.value}, "
        f"zenith {config.zenith_angle:g}, {config.moon.value} moon",
        "",
        "| | runs |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"Outputs: store `{result.store}`, key `{result.archive_key}`",
    ]
    if result.failed:
        lines.append(f"Failed runs: {', '.join(map(str, result.failed[:50]))}")
    return "\n".join(lines)


def _run_name() -> str:
    """`cta-mc-proton-Paranal-1000-1099`: what a production manager looks for."""
    given = flow_run.get_parameters()
    first = int(given.get("first_run", 1))
    last = first + int(given.get("runs", 1)) - 1
    particle, site = given.get("particle", Particle.GAMMA), given.get("site", Site.PARANAL)
    return f"cta-mc-{Particle(particle).value}-{Site(site).value}-{first}-{last}"


@flow(
    name=WORKFLOW,
    flow_run_name=_run_name,
    persist_result=True,
    result_serializer="json",
    on_cancellation=[cancel_facility_jobs],
)
def cta_mc_production(
    site: Site = Site.PARANAL,
    particle: Particle = Particle.GAMMA,
    pointing: Pointing = Pointing.NORTH,
    zenith_angle: Annotated[float, Field(ge=0, le=70)] = 20.0,
    moon: Moon = Moon.DARK,
    array_layout: Name = "Prod6-Hyperarray",
    runs: Annotated[int, Field(ge=1, le=100_000)] = 10,
    first_run: Annotated[int, Field(ge=1, le=999_999)] = 1,
    showers_per_run: Annotated[int, Field(ge=1, le=10_000_000)] = 100,
    corsika_only: bool = False,
    software_version: Name = "prod6",
    max_reschedules: Annotated[int, Field(ge=0, le=10)] = 1,
    facility: str | None = None,
    store: str | None = None,
) -> CTAMCResult:
    """Simulate `runs` runs from `first_run` on, skipping runs already archived.

    Args:
        site: Array site (Paranal or LaPalma).
        particle: Primary particle.
        pointing: Pointing azimuth (North, South, East, West).
        zenith_angle: Zenith angle in degrees (0-70).
        moon: Moon phase: dark, half or full (night-sky background 1, 5, 19).
        array_layout: Telescope layout name, e.g. Prod6-Hyperarray.
        runs: Number of runs.
        first_run: First run number.
        showers_per_run: Showers (NSHOW) per run.
        corsika_only: Run CORSIKA only, without sim_telarray.
        software_version: Simulation software version or image tag.
        max_reschedules: Times a failed run is rescheduled before it counts as failed.
        facility: Facility to run on; the planner picks the best one when empty.
        store: Store to archive to; the local archive when empty.
    """
    config = ProductionConfig(
        site=site,
        particle=particle,
        pointing=pointing,
        zenith_angle=zenith_angle,
        moon=moon,
        array_layout=array_layout,
        showers_per_run=showers_per_run,
        corsika_only=corsika_only,
        software_version=software_version,
    )
    requested = list(range(first_run, first_run + runs))
    if requested[-1] > 999_999:
        raise ValueError(
            f"run numbers go up to 999999; first_run {first_run} + runs {runs} goes past it"
        )
    done = archived_runs(config, find_archived(load_store(store), config.archive_key))
    todo = [r for r in requested if r not in done]
    result: PipelineResult | None = None
    if todo:
        request = TaskRequest(
            tasktype=TaskType.EXECUTABLE,
            taskinfo={"executable": "python3"},
            resources=Resources(mincores=1, maxcores=1, minduration="10m"),
        )

        def jobs(answer: PlanResponse) -> JobArray:
            template = JobSpec(
                name=f"{job_prefix('cta-mc')}-%s",
                executable="python3",
                arguments=[
                    "cta_mc.py",
                    "--run",
                    "%s",
                    "--site",
                    site.value,
                    "--particle",
                    particle.value,
                    "--pointing",
                    pointing.value,
                    "--zenith",
                    f"{zenith_angle:g}",
                    "--nsb",
                    f"{moon.nsb:g}",
                    "--layout",
                    array_layout,
                    "--showers",
                    str(showers_per_run),
                    "--version",
                    software_version,
                    *(["--corsika-only"] if corsika_only else []),
                ],
                inputs=[InputFile(name="cta_mc.py", source=payload("cta_mc.py"))],
                outputs=config.outputs(),
                walltime=min(answer.resources.maxduration, 86400) if answer.resources else 3600,
            )
            return JobArray(template=template, values=[f"{r:06d}" for r in todo])

        result = execute(
            WORKFLOW,
            request,
            jobs,
            facility,
            store,
            max_reschedules=max_reschedules,
            archive_key=config.archive_key,
            archive_name=archive_by_run,
            archive_logs=True,
        )
    jobs_done = result.jobs if result else []
    summary = CTAMCResult(
        config=config,
        archive_key=config.archive_key,
        requested=requested,
        already_archived=sorted(done & set(requested)),
        simulated=sorted(run_number(j.name) for j in jobs_done if j.state is JobState.COMPLETED),
        failed=sorted(run_number(j.name) for j in jobs_done if j.state is not JobState.COMPLETED),
        rescheduled=sum(j.reschedules for j in jobs_done),
        facility=result.facility if result else None,
        store=result.store if result else load_store(store).store_name,
        jobs=jobs_done,
        archived=result.archived if result else [],
    )
    create_markdown_artifact(
        _summary(config, summary), key="cta-mc-summary", description="CTA MC production summary"
    )
    if result:
        result.raise_for_failures()
    return summary
