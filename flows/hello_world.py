"""ESAP "Hello World": the job echoes its parameters as JSON with "type": "batch.submit".

The smallest whole workflow: plan -> run one payload job -> archive its output file.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict

from blocks.archive import ArchivedFile
from blocks.basket import InputItems
from containers import payload
from core.jobs import InputFile, JobSpec, LfnDirectory, StorageElement
from core.units import Duration
from flows.pipeline import JobReport, cancel_facility_jobs, execute, job_prefix
from planner.models import PlanResponse, Resources, TaskRequest, TaskType

OUTPUT_FILE = "output.json"


class HelloWorldResult(BaseModel):
    """What a Hello World run returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow_run_id: str
    facility: str
    store: str
    job: JobReport
    output: dict[str, Any]
    archived: list[ArchivedFile]


@flow(
    name="hello-world",
    flow_run_name="hello-world-{Parameter1}",
    persist_result=True,
    result_serializer="json",
    on_cancellation=[cancel_facility_jobs],
)
def hello_world(
    Parameter1: int = 1,
    Parameter2: int = 2,
    Parameter3: int = 33,
    Parameter4: str = "GG",
    Parameter5: str = "test",
    Parameter6: str = "default",
    walltime: Duration | None = None,
    output_se: StorageElement | None = None,
    output_path: LfnDirectory | None = None,
    facility: str | None = None,
    store: str | None = None,
    inputs: InputItems | None = None,
    input_store: str | None = None,
) -> HelloWorldResult:
    """Run ESAP's Hello World payload on a facility and archive what it echoes.

    Args:
        Parameter1: First demo parameter (ESAP default 1).
        Parameter2: Second demo parameter (ESAP default 2).
        Parameter3: Third demo parameter (ESAP default 33).
        Parameter4: Fourth demo parameter (ESAP default "GG").
        Parameter5: Fifth demo parameter (ESAP default "test").
        Parameter6: Sixth demo parameter (ESAP default "default").
        walltime: Wall time of the job (ESAP's cputime); the planner's offer when empty.
        output_se: DIRAC only: also keep the output file on this storage element.
        output_path: DIRAC only: the LFN directory for that copy (else the facility's).
        facility: Facility to run on; the planner picks the best one when empty.
        store: Store to archive to; the local archive when empty.
        inputs: Rucio DIDs (scope:name) or ESAP basket items the job reads and reports.
        input_store: Rucio store the DIDs are staged with; the only saved one when empty.
    """
    parameters = {
        "Parameter1": Parameter1,
        "Parameter2": Parameter2,
        "Parameter3": Parameter3,
        "Parameter4": Parameter4,
        "Parameter5": Parameter5,
        "Parameter6": Parameter6,
    }
    request = TaskRequest(
        tasktype=TaskType.EXECUTABLE,
        taskinfo={"executable": "python3"},
        resources=Resources(
            mincores=1, maxcores=1, minduration=walltime or "1m", maxduration=walltime or "10m"
        ),
    )

    keep_on_se = output_se is not None or output_path is not None

    def specs(answer: PlanResponse) -> list[JobSpec]:
        offered = answer.resources.maxduration if answer.resources else 600
        return [
            JobSpec(
                name=f"{job_prefix('hello-world')}-0",
                executable="python3",
                arguments=["hello_world.py", "parameters.json", OUTPUT_FILE],
                inputs=[
                    InputFile(name="hello_world.py", source=payload("hello_world.py")),
                    InputFile(name="parameters.json", content=json.dumps(parameters)),
                ],
                outputs=[OUTPUT_FILE],
                output_data=[OUTPUT_FILE] if keep_on_se else [],
                output_se=output_se,
                output_path=output_path,
                walltime=walltime or offered,
            )
        ]

    result = execute(
        "hello-world",
        request,
        specs,
        facility,
        store,
        inputs=inputs or [],
        input_store=input_store,
    )
    result.raise_for_failures()
    output_file = next(
        f for o in result.outputs for f in o.files if f.name.endswith(f"/{OUTPUT_FILE}")
    )
    return HelloWorldResult(
        flow_run_id=result.flow_run_id,
        facility=result.facility,
        store=result.store,
        job=result.jobs[0],
        output=json.loads(output_file.path.read_text()),
        archived=result.archived,
    )
