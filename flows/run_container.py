"""Run one container image (Docker/OCI or Singularity/Apptainer) as a job, archive what it wrote.

The workflow behind the ExecutionBroker's docker-container and singularity-container offers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from blocks.archive import ArchivedFile
from blocks.basket import InputItems
from core.jobs import Environment, JobSpec, RelativePath
from core.units import MAX_CORES, Duration, Memory
from flows.pipeline import JobReport, cancel_facility_jobs, execute, job_prefix
from planner.models import PlanResponse, Resources, TaskRequest, TaskType

RUNTIMES: dict[str, TaskType] = {"docker": TaskType.DOCKER, "singularity": TaskType.SINGULARITY}


class ContainerResult(BaseModel):
    """What a container run returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow_run_id: str
    facility: str
    store: str
    image: str
    job: JobReport
    archived: list[ArchivedFile]


def _run_name() -> str:
    """`run-container-<image>`, the image's last path part (`corsika:7.7`, `payload.sif`)."""
    image = str(flow_run.get_parameters().get("image", "")).rstrip("/")
    return f"run-container-{image.rsplit('/', 1)[-1][:60]}"


@flow(
    name="run-container",
    flow_run_name=_run_name,
    persist_result=True,
    result_serializer="json",
    on_cancellation=[cancel_facility_jobs],
)
def run_container(
    image: str,
    runtime: Literal["docker", "singularity"] = "docker",
    command: list[str] | None = None,
    environment: Environment | None = None,
    cores: Annotated[int, Field(ge=1, le=MAX_CORES)] = 1,
    memory: Memory | None = None,
    walltime: Duration = 3600,
    outputs: list[RelativePath] | None = None,
    facility: str | None = None,
    store: str | None = None,
    inputs: InputItems | None = None,
    input_store: str | None = None,
) -> ContainerResult:
    """Run a container image once on a Docker or Apptainer facility and archive its outputs.

    Args:
        image: Docker image reference, or for singularity a SIF path or URI (https://, oras://).
        runtime: docker (Docker/OCI engines) or singularity (Apptainer/Singularity).
        command: Program and arguments; empty runs the image's own entrypoint or runscript.
        environment: Variables set inside the container (no secrets: parameters are visible).
        cores: CPU cores the container is given.
        memory: Memory limit, e.g. 2G; none for no limit but the facility's.
        walltime: Wall-time limit, e.g. 30m or 2h (seconds as a number).
        outputs: Files (glob patterns, relative to the working directory) to archive; the
            container's stdout and stderr are archived in any case.
        facility: Facility to run on; the planner picks one that runs the runtime when empty.
        store: Store to archive to; the local archive when empty.
        inputs: Rucio DIDs or ESAP basket items placed in the working directory first.
        input_store: Rucio store the DIDs are staged with; the only saved one when empty.
    """
    request = TaskRequest(
        tasktype=RUNTIMES[runtime],
        taskinfo={"image": image},
        resources=Resources(
            mincores=cores,
            maxcores=cores,
            minmemory=memory or 0,
            minduration=walltime,
        ),
    )
    command = command or []

    def specs(answer: PlanResponse) -> list[JobSpec]:
        return [
            JobSpec(
                name=f"{job_prefix('run-container')}-0",
                image=image,
                executable=command[0] if command else "",
                arguments=command[1:],
                env=environment or {},
                cores=cores,
                memory=memory,
                walltime=walltime,
                outputs=outputs or [],
            )
        ]

    result = execute(
        "run-container",
        request,
        specs,
        facility,
        store,
        archive_logs=True,
        inputs=inputs or [],
        input_store=input_store,
    )
    result.raise_for_failures()
    return ContainerResult(
        flow_run_id=result.flow_run_id,
        facility=result.facility,
        store=result.store,
        image=image,
        job=result.jobs[0],
        archived=result.archived,
    )
