"""Flows the warm-pool tests deploy: each says where it ran, and some end badly on purpose.

Imported by module path in the worker's children (`tests.warm_flows:<flow>`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.client.schemas.objects import FlowRun, State

from core.jobs import JobSpec


def _where() -> dict[str, int]:
    return {"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "ppid": os.getppid()}


@flow
def report(out: str) -> None:
    """Write this run's process ids to `out`, and log them last."""
    where = {**_where(), "api": os.environ.get("PREFECT_API_URL")}
    Path(out).write_text(json.dumps(where))
    get_run_logger().info("reported from process %d", where["pid"])


def _cancelled(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    Path(flow_run.parameters["hook"]).write_text(f"cancellation hook ran ({state.type.value})")


@flow(on_cancellation=[_cancelled])
def sleeper(out: str, hook: str) -> None:
    """Start a grandchild in the run's process group, say so, and sleep until cancelled."""
    del hook  # the cancellation hook's
    child = subprocess.Popen(["sleep", "300"])
    Path(out).write_text(json.dumps({**_where(), "grandchild": child.pid}))
    time.sleep(300)


@flow
def crasher(signal_number: int) -> None:
    """End this process by a signal, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.Signals(signal_number))


@flow
def long_job(marks: str, seconds: float = 20) -> list[str]:
    """One local-facility job through the shared pipeline; notes this process, then waits.

    `marks`/flow-<pid> names each process that ran the flow; the job appends to
    `marks`/starts each time it starts, then sleeps `seconds` and writes its result.
    """
    from flows.pipeline import execute, job_prefix
    from planner.models import Resources, TaskRequest, TaskType

    Path(marks, f"flow-{os.getpid()}").write_text("")
    script = f'echo "$$" >> "{marks}/starts"; sleep {seconds:g}; echo done > result.txt'
    request = TaskRequest(
        tasktype=TaskType.EXECUTABLE,
        taskinfo={"executable": "sh"},
        resources=Resources(mincores=1, maxcores=1, minduration="1m", maxduration="10m"),
    )
    result = execute(
        "crash-test",
        request,
        lambda _answer: [
            JobSpec(
                name=f"{job_prefix('crash-test')}-0",
                executable="sh",
                arguments=["-c", script],
                outputs=["result.txt"],
                walltime=600,
            )
        ],
        "local",
        None,
    )
    result.raise_for_failures()
    return [a.location for a in result.archived]
