"""The `dirac` work pool: flow runs executed as DIRAC jobs on a real DiracX, the grid simulator
playing the pilot that runs each job's bootstrap against the session's Prefect API.

The worker talks to DiracX through a counting proxy, so submissions and searches are counted
on the wire.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from diracx.client.sync import SyncDiracClient
from diracx.core.models import VectorSearchOperator
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.states import Cancelling
from prefect.types.entrypoint import EntrypointType

from blocks import DiracFacility
from core.backoff import wait_until
from flows.hello_world import hello_world
from tests import warm_flows
from tests.gridsim import GridSimulator
from tests.helpers import CLI, PoolWorker
from tests.servers.counting_proxy import CountingProxy
from tests.servers.diracx import DiracXServer
from workers.dirac import DiracWorker
from workers.dirac_job import BOOTSTRAP

POOL = "dirac-test"
WORKER_NAME = "dirac-test-worker"
SUBMIT = ("POST", "/api/jobs/jdl")
SEARCH = ("POST", "/api/jobs/search")


def dirac_worker(api: str, log: Path) -> PoolWorker:
    """`esap-prefect worker --pool dirac-test`, restartable under the same name."""
    env = {"ESAP_DIRAC_WORKER_POLL_SECONDS": "1"}
    arguments = ("--pool", POOL, "--name", WORKER_NAME, "--limit", "40")
    return PoolWorker(api, log, *arguments, env=env)


@pytest.fixture(scope="module")
def proxy(diracx_server: DiracXServer) -> Iterator[CountingProxy]:
    counting = CountingProxy(diracx_server.url).start()
    yield counting
    counting.stop()


@pytest.fixture(scope="module")
def worker(
    prefect_api: str,
    grid: tuple[DiracFacility, GridSimulator],
    proxy: CountingProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PoolWorker]:
    """A DIRAC facility block behind the proxy, the pool, its deployments and its worker."""
    facility, _ = grid
    DiracFacility(url=proxy.url, credentials_path=facility.credentials_path, vo="cta").save(
        "pool-grid", overwrite=True
    )
    template = DiracWorker.get_default_base_job_template()
    variables = template["variables"]["properties"]
    variables["facility"]["default"] = "pool-grid"
    variables["activate"]["default"] = str(Path(sys.executable).parent / "activate")
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type=DiracWorker.type, base_job_template=template),
            overwrite=True,
        )
    for fn in (hello_world, warm_flows.report, warm_flows.sleeper, warm_flows.crasher):
        deployment = cast(
            RunnerDeployment,
            fn.to_deployment(
                name="grid", work_pool_name=POOL, entrypoint_type=EntrypointType.MODULE_PATH
            ),
        )
        deployment.apply()
    running = dirac_worker(prefect_api, tmp_path_factory.mktemp("dirac-worker") / "worker.log")
    yield running.start()
    running.stop()


@pytest.fixture
def pilot_cycles(grid: tuple[DiracFacility, GridSimulator]) -> Iterator[GridSimulator]:
    """The simulator's pilot cycles in the background, started by the test when it wants."""
    _, sim = grid
    stop = threading.Event()

    def cycle() -> None:
        while not stop.is_set():
            try:
                sim.run_once()
            except Exception as exc:  # the server may be restarting
                print(f"pilot cycle: {exc}")
            time.sleep(0.3)

    thread = threading.Thread(target=cycle, daemon=True)
    sim.start_pilot = thread.start  # type: ignore[attr-defined]
    yield sim
    stop.set()
    if thread.is_alive():
        thread.join()
    sim.fates = lambda _name: "run"


def _run(name: str, when: datetime | None = None, **parameters: Any) -> FlowRun:
    return cast(
        FlowRun,
        run_deployment(
            f"{name}/grid",
            parameters=parameters,
            timeout=0,
            as_subflow=False,
            scheduled_time=when,
        ),
    )


def _read(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _final(run_id: UUID, timeout: float = 240) -> FlowRun:
    run = wait_until(
        lambda: _read(run_id), lambda r: r.state is not None and r.state.is_final(), timeout
    )
    assert run.state is not None and run.state.is_final(), run.state
    return run


def _logs(run_id: UUID) -> str:
    with get_client(sync_client=True) as client:
        lines = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(line.message for line in lines)


def _jobs_named(sim: GridSimulator, name: str) -> list[dict[str, Any]]:
    with SyncDiracClient(diracx_preferences=sim.prefs) as client:
        return list(
            client.jobs.search(
                parameters=["JobID", "JobName", "Status", "MinorStatus"],
                search=[
                    {"parameter": "JobName", "operator": VectorSearchOperator.IN, "values": [name]}
                ],
            )
        )


def test_hello_world_runs_as_a_dirac_job_and_completes(
    worker: PoolWorker, pilot_cycles: GridSimulator, prefect_api: str
) -> None:
    pilot_cycles.start_pilot()  # type: ignore[attr-defined]
    run = _run("hello-world", Parameter4="grid", facility="local")
    done = _final(run.id)
    assert done.state_type is StateType.COMPLETED, done.state
    jobs = wait_until(
        lambda: _jobs_named(pilot_cycles, str(run.id)), lambda j: j[0]["Status"] == "Done", 60
    )
    assert len(jobs) == 1 and jobs[0]["Status"] == "Done", jobs
    assert done.infrastructure_pid == str(jobs[0]["JobID"])
    jdl = pilot_cycles.jdl_text(int(jobs[0]["JobID"]))
    assert BOOTSTRAP in jdl and str(run.id) in jdl
    assert prefect_api not in jdl and "PREFECT_API" not in jdl, "the API travels in the sandbox"
    logs = _logs(run.id)
    assert f"DIRAC job {jobs[0]['JobID']} submitted" in logs
    assert "Finished in state Completed" in logs or "Hello World" in logs, logs[-2000:]


def test_twenty_runs_due_together_are_one_submission_and_one_search_per_cycle(
    worker: PoolWorker,
    proxy: CountingProxy,
    grid: tuple[DiracFacility, GridSimulator],
    tmp_path: Path,
) -> None:
    _, sim = grid  # no pilot: the jobs wait on DiracX while they are counted
    when = datetime.now(UTC) + timedelta(seconds=30)  # the worker fetches runs 10 s ahead
    proxy.reset()
    runs = [_run("sleeper", when, out=str(tmp_path / f"{n}"), hook="") for n in range(20)]
    assert datetime.now(UTC) < when - timedelta(seconds=10), "all due in the same poll"
    followed = [
        wait_until(functools.partial(_read, r.id), lambda f: bool(f.infrastructure_pid), 120)
        for r in runs
    ]
    assert proxy.count(*SUBMIT) == 1, proxy.calls
    ids = sorted(int(f.infrastructure_pid or 0) for f in followed)
    assert len(set(ids)) == 20
    wait_until(lambda: proxy.count(*SEARCH), lambda n: n >= 4, 60)
    searches = [b for m, p, b in proxy.bodies if (m, p) == SEARCH]
    follows = [b for b in searches if b and b["search"][0]["parameter"] == "JobID"]
    assert follows, searches
    assert all(sorted(b["search"][0]["values"]) == ids for b in follows[1:]), (
        "every cycle follows all twenty jobs in one search"
    )
    with get_client(sync_client=True) as client:
        for run in runs:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
    for run in runs:
        assert _final(run.id, 120).state_type is StateType.CANCELLED
        assert _jobs_named(sim, str(run.id))[0]["Status"] == "Killed"


def test_a_job_that_fails_on_the_node_crashes_its_run_with_the_dirac_status_and_stderr(
    worker: PoolWorker, pilot_cycles: GridSimulator
) -> None:
    pilot_cycles.start_pilot()  # type: ignore[attr-defined]
    broken = {"activate": "/cvmfs/nowhere/bin/activate"}  # a node without the software
    run = cast(
        FlowRun,
        run_deployment(
            "report/grid",
            parameters={"out": "/nonexistent/x"},
            job_variables=broken,
            timeout=0,
            as_subflow=False,
        ),
    )
    done = _final(run.id)
    assert done.state_type is StateType.CRASHED, done.state
    assert done.state is not None
    assert "ended Failed; Application Finished With Errors (exit 70)" in (done.state.message or "")
    logs = wait_until(lambda: _logs(run.id), lambda text: "stderr" in text, 30)
    assert "cannot read the activation script /cvmfs/nowhere/bin/activate" in logs, logs


def test_a_stalled_job_crashes_its_run_and_is_killed(
    worker: PoolWorker, pilot_cycles: GridSimulator
) -> None:
    pilot_cycles.fates = lambda _name: "stall"
    pilot_cycles.start_pilot()  # type: ignore[attr-defined]
    run = _run("report", out="/nonexistent/never-written")
    done = _final(run.id)
    assert done.state_type is StateType.CRASHED, done.state
    assert done.state is not None and "Stalled" in (done.state.message or "")
    assert _jobs_named(pilot_cycles, str(run.id))[0]["Status"] == "Killed"


def test_cancelling_a_running_flow_run_kills_its_dirac_job(
    worker: PoolWorker, pilot_cycles: GridSimulator, tmp_path: Path
) -> None:
    pilot_cycles.start_pilot()  # type: ignore[attr-defined]
    out, hook = tmp_path / "sleeper.json", tmp_path / "hook.txt"
    run = _run("sleeper", out=str(out), hook=str(hook))
    wait_until(out.exists, bool, 180)
    assert _read(run.id).state_type is StateType.RUNNING
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    assert _final(run.id, 90).state_type is StateType.CANCELLED
    job = _jobs_named(pilot_cycles, str(run.id))[0]
    assert job["Status"] == "Killed", job
    wait_until(lambda: pilot_cycles.killed, lambda k: int(job["JobID"]) in k, 30)


def test_a_worker_killed_after_submitting_sends_nothing_twice(
    worker: PoolWorker, pilot_cycles: GridSimulator, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    run = _run("report", out=str(out))
    jobs = wait_until(lambda: _jobs_named(pilot_cycles, str(run.id)), bool, 120)
    worker.kill()  # as soon as DiracX has the job: maybe before Prefect heard of it
    worker.start()
    pilot_cycles.start_pilot()  # type: ignore[attr-defined]
    done = _final(run.id)
    assert done.state_type is StateType.COMPLETED, done.state
    assert out.exists()
    again = _jobs_named(pilot_cycles, str(run.id))
    assert [j["JobID"] for j in again] == [jobs[0]["JobID"]], "one DIRAC job for the run"


def test_the_worker_refuses_to_start_without_a_dirac_facility(
    prefect_api: str, tmp_path: Path
) -> None:
    template = DiracWorker.get_default_base_job_template()
    template["variables"]["properties"]["facility"]["default"] = "no-such-grid"
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name="dirac-unconfigured", type=DiracWorker.type, base_job_template=template
            ),
            overwrite=True,
        )
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    done = subprocess.run(
        [CLI, "worker", "--pool", "dirac-unconfigured"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "the dirac worker cannot start: no DIRAC facility named 'no-such-grid'" in said, said
    assert "Traceback" not in said, said
