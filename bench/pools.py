"""Pool benchmark: UWS Hello World from POST to COMPLETED on the warm local pool and on Prefect's
process worker, each a whole `esap-prefect up` stack, one after the other in one run.

Each job is split as Prefect saw it: flow run created -> started (the worker's start-up),
started -> ended (the flow), ended -> COMPLETED seen by the client (the gateway's sync).
Jobs go back to back, then PAUSE seconds apart (as users press RUN): back to back, the
embedded server's SQLite often answers the worker's next state change with a 503
(SQLITE_BUSY_SNAPSHOT) and Prefect's client retries about 1.7 s later, whatever the worker.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments.processes import free_port  # noqa: E402
from tests.stack import launch_up  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "7"))
PAUSE = 3.0
MODES = ("back to back", f"{PAUSE:g} s apart")
TYPES = ("warm", "process")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def one_job(gateway: httpx.Client, api: str) -> dict[str, float]:
    """One Hello World through UWS; its phases in seconds."""
    posted = time.time()
    made = gateway.post("/uws/jobs", data={"workflow": "hello-world", "PHASE": "RUN"})
    job_id = made.headers["location"].rsplit("/", 1)[-1]
    while True:
        job = gateway.get(f"/uws/jobs/{job_id}", params={"WAIT": 10}).json()
        if job["phase"] in ("COMPLETED", "ERROR", "ABORTED"):
            break
    done = time.time()
    assert job["phase"] == "COMPLETED", job
    tag = {"flow_runs": {"tags": {"all_": [f"uws-job-{job_id}"]}}}
    [run] = httpx.post(f"{api}/flow_runs/filter", json=tag).json()
    created, started = _time(run["created"]).timestamp(), _time(run["start_time"]).timestamp()
    ended = _time(run["end_time"]).timestamp()
    return {
        "POST -> COMPLETED": done - posted,
        "created -> started": started - created,
        "started -> ended": ended - started,
        "ended -> COMPLETED seen": done - ended,
    }


def measure(worker_type: str) -> dict[str, list[dict[str, float]]]:
    """RUNS jobs per mode (after one to warm up) on a fresh stack with this worker type."""
    home = Path(tempfile.mkdtemp(prefix=f"esap-bench-pools-{worker_type}-"))
    port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"ESAP_PREFECT_HOME": str(home), "ESAP_PREFECT_WORKER_TYPE": worker_type}
    up = launch_up(home, port, gateway_port, env)
    try:
        token = (home / "token").read_text().strip()
        gateway = httpx.Client(
            base_url=f"http://127.0.0.1:{gateway_port}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=120,
        )
        api = f"http://127.0.0.1:{port}/api"
        one_job(gateway, api)
        together = [one_job(gateway, api) for _ in range(RUNS)]
        apart = []
        for _ in range(RUNS):
            time.sleep(PAUSE)
            apart.append(one_job(gateway, api))
        return dict(zip(MODES, (together, apart), strict=True))
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=120)


def main() -> None:
    results = {kind: measure(kind) for kind in TYPES}
    print(f"UWS Hello World on the local pool, {RUNS} jobs per row (after one), medians in s")
    phases = list(results[TYPES[0]][MODES[0]][0])
    print(f"{'worker':9}{'jobs':14}" + "".join(f"{p:>25}" for p in phases))
    for mode in MODES:
        for kind in TYPES:
            row = [statistics.median(r[p] for r in results[kind][mode]) for p in phases]
            print(f"{kind:9}{mode:14}" + "".join(f"{v:25.2f}" for v in row))
        warm = statistics.median(r[phases[0]] for r in results["warm"][mode])
        cold = statistics.median(r[phases[0]] for r in results["process"][mode])
        print(f"{mode}: process / warm {cold / warm:.2f}x (target: warm under 4 s, at least 3x)")


if __name__ == "__main__":
    main()
