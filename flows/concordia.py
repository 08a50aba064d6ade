"""CONCORDIA: containerised CORSIKA; the image of the build configuration selected or built.

Runs go out as one job array, each with its own steering card; runs already archived for the
same configuration are not simulated again; every output is read back with corsikaio.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from blocks.archive import ArchivedFile, StoreBlock
from blocks.corsika import CorsikaImage
from blocks.registry import list_facilities, load_facility, load_store
from core.corsika import (
    PRIMARIES,
    RUN_PLACEHOLDER,
    BuildConfig,
    BuildOption,
    CpuFlavour,
    HighEnergyModel,
    LowEnergyModel,
    ParticleFile,
    Primary,
    SteeringCard,
    Telescope,
    Thinning,
    read_particle_file,
)
from core.jobs import InputFile, JobArray, JobOutputs, JobRef, JobSpec, OutputFile
from core.params import cross_checked, describe
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
from tasks.archive import archive_outputs, find_archived
from tasks.corsika import corsika_image

WORKFLOW = "concordia"
_OUTPUT = re.compile(r"^run(\d{6})/(DAT\d{6}|run\d{6}\.card|stdout\.log|metadata\.json)$")


def _image_reference(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,511}", value) or ".." in value:
        raise ValueError(
            "an image is a Docker reference or a SIF path: letters, digits and ._:/@+- only"
        )
    return value


ImageReference = Annotated[str, AfterValidator(_image_reference)]
BlockName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")]
"""A saved block's name, as Prefect allows them: lower-case letters, digits and dashes."""


class Experiment(StrEnum):
    """Who the showers are for; sets the default options and observation level."""

    CTA = "CTA"
    KM3NET = "KM3NeT"


DEFAULT_OPTIONS = {Experiment.CTA: (BuildOption.IACT,), Experiment.KM3NET: ()}
DEFAULT_LEVEL = {Experiment.CTA: 2200.0, Experiment.KM3NET: 0.0}
"""Observation level in metres: a CTA site; sea level for a neutrino telescope."""
DEFAULT_ARRAY = (
    Telescope(x=0, y=0, z=12.5, radius=12.5),
    Telescope(x=100, y=0, z=12.5, radius=12.5),
    Telescope(x=0, y=100, z=12.5, radius=12.5),
    Telescope(x=-100, y=0, z=12.5, radius=12.5),
)
"""An example IACT array (four large telescopes, 100 m apart), not a CTAO layout."""


class RunOutput(ParticleFile):
    """One simulated run: what its particle file says, its size, its card's digest."""

    particle_file_bytes: int
    card_sha256: str


class ConcordiaResult(BaseModel):
    """What a CONCORDIA run returns: enough to rerun exactly this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: Experiment
    build: BuildConfig
    image: str
    image_key: str
    image_digest: str
    image_built: bool
    configuration_key: str
    archive_key: str
    card_template_sha256: str
    requested: list[int]
    already_archived: list[int]
    simulated: list[RunOutput]
    failed: list[int]
    rescheduled: int
    facility: str | None
    store: str
    jobs: list[JobReport]
    archived: list[ArchivedFile]


def _build(values: dict[str, Any]) -> BuildConfig:
    experiment = Experiment(values["experiment"])
    options = values.get("options")
    return BuildConfig(
        version=values["corsika_version"],
        high_energy_model=values["high_energy_model"],
        low_energy_model=values["low_energy_model"],
        options=tuple(DEFAULT_OPTIONS[experiment] if options is None else options),
        cpu=values["cpu"],
    )


def _card(values: dict[str, Any], build: BuildConfig, run: int) -> SteeringCard:
    experiment = Experiment(values["experiment"])
    iact = BuildOption.IACT in build.options
    telescopes = values.get("telescopes")
    level = values.get("observation_level")
    return SteeringCard(
        run=run,
        showers=values["showers_per_run"],
        primary=PRIMARIES[values["primary"]],
        slope=values["spectral_slope"],
        energy_min=values["energy_range"][0],
        energy_max=values["energy_range"][1],
        zenith=values["zenith"],
        azimuth=values["azimuth"],
        viewcone=values.get("viewcone"),
        observation_level=DEFAULT_LEVEL[experiment] if level is None else level,
        magnetic_field=values["magnetic_field"],
        atmosphere=values.get("atmosphere"),
        scatter=(values["core_reuse"], values["scatter_radius"], 0.0)
        if iact or telescopes
        else None,
        telescopes=tuple(DEFAULT_ARRAY if telescopes is None and iact else telescopes or ()),
        thinning=values.get("thinning"),
    ).for_build(build)


def _prepare(values: dict[str, Any]) -> tuple[BuildConfig, SteeringCard]:
    """The build and the first run's card made from the parameters; ValueError naming a fault."""
    last = values["first_run"] + values["runs"] - 1
    if last > 999_999:
        raise ValueError(
            f"run numbers go up to 999999; first_run {values['first_run']} + runs "
            f"{values['runs']} goes past it"
        )
    try:
        build = _build(values)
        return build, _card(values, build, values["first_run"])
    except ValidationError as exc:
        raise ValueError(describe(exc).removeprefix("(root): ")) from None


def check_parameters(values: dict[str, Any]) -> None:
    """The parameters taken together (the boundary's cross-check): ValueError naming a fault."""
    _prepare(values)


def _run_name() -> str:
    """`concordia-proton-qgs2-urqmd-1-10`: primary, models and runs."""
    given = flow_run.get_parameters()
    first = int(given.get("first_run", 1))
    last = first + int(given.get("runs", 1)) - 1
    he = HighEnergyModel(given.get("high_energy_model", HighEnergyModel.QGSJET_II_04)).short
    le = LowEnergyModel(given.get("low_energy_model", LowEnergyModel.URQMD)).short
    return f"concordia-{given.get('primary', 'gamma')}-{he}-{le}-{first}-{last}"


def _task_type(facility: str | None) -> TaskType:
    """Apptainer images where the facility (or the only kind saved) runs them, else Docker."""
    if facility is not None:
        kinds = load_facility(facility).task_types()
    else:
        kinds = frozenset(t for f in list_facilities() for t in f.task_types())
    return TaskType.DOCKER if TaskType.DOCKER in kinds else TaskType.SINGULARITY


def _summary(result: ConcordiaResult) -> str:
    events = sum(r.showers for r in result.simulated)
    size = sum(r.particle_file_bytes for r in result.simulated)
    lines = [
        f"### CONCORDIA: {result.build.executable} (CORSIKA {result.build.version})",
        "",
        "| | |",
        "|---|---|",
        f"| runs requested | {len(result.requested)} |",
        f"| already archived (skipped) | {len(result.already_archived)} |",
        f"| simulated now | {len(result.simulated)} |",
        f"| showers read back | {events} |",
        f"| particle files | {size} bytes |",
        f"| failed | {len(result.failed)} |",
        f"| image | `{result.image}` ({'built' if result.image_built else 'selected'}) |",
        f"| image digest | `{result.image_digest or 'listed by the facility'}` |",
        f"| configuration key | `{result.configuration_key}` |",
        "",
        f"Outputs: store `{result.store}`, key `{result.archive_key}`",
    ]
    if result.failed:
        lines.append(f"Failed runs: {', '.join(map(str, result.failed[:50]))}")
    return "\n".join(lines)


def archived_runs(names: list[str]) -> set[int]:
    """Runs whose particle file and card are in the store already."""
    found: dict[int, set[str]] = {}
    for name in names:
        match = _OUTPUT.fullmatch(name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2)[:3])
    return {run for run, kinds in found.items() if {"DAT", "run"} <= kinds}


@flow(
    name=WORKFLOW,
    flow_run_name=_run_name,
    persist_result=True,
    result_serializer="json",
    on_cancellation=[cancel_facility_jobs],
)
@cross_checked(check_parameters)
def concordia(
    experiment: Experiment = Experiment.CTA,
    corsika_version: Annotated[int, Field(ge=60000, le=79999)] = 77550,
    high_energy_model: HighEnergyModel = HighEnergyModel.QGSJET_II_04,
    low_energy_model: LowEnergyModel = LowEnergyModel.URQMD,
    options: list[BuildOption] | None = None,
    cpu: CpuFlavour = CpuFlavour.GENERIC,
    primary: Primary = "gamma",
    energy_range: tuple[float, float] = (10.0, 100_000.0),
    spectral_slope: Annotated[float, Field(ge=-10, le=0, allow_inf_nan=False)] = -2.0,
    zenith: tuple[float, float] = (20.0, 20.0),
    azimuth: tuple[float, float] = (0.0, 0.0),
    viewcone: tuple[float, float] | None = None,
    observation_level: Annotated[float, Field(ge=-12_000, le=100_000, allow_inf_nan=False)]
    | None = None,
    magnetic_field: tuple[float, float] = (20.0, 42.8),
    atmosphere: Annotated[int, Field(ge=1, le=99)] | None = None,
    telescopes: list[Telescope] | None = None,
    scatter_radius: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 1500.0,
    core_reuse: Annotated[int, Field(ge=1, le=100)] = 1,
    thinning: Thinning | None = None,
    showers_per_run: Annotated[int, Field(ge=1, le=1_000_000)] = 10,
    runs: Annotated[int, Field(ge=1, le=100_000)] = 1,
    first_run: Annotated[int, Field(ge=1, le=999_999)] = 1,
    image: ImageReference | None = None,
    max_reschedules: Annotated[int, Field(ge=0, le=10)] = 1,
    facility: BlockName | None = None,
    store: BlockName | None = None,
    source: BlockName | None = None,
) -> ConcordiaResult:
    """Simulate air showers with CORSIKA in the container of its build configuration.

    Args:
        experiment: CTA (IACT build, 2200 m) or KM3NeT (no IACT, sea level).
        corsika_version: CORSIKA version, e.g. 77550 (must match the configured source).
        high_energy_model: QGSJET-II-04, QGSJET-III, EPOS-LHC or SIBYLL-2.3d.
        low_energy_model: URQMD, FLUKA or GHEISHA.
        options: CORSIKA options compiled in (IACT, THIN, CURVED, VOLUMEDET, VIEWCONE);
            empty: the experiment's.
        cpu: Instruction set the executable is built for (generic, avx2, avx512).
        primary: Primary particle, e.g. gamma, proton, helium, iron.
        energy_range: Lowest and highest primary energy, GeV.
        spectral_slope: Slope of the primary spectrum (ESLOPE), e.g. -2.
        zenith: Zenith angle range, degrees.
        azimuth: Azimuth range, degrees (CORSIKA's convention).
        viewcone: Inner and outer view-cone radius, degrees (needs the VIEWCONE option).
        observation_level: Observation level, metres; empty: the experiment's.
        magnetic_field: Earth's field BX and BZ at the site, µT.
        atmosphere: Atmosphere profile number (IACT builds).
        telescopes: IACT telescopes (x, y, z, radius in metres); empty: an example array.
        scatter_radius: Radius the shower cores are scattered over, metres (IACT).
        core_reuse: Times each shower is reused with another core (IACT).
        thinning: Thinning (fraction, largest weight, radius in metres; THIN builds).
        showers_per_run: Showers (NSHOW) per run.
        runs: Number of runs.
        first_run: First run number.
        image: Image to use as it is (skips select-or-build).
        max_reschedules: Times a failed run is rescheduled before it counts as failed.
        facility: Docker, Apptainer or DIRAC facility; the planner picks one when empty.
        store: Store to archive to; the local archive when empty.
        source: Saved CORSIKA Source block to build from; empty: the one named "default".
    """
    build, card = _prepare(dict(locals()))
    template = card.template()
    physics = hashlib.sha256(template.encode()).hexdigest()[:12]
    config_key = hashlib.sha256(f"{image or ''}\n{build.key('')}\n{physics}".encode()).hexdigest()
    archive_key = f"{WORKFLOW}/{experiment.value}/{build.executable}/{config_key[:16]}"
    archive = load_store(store)
    requested = list(range(first_run, first_run + runs))
    done = archived_runs(find_archived(archive, archive_key))
    todo = [r for r in requested if r not in done]
    chosen: dict[str, CorsikaImage] = {}
    result: PipelineResult | None = None
    if todo:
        request = TaskRequest(
            tasktype=_task_type(facility),
            taskinfo={"image": image or f"corsika:{build.executable}"},
            resources=Resources(mincores=1, maxcores=1, minduration="10m"),
        )

        def jobs(answer: PlanResponse) -> JobArray:
            assert answer.serviceinfo is not None
            found = corsika_image(answer.serviceinfo.facility, build, image, source)
            chosen["image"] = found
            return JobArray(
                template=JobSpec(
                    name=f"{job_prefix(WORKFLOW)}-%s",
                    image=found.reference,
                    executable="/bin/sh",
                    arguments=[
                        "-c",
                        f"sed s/{RUN_PLACEHOLDER}/%s/g card.template > run%s.card && "
                        f"exec {build.executable} < run%s.card",
                    ],
                    inputs=[InputFile(name="card.template", content=template)],
                    outputs=["DAT%s", "run%s.card"],
                    walltime=min(answer.resources.maxduration, 86400) if answer.resources else 3600,
                ),
                values=[f"{r:06d}" for r in todo],
            )

        result = execute(
            WORKFLOW,
            request,
            jobs,
            facility,
            store,
            max_reschedules=max_reschedules,
            archive_key=archive_key,
            archive_name=archive_by_run,
            archive_logs=True,
        )
    found = chosen.get("image")
    simulated = _read_back(result, card) if result else []
    archived = [*(result.archived if result else [])]
    if simulated:
        archived += _archive_metadata(archive, archive_key, simulated, build, found)
    summary = ConcordiaResult(
        experiment=experiment,
        build=build,
        image=found.reference if found else "",
        image_key=found.key if found else "",
        image_digest=found.digest if found else "",
        image_built=bool(found and found.built),
        configuration_key=config_key,
        archive_key=archive_key,
        card_template_sha256=hashlib.sha256(template.encode()).hexdigest(),
        requested=requested,
        already_archived=sorted(done & set(requested)),
        simulated=simulated,
        failed=sorted(
            run_number(j.name)
            for j in (result.jobs if result else [])
            if j.state is not JobState.COMPLETED
        ),
        rescheduled=sum(j.reschedules for j in (result.jobs if result else [])),
        facility=result.facility if result else None,
        store=result.store if result else archive.store_name,
        jobs=result.jobs if result else [],
        archived=archived,
    )
    create_markdown_artifact(
        _summary(summary), key="concordia-summary", description="CONCORDIA run summary"
    )
    if result:
        result.raise_for_failures()
    return summary


def _read_back(result: PipelineResult, card: SteeringCard) -> list[RunOutput]:
    """Each completed run's particle file read with corsikaio, checked against its card."""
    completed = {j.name for j in result.jobs if j.state is JobState.COMPLETED}
    outputs: list[RunOutput] = []
    for item in result.outputs:
        if item.ref.name not in completed:
            continue
        run = run_number(item.ref.name)
        files = {f.name.rsplit("/", 1)[-1]: f.path for f in item.files}
        particles = files.get(f"DAT{run:06d}")
        card_file = files.get(f"run{run:06d}.card")
        if particles is None or card_file is None:
            continue
        read = read_particle_file(particles)
        if read.run != run or read.showers != card.showers:
            raise ValueError(
                f"run {run}: its particle file holds run {read.run} with {read.showers} "
                f"showers; the card asked for {card.showers}"
            )
        if card_file.read_text() != card.model_copy(update={"run": run}).render():
            raise ValueError(f"run {run}: the card that came back is not the card sent")
        outputs.append(
            RunOutput(
                **read.model_dump(),
                particle_file_bytes=particles.stat().st_size,
                card_sha256=hashlib.sha256(card_file.read_bytes()).hexdigest(),
            )
        )
    return sorted(outputs, key=lambda r: r.run)


def _archive_metadata(
    archive: StoreBlock,
    archive_key: str,
    runs: list[RunOutput],
    build: BuildConfig,
    image: CorsikaImage | None,
) -> list[ArchivedFile]:
    """run<N>/metadata.json beside each run's outputs: run, primary, energies, models, image."""
    with tempfile.TemporaryDirectory(prefix="esap-concordia-") as tmp:
        files = []
        for run in runs:
            path = Path(tmp) / f"{run.run:06d}.json"
            path.write_text(
                json.dumps(
                    {
                        **run.model_dump(),
                        "build": build.model_dump(mode="json"),
                        "executable": build.executable,
                        "image": image.reference if image else "",
                        "image_key": image.key if image else "",
                        "image_digest": image.digest if image else "",
                    },
                    indent=2,
                    sort_keys=True,
                )
            )
            files.append(OutputFile(name=f"run{run.run:06d}/metadata.json", path=path))
        ref = JobRef(facility="archive", job_id="metadata", name="metadata")
        return archive_outputs(archive, archive_key, [JobOutputs(ref=ref, files=files)])
