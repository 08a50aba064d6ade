"""Crashed flow runs come back: a killed flow process, a worker killed for good, a production
killed while its DIRAC jobs wait. Real workers (`esap-prefect worker`), real kills.

Each retried run keeps its id, so its jobs keep their names: it finds them, never doubles them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import psutil
import pytest
from diracx.client.sync import SyncDiracClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Crashed, Running

from blocks import DiracFacility
from core import crashes
from core.backoff import wait_until
from deployments import crash_detection
from flows.cta_mc_production import cta_mc_production
from tasks.archive import ARCHIVED
from tests import warm_flows
from tests.gridsim import GridSimulator
from tests.helpers import deploy_flows, run_deployed, run_logs
from tests.test_flows import artifacts_of
from workers.crash_retry import send_back

pytestmark = pytest.mark.slow
POOL = "crash-test"
CLI = str(Path(sys.executable).parent / "esap-prefect")
SILENCE = "50"  # seconds without a heartbeat (they come every 30 s) before a run is Crashed
PRODUCTION_RUNS = int(os.environ.get("ESAP_TEST_CRASH_RUNS", "20"))  # 200 by hand: README


@dataclass
class Workers:
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]]

    def running(self, pid: int) -> str:
        """The worker whose process tree holds process `pid` (a flow run's process)."""
        for name, process in self.processes.items():
            family = psutil.Process(process.pid).children(recursive=True)
            if any(p.pid == pid for p in family):
                return name
        raise AssertionError(f"no worker runs process {pid}")


@pytest.fixture(scope="module")
def workers(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Two `warm` workers on a pool of ESAP-tagged test flows, and the crash automation."""
    deploy_flows(POOL, [warm_flows.long_job, cta_mc_production], "crash", tags=["esap"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(crashes.SILENCE_VARIABLE, SILENCE)
        crash_detection.ensure_crash_detection()
    folder = tmp_path_factory.mktemp("crash-workers")
    made = Workers({}, {})
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    for name in ("host-a", "host-b"):
        made.logs[name] = folder / f"{name}.log"
        with made.logs[name].open("wb") as out:
            made.processes[name] = subprocess.Popen(
                [CLI, "worker", "--pool", POOL, "--name", name, "--limit", "4"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
    try:
        for log in made.logs.values():
            text = wait_until(log.read_text, lambda text: "started!" in text, 120)
            assert "started!" in text, f"a worker did not start:\n{text[-2000:]}"
        yield made
    finally:
        for process in made.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
        with get_client(sync_client=True) as client:
            for found in client.read_automations_by_name(crash_detection.NAME):
                client.delete_automation(found.id)


def _run(name: str, **parameters: Any) -> FlowRun:
    return run_deployed(name, "crash", **parameters)


def _settled(run_id: UUID, timeout: float) -> FlowRun:
    """The run once it is final for good: completed, failed, or crashed with no retry left."""
    with get_client(sync_client=True) as client:
        return wait_until(
            lambda: client.read_flow_run(run_id),
            lambda r: (
                r.state is not None
                and r.state.is_final()
                and not (
                    r.state.type is StateType.CRASHED
                    and crashes.will_be_retried(r.labels, str(r.state.id), None)
                )
            ),
            timeout,
        )


def _history(run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        return [f"{s.name}: {s.message or ''}" for s in client.read_flow_run_states(run_id)]


def _starts(marks: Path) -> list[int]:
    """The pid of each start of the job (it notes one line a start)."""
    path = marks / "starts"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _flow_pids(marks: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("flow-")) for p in marks.glob("flow-*"))


def test_a_killed_flow_process_is_retried_and_takes_its_running_job_over(
    workers: Workers, tmp_path: Path
) -> None:
    run = _run("long-job", marks=str(tmp_path), seconds=12)
    assert wait_until(lambda: _starts(tmp_path), bool, 120), "the job never started"
    [pid] = _flow_pids(tmp_path)
    os.kill(pid, signal.SIGKILL)  # the OOM killer, say; its worker lives on
    killed = time.monotonic()
    done = _settled(run.id, 180)
    assert done.state_type is StateType.COMPLETED, _history(run.id)
    history = _history(run.id)
    assert any("sent back after a crash, retry 1 of 2" in line for line in history), history
    told = [line for line in run_logs(run.id) if "crashed: sent back to pool crash-test" in line]
    assert len(told) == 1 and re.search(r"by worker host-[ab], retry 1 of 2", told[0]), told
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    assert not [t.name for t in tasks if t.state_type is StateType.RUNNING], "none left running"
    # the killed attempt's task that was running (submit-jobs or wait-for-jobs, by timing)
    assert any(t.state_type is StateType.CRASHED and t.flow_run_run_count == 1 for t in tasks), [
        (t.name, t.state_name) for t in tasks
    ]
    assert done.labels[crashes.RETRIED_LABEL] == "1" and done.run_count == 2
    assert len(_flow_pids(tmp_path)) == 2, "a second flow process ran the run"
    assert len(_starts(tmp_path)) == 1, "the job was taken over, once"
    [row] = _archived(run.id)
    assert Path(str(row["location"]).removeprefix("file://")).read_text() == "done\n"
    print(f"\nflow process killed; run completed {time.monotonic() - killed:.1f} s later")


def test_a_worker_killed_for_good_has_its_run_finished_by_the_other(
    workers: Workers, tmp_path: Path
) -> None:
    run = _run("long-job", marks=str(tmp_path), seconds=5)
    assert wait_until(lambda: _starts(tmp_path), bool, 120), "the job never started"
    [pid] = _flow_pids(tmp_path)
    owner = workers.running(pid)
    [job] = _starts(tmp_path)
    worker = psutil.Process(workers.processes[owner].pid)
    # the host's Prefect processes die (worker, warm parent, flow); the job lives on, as a
    # batch system's would, and ends while nobody watches
    payload = psutil.Process(job)
    wrapper = next(p for p in payload.parents() if p.ppid() == pid)  # writes its exit code
    spared = {wrapper.pid, *(c.pid for c in wrapper.children(recursive=True))}
    doomed = [worker, *worker.children(recursive=True)]
    doomed += [psutil.Process(pid)] if psutil.pid_exists(pid) else []
    for process in {p.pid: p for p in doomed if p.pid not in spared}.values():
        _kill(process)
    killed = time.monotonic()
    done = _settled(run.id, 300)
    assert done.state_type is StateType.COMPLETED, _history(run.id)
    history = _history(run.id)
    crashed = next(line for line in history if line.startswith("Crashed"))
    assert f"no heartbeat for {SILENCE} s" in crashed, history
    survivor = next(n for n in workers.logs if n != owner)
    assert workers.processes[owner].poll() is not None, "the killed worker stayed dead"
    assert len(_flow_pids(tmp_path)) == 2, "a flow process of the other worker finished it"
    assert len(_starts(tmp_path)) == 1, "the ended job was found"
    print(f"\nworker {owner} killed; run completed on {survivor} "
          f"{time.monotonic() - killed:.1f} s later")  # fmt: skip


def _kill(process: psutil.Process) -> None:
    """SIGKILL, whether or not it is still there."""
    with contextlib.suppress(psutil.NoSuchProcess):
        process.kill()


def _archived(run_id: UUID) -> list[dict[str, Any]]:
    """The rows of the run's archived-outputs table artifact."""
    data = next(v for k, v in artifacts_of(str(run_id)).items() if k.endswith(ARCHIVED))
    return cast(list[dict[str, Any]], json.loads(data) if isinstance(data, str) else data)


def _dirac_jobs(sim: GridSimulator, prefix: str) -> list[dict[str, Any]]:
    with SyncDiracClient(diracx_preferences=sim.owner_prefs) as client:
        found = client.jobs.search(parameters=["JobID", "JobName", "Status"], per_page=10000)
    return [j for j in found if str(j["JobName"]).startswith(prefix)]


def test_a_production_killed_while_its_dirac_jobs_wait_finds_them_again(
    workers: Workers, grid: tuple[DiracFacility, GridSimulator], tmp_path: Path
) -> None:
    facility, sim = grid
    facility.save("crash-grid", overwrite=True)
    run = _run(
        "cta-mc-production",
        runs=PRODUCTION_RUNS,
        first_run=500,
        showers_per_run=2,
        facility="crash-grid",
    )
    prefix = f"cta-mc-{str(run.id)[:8]}-"
    submitted = wait_until(
        lambda: len(_dirac_jobs(sim, prefix)), lambda n: n == PRODUCTION_RUNS, 300
    )
    assert submitted == PRODUCTION_RUNS, f"{submitted} of {PRODUCTION_RUNS} jobs submitted"
    flows = [
        p
        for p in psutil.process_iter(["environ"])
        if (p.info["environ"] or {}).get("PREFECT__FLOW_RUN_ID") == str(run.id)
    ]
    assert flows, f"no flow process of {run.id}"
    for process in flows:
        _kill(process)
    killed = time.monotonic()
    with get_client(sync_client=True) as client:
        again = wait_until(
            lambda: client.read_flow_run(run.id),
            lambda r: r.run_count == 2 and r.state_type is StateType.RUNNING,
            120,
        )
    assert again.run_count == 2 and again.state_type is StateType.RUNNING, again.state
    back = time.monotonic() - killed
    stop = threading.Event()

    def pilots() -> None:  # the grid starts only now: every job waited through the crash
        while not stop.is_set():
            sim.run_once()
            time.sleep(0.2)

    thread = threading.Thread(target=pilots, daemon=True)
    thread.start()
    try:
        done = _settled(run.id, 600)
    finally:
        stop.set()
        thread.join()
    assert done.state_type is StateType.COMPLETED, _history(run.id)
    jobs = _dirac_jobs(sim, prefix)
    assert len(jobs) == PRODUCTION_RUNS, "every job was found again, none submitted twice"
    assert {j["Status"] for j in jobs} == {"Done"}
    summary = str(artifacts_of(str(run.id))["cta-mc-summary"])
    assert f"| simulated now | {PRODUCTION_RUNS} |" in summary and "| failed | 0 |" in summary
    names = [str(row["name"]) for row in _archived(run.id)]
    assert len(names) == len(set(names)), "each file archived once"
    runs = {f"run{r:06d}" for r in range(500, 500 + PRODUCTION_RUNS)}
    assert {n.split("/")[0] for n in names} == runs
    print(f"\n{PRODUCTION_RUNS}-run production: flow killed, running again {back:.1f} s later, "
          f"completed {time.monotonic() - killed:.1f} s after the kill")  # fmt: skip


def test_two_workers_sending_one_crash_back_count_it_once(prefect_api: str) -> None:
    """Both workers of a pool see the same Crashed run at once: one retry counted, one sent."""
    deploy_flows("crash-race", [warm_flows.long_job], "race", tags=["esap"])
    run = run_deployed("long-job", "race", marks="/nonexistent", seconds=1)
    log = logging.getLogger("test")

    async def race() -> list[list[FlowRun]]:
        async with get_client() as client:
            await client.set_flow_run_state(run.id, Running(), force=True)
            await client.set_flow_run_state(run.id, Crashed(message="gone"), force=True)
            return list(await asyncio.gather(*(send_back(client, "crash-race", log) for _ in "ab")))

    sent = asyncio.run(race())
    assert sum(len(s) for s in sent) >= 1
    with get_client(sync_client=True) as client:
        found = client.read_flow_run(run.id)
        states = [s.name for s in client.read_flow_run_states(run.id)]
    assert found.labels[crashes.RETRIED_LABEL] == "1", found.labels
    assert states.count("AwaitingRetry") == 1, states

    async def counted_by_another() -> list[FlowRun]:
        """A crash another worker has just counted (labels written, state not yet sent)."""
        async with get_client() as client:
            await client.set_flow_run_state(run.id, Running(), force=True)
            await client.set_flow_run_state(run.id, Crashed(message="gone again"), force=True)
            crashed = await client.read_flow_run(run.id)
            assert crashed.state is not None
            counted = {crashes.RETRIED_LABEL: "2", crashes.CRASH_LABEL: str(crashed.state.id)}
            await client.update_flow_run_labels(run.id, counted)  # type: ignore[arg-type]
            return await send_back(client, "crash-race", log)

    assert asyncio.run(counted_by_another()) == [], "the same crash is not counted twice"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).labels[crashes.RETRIED_LABEL] == "2"

    async def spent() -> tuple[list[FlowRun], FlowRun]:
        """Crashed again with both retries spent: it stays Crashed, marked final for the gateway."""
        async with get_client() as client:
            await client.set_flow_run_state(run.id, Running(), force=True)
            await client.set_flow_run_state(run.id, Crashed(message="gone for good"), force=True)
            sent = await send_back(client, "crash-race", log)
            return sent, await client.read_flow_run(run.id)

    none, final = asyncio.run(spent())
    assert none == [] and final.state is not None and final.state_type is StateType.CRASHED
    assert final.labels[crashes.FINAL_LABEL] == str(final.state.id)
    assert not crashes.will_be_retried(final.labels, str(final.state.id), None)
    wait_until(  # in the run's own log (shipped to the API in batches)
        lambda: run_logs(run.id),
        lambda lines: any("stays Crashed: 2 of 2 retries after crashes spent (gone for good)"
                          in line for line in lines),
        30,
    )  # fmt: skip
