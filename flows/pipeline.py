"""The steps every workflow shares: plan, submit, wait, collect outputs, archive.

Workflows build a task request and job specs; this module runs them and reports back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict

from blocks.archive import ArchivedFile
from blocks.basket import InputItem, parse_inputs
from blocks.registry import load_facility, load_rucio_store, load_store
from core.files import write_json
from core.jobs import InputFile, JobArray, JobOutputs, JobRef, JobSpec, JobStatus, OutputFile
from core.params import printable
from core.settings import home
from core.states import JobState
from planner.models import PlanResponse, TaskRequest
from tasks.archive import archive_outputs
from tasks.callback import callback_environment
from tasks.jobs import collect_outputs, final_statuses, submit_jobs, wait_for_jobs
from tasks.plan import plan
from tasks.stage import fetch_vo_inputs, job_inputs, locate_inputs, stage_inputs


class JobsFailed(RuntimeError):
    """Some payload jobs did not complete; the message names them and quotes their stderr."""


class JobReport(BaseModel):
    """One job as the result of a run shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    job_id: str
    state: JobState
    detail: str
    exit_code: int | None
    reschedules: int = 0


class PipelineResult(BaseModel):
    """What the shared steps produced: the plan, the jobs, their outputs, the archive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow_run_id: str
    facility: str
    store: str
    jobs: list[JobReport]
    outputs: list[JobOutputs]
    archived: list[ArchivedFile]
    failures: list[str]

    def raise_for_failures(self) -> None:
        """JobsFailed naming every job that did not complete with all its outputs."""
        if self.failures:
            raise JobsFailed(
                f"{len(self.failures)} of {len(self.jobs)} job(s) failed: "
                + "; ".join(self.failures[:10])
            )


def run_number(job_name: str) -> int:
    """The run number a job array's job is named for (`<prefix>-<NNNNNN>`)."""
    return int(job_name.rsplit("-", 1)[1])


def archive_by_run(ref: JobRef, item: OutputFile) -> str:
    """`run<NNNNNN>/<file>`: where a production's outputs go, whichever job made them."""
    return f"run{run_number(ref.name):06d}/{item.name.rsplit('/', 1)[-1]}"


def run_key(workflow: str) -> str:
    """The archive key of this flow run: <workflow>/<flow run id>."""
    return f"{workflow}/{flow_run.get_id() or 'local'}"


def job_prefix(workflow: str) -> str:
    """Deterministic job-name prefix for this flow run (the facilities' idempotency key)."""
    return f"{workflow}-{(flow_run.get_id() or 'local')[:8]}"


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.exists():
        return ""
    return printable(" | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]))


def _problems(statuses: Sequence[JobStatus], outputs: Sequence[JobOutputs]) -> list[str]:
    by_name = {o.ref.name: o for o in outputs}
    problems = []
    for status in statuses:
        item = by_name.get(status.ref.name)
        if status.state is not JobState.COMPLETED:
            stderr = _tail(item.stderr) if item else ""
            problems.append(
                f"{status.ref.name}: {status.state.value.lower()} "
                f"({status.detail or 'no detail'})" + (f"; stderr: {stderr}" if stderr else "")
            )
        elif item and item.refused:
            problems.append(
                f"{status.ref.name}: outputs refused (only regular files inside the job's "
                f"folder are collected): {'; '.join(item.refused[:5])}"
            )
        elif item and item.missing:
            problems.append(f"{status.ref.name}: completed without {', '.join(item.missing)}")
    return problems


def _logs(outputs: JobOutputs) -> list[OutputFile]:
    """The job's non-empty stdout and stderr (an empty log says nothing worth keeping)."""
    streams = (("stdout.log", outputs.stdout), ("stderr.log", outputs.stderr))
    return [
        OutputFile(name=f"{outputs.ref.name}/{name}", path=path)
        for name, path in streams
        if path is not None and path.stat().st_size > 0
    ]


def _kept(
    outputs: JobOutputs,
    complete: bool,
    logs: bool,
    name: Callable[[JobRef, OutputFile], str] | None,
) -> JobOutputs:
    """What of a job is archived: its outputs (named by `name`), and its logs if asked for.

    A job that did not complete keeps only its logs, under its own name (unique to the flow
    run), so that archiving a later run of it never meets a file of the same name.
    """
    if not complete:
        return outputs.model_copy(update={"files": _logs(outputs)})
    files = [*outputs.files, *(_logs(outputs) if logs else [])]
    if name is not None:
        files = [f.model_copy(update={"name": name(outputs.ref, f)}) for f in files]
    return outputs.model_copy(update={"files": files})


def _each(
    specs: Sequence[JobSpec] | JobArray, change: Callable[[JobSpec], dict[str, Any]]
) -> list[JobSpec] | JobArray:
    """Every spec (or the array's template) with the fields `change` gives it."""
    if isinstance(specs, JobArray):
        template = specs.template
        return specs.model_copy(update={"template": template.model_copy(update=change(template))})
    return [s.model_copy(update=change(s)) for s in specs]


def jobs_record(run_id: str) -> Path:
    """Where a flow run notes the facility jobs it owns, keyed by the run alone."""
    return home() / "runs" / ".facility-jobs" / f"{run_id}.json"


def _remember_jobs(facility: str, refs: Sequence[JobRef]) -> None:
    """Write down which facility jobs this flow run owns, for the cancellation hook."""
    record = {"facility": facility, "refs": [r.model_dump(mode="json") for r in refs]}
    write_json(jobs_record(flow_run.get_id() or "local"), record)


def cancel_recorded_jobs(run_id: str) -> str | None:
    """Cancel the facility jobs a flow run noted (`_remember_jobs`): what happened, in words.

    None when the run noted none (it submitted nothing, or ran on another host).
    """
    path = jobs_record(run_id)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    refs = [JobRef.model_validate(r) for r in record["refs"]]
    statuses = load_facility(record["facility"]).cancel(refs)
    return f"cancelled {len(refs)} job(s) on {record['facility']}: " + ", ".join(
        f"{s.ref.name} {s.state.value}" for s in statuses[:10]
    )


def cancel_facility_jobs(
    flow: Flow[..., Any],
    flow_run: FlowRun,
    state: State[Any],
) -> None:
    """on_cancellation hook: cancel the facility jobs of a cancelled flow run (UWS ABORT).

    Prefect's worker runs it after stopping the flow process; the jobs themselves (local
    process groups, DIRAC jobs) would otherwise run on.
    """
    said = cancel_recorded_jobs(str(flow_run.id))
    if said is not None:
        flow_run_logger(flow_run).info("%s", said)


def _prepare_inputs(
    workflow: str,
    items: Sequence[InputItem],
    input_store: str | None,
    request: TaskRequest,
    facility: str | None,
) -> tuple[PlanResponse, list[InputFile]]:
    """Plan near the Rucio inputs, stage them for the chosen facility, fetch VO items."""
    parsed = parse_inputs(items)
    rucio = load_rucio_store(input_store) if parsed.dids else None
    if rucio is not None:
        request = request.model_copy(
            update={"datalocations": tuple(locate_inputs(rucio, parsed.dids))}
        )
    answer = plan(request, facility)
    dest = home() / "runs" / run_key(workflow) / "inputs"
    staged = None
    if rucio is not None:
        assert answer.serviceinfo is not None
        close = answer.serviceinfo.closerse
        staged = stage_inputs(rucio, parsed.dids, close, dest, download=close is None)
    fetched = fetch_vo_inputs(parsed.vo, dest) if parsed.vo else []
    extra = job_inputs(staged, fetched) if items else []
    return answer, extra


def execute(
    workflow: str,
    request: TaskRequest,
    make_specs: Callable[[PlanResponse], Sequence[JobSpec] | JobArray],
    facility: str | None,
    store: str | None,
    *,
    timeout: float | None = None,
    max_reschedules: int = 0,
    archive_key: str | None = None,
    archive_name: Callable[[JobRef, OutputFile], str] | None = None,
    archive_logs: bool = False,
    inputs: Sequence[InputItem] = (),
    input_store: str | None = None,
) -> PipelineResult:
    """Plan on the facilities, run the jobs on the best offer, archive what completed.

    Outputs of completed jobs are archived even when other jobs failed; the failures are
    listed in the result (`raise_for_failures` turns them into an error). `archive_key`
    (default <workflow>/<flow run id>) and `archive_name` (default <job>/<file>) say
    where files go in the store; `archive_logs` adds <job>/stdout.log and stderr.log.

    `inputs` (Rucio DIDs and ESAP basket items) are staged first: to the close RSE of the
    chosen facility (jobs get PFNs), or downloaded and shipped with each job when it has
    none. Every job then finds an `inputs.json` manifest in its directory.

    Payloads of a UWS job get its call-back URL, id and token in their environment.
    """
    answer, extra = _prepare_inputs(workflow, inputs, input_store, request, facility)
    assert answer.serviceinfo is not None  # a YES always names a facility
    chosen = load_facility(answer.serviceinfo.facility)
    archive_to = load_store(store)
    group, env = job_prefix(workflow), callback_environment()
    specs = _each(
        make_specs(answer),
        lambda s: {
            "group": s.group or group,
            "inputs": [*s.inputs, *extra],
            "env": {**s.env, **env},
        },
    )
    # noted by name first: a cancel that stops the flow in the middle of submitting still finds
    # the jobs whose ids are their names (local, Docker, Apptainer); unknown names cancel nothing
    planned = specs.expand() if isinstance(specs, JobArray) else specs
    _remember_jobs(
        chosen.facility_name,
        [JobRef(facility=chosen.facility_name, job_id=s.name, name=s.name) for s in planned],
    )
    refs = submit_jobs(chosen, specs)
    _remember_jobs(chosen.facility_name, refs)
    statuses = final_statuses(
        wait_for_jobs(
            chosen, refs, timeout=timeout, max_reschedules=max_reschedules, return_state=True
        )
    )
    outputs = collect_outputs(chosen, statuses, home() / "runs" / run_key(workflow))
    problems = _problems(statuses, outputs)
    done = {s.ref for s in statuses if s.state is JobState.COMPLETED}
    keep = [
        _kept(o, o.ref in done and not o.missing and not o.refused, archive_logs, archive_name)
        for o in outputs
    ]
    archived = archive_outputs(archive_to, archive_key or run_key(workflow), keep)
    return PipelineResult(
        flow_run_id=flow_run.get_id() or "",
        facility=chosen.facility_name,
        store=archive_to.store_name,
        jobs=[
            JobReport(
                name=s.ref.name,
                job_id=s.ref.job_id,
                state=s.state,
                detail=s.detail,
                exit_code=s.exit_code,
                reschedules=s.reschedules,
            )
            for s in statuses
        ],
        outputs=list(outputs),
        archived=archived,
        failures=problems,
    )
