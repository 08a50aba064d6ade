"""The `warm` worker type against the session's Prefect server: a real worker, real forks.

Flows of `tests.warm_flows` are deployed on a pool of type `warm`; the worker is started as
operators do, `esap-prefect worker --pool P`, which runs `prefect worker start --type warm`
(the type found through the `prefect.collections` entry point).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelling

from core.backoff import wait_until
from tests import warm_flows
from tests.helpers import alive, deploy_flows, final_run, run_deployed

POOL = "warm-test"
CLI = str(Path(sys.executable).parent / "esap-prefect")


@pytest.fixture(scope="module")
def warm_worker(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A `warm` worker on its own pool with the test flows deployed; the worker's pid."""
    deploy_flows(POOL, [warm_flows.report, warm_flows.sleeper, warm_flows.crasher], "warm")
    log = tmp_path_factory.mktemp("warm-worker") / "worker.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [CLI, "worker", "--pool", POOL, "--limit", "25"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        ready = wait_until(log.read_text, lambda text: "started!" in text, 120)
        assert "warm parent" in ready and "ready at" in ready, ready
        yield worker.pid
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _run(name: str, **parameters: Any) -> FlowRun:
    return run_deployed(name, "warm", **parameters)


def test_twenty_runs_at_once_each_fork_their_own_session(
    warm_worker: int, tmp_path: Path, prefect_api: str
) -> None:
    runs = [_run("report", out=str(tmp_path / f"{n}.json")) for n in range(20)]
    for run in runs:
        assert final_run(run.id).state_type is StateType.COMPLETED
    seen = [json.loads((tmp_path / f"{n}.json").read_text()) for n in range(20)]
    assert len({s["pid"] for s in seen}) == 20, "one process per flow run"
    assert all(s["pgid"] == s["sid"] == s["pid"] for s in seen), "each leads its own group"
    parents = {s["ppid"] for s in seen}
    assert len(parents) == 1 and warm_worker not in parents, "forked by the warm parent"
    assert all(s["api"] == prefect_api for s in seen), "the run's environment reached it"
    # each child flushes its logs as an interpreter does at exit: the last line arrives
    with get_client(sync_client=True) as client:
        for run, where in zip(runs, seen, strict=True):
            only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            lines = wait_until(
                functools.partial(client.read_logs, only),
                lambda found: any("reported from process" in line.message for line in found),
                30,
            )
            assert f"reported from process {where['pid']}" in [x.message for x in lines]


def test_cancelling_a_run_kills_its_process_group_and_runs_its_hook(
    warm_worker: int, tmp_path: Path
) -> None:
    out, hook = tmp_path / "sleeper.json", tmp_path / "hook.txt"
    run = _run("sleeper", out=str(out), hook=str(hook))
    wait_until(out.exists, bool, 90)
    where = json.loads(out.read_text())
    assert alive(where["pid"]) and alive(where["grandchild"])
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    assert final_run(run.id, 90).state_type is StateType.CANCELLED
    gone = wait_until(lambda: [alive(where["pid"]), alive(where["grandchild"])], not_any, 30)
    assert gone == [False, False], "the run's process and its grandchild died"
    assert hook.read_text().startswith("cancellation hook ran"), "the hook ran"


def not_any(values: list[bool]) -> bool:
    return not any(values)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_child_killed_by_a_signal_crashes_its_flow_run(
    warm_worker: int, sig: signal.Signals
) -> None:
    run = final_run(_run("crasher", signal_number=int(sig)).id)
    assert run.state_type is StateType.CRASHED, run.state
    assert run.state is not None and str(-int(sig)) in (run.state.message or ""), run.state


def test_the_warm_parent_outlives_a_crashed_child(warm_worker: int, tmp_path: Path) -> None:
    def parent(name: str) -> int:
        out = tmp_path / name
        assert final_run(_run("report", out=str(out)).id).state_type is StateType.COMPLETED
        return int(json.loads(out.read_text())["ppid"])

    before = parent("before.json")
    run = final_run(_run("crasher", signal_number=int(signal.SIGKILL)).id)
    assert run.state_type is StateType.CRASHED
    assert parent("after.json") == before, "the same warm parent forks the next run"


def test_a_worker_for_a_pool_that_does_not_exist_says_so(
    warm_worker: int, prefect_api: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    answer = subprocess.run(
        [CLI, "worker", "--pool", "no-such-pool"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert answer.returncode == 2
    assert answer.stderr.startswith("error: no work pool named 'no-such-pool'; the server has:")
    assert POOL in answer.stderr and "Traceback" not in answer.stderr
