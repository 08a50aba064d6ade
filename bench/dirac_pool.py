"""The `dirac` work pool against the raw diracx-client: N flow runs as N DIRAC jobs.

One real DiracX server behind a counting proxy; the grid simulator completes jobs in bulk and,
playing the nodes, marks each job's flow run Completed just before its job is Done (the raw
client's jobs carry flow runs too, made beforehand, so the nodes do the same work for both).
The pool's time runs from its first submission to the worker seeing the last job end; the raw
client's from its first submission to its last search that finds every job Done (same sandbox,
same number of JDLs, 20 a call, one search per cycle).
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-pool-")
os.environ.pop("PREFECT_API_URL", None)
from core.settings import configure_prefect_environment  # noqa: E402

configure_prefect_environment()

from diracx.api.jobs import create_sandbox  # noqa: E402
from diracx.client.aio import AsyncDiracClient  # noqa: E402
from diracx.client.sync import SyncDiracClient  # noqa: E402
from diracx.core.models import VectorSearchOperator  # noqa: E402
from diracx.core.preferences import DiracxPreferences  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.actions import WorkPoolCreate  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from prefect.deployments.runner import RunnerDeployment  # noqa: E402
from prefect.states import Completed, Running  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from prefect.types.entrypoint import EntrypointType  # noqa: E402

from blocks import DiracFacility  # noqa: E402
from blocks.dirac.connection import run_async  # noqa: E402
from tests import warm_flows  # noqa: E402
from tests.gridsim import GridSimulator  # noqa: E402
from tests.servers.counting_proxy import CountingProxy  # noqa: E402
from tests.servers.diracx import ADMIN_GROUP, DiracXServer  # noqa: E402
from workers.dirac import DiracWorker  # noqa: E402
from workers.dirac_job import BOOTSTRAP, BOOTSTRAP_SCRIPT  # noqa: E402

N = int(os.environ.get("BENCH_RUNS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
POOL = "dirac-bench"
SUBMIT = ("POST", "/api/jobs/jdl")
SEARCH = ("POST", "/api/jobs/search")
ENDED = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) .*DIRAC job (\d+) finished", re.MULTILINE)
SENT = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) .*DIRAC job (\d+) submitted to", re.MULTILINE)
REFUSED = re.compile(r"^\d\d:\d\d:\d\d\.\d+ .*Reported flow run '.*' as crashed", re.MULTILINE)
"""A run Prefect's SQLite answered 503 while the worker submitted it (it is never sent)."""


def nodes_complete(names: list[str]) -> None:
    """What the bootstrap's flow runs would do on the nodes: run and complete."""
    with get_client(sync_client=True) as client:
        for name in names:
            client.set_flow_run_state(UUID(name), Running(), force=True)
            client.set_flow_run_state(UUID(name), Completed(), force=True)


def pilot(sim: GridSimulator, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            sim.run_once()
        except Exception as exc:
            print(f"pilot: {exc}", file=sys.stderr)
        time.sleep(0.25)


def trace(name: str, proxy: CountingProxy) -> None:
    """With BENCH_TRACE=1: every DiracX call of the round, in seconds from the first."""
    if not os.environ.get("BENCH_TRACE"):
        return
    start = min(proxy.times)
    calls = " ".join(
        f"{t - start:.2f}:{m[0]}{p.rsplit('/', 1)[-1]}"
        for (m, p, _b), t in zip(proxy.bodies, proxy.times, strict=True)
    )
    print(f"{name}: {calls}", file=sys.stderr)


def pool_round(proxy: CountingProxy, log: Path) -> dict[str, Any]:
    """N runs due together on the pool; time from the first submission to the last job seen."""
    proxy.reset()
    seen = len(ENDED.findall(log.read_text()))
    refused = len(REFUSED.findall(log.read_text()))
    sent_before = len(SENT.findall(log.read_text()))
    when = datetime.now(UTC) + timedelta(seconds=40)
    for _ in range(N):
        cast(
            FlowRun,
            run_deployment(
                "report/bench",
                parameters={"out": "/dev/null"},
                timeout=0,
                as_subflow=False,
                scheduled_time=when,
            ),
        )
    while True:
        text = log.read_text()
        lost = len(REFUSED.findall(text)) - refused
        if len(ENDED.findall(text)) >= seen + N - lost:
            break
        time.sleep(0.5)
    text = log.read_text()
    ended = ENDED.findall(text)[seen:]
    sent = SENT.findall(text)[sent_before:]
    first = min(
        t for (m, p, _b), t in zip(proxy.bodies, proxy.times, strict=True) if (m, p) == SUBMIT
    )

    def clock(stamp: str) -> float:
        moment = datetime.strptime(stamp, "%H:%M:%S.%f").time()
        return datetime.combine(datetime.fromtimestamp(first).date(), moment).timestamp()

    end = max(clock(t) for t, _ in ended)
    # the jobs of the first bulk: those the worker sent within 10 s of its first submission
    opening = min(clock(t) for t, _ in sent)
    bulk = {job for t, job in sent if clock(t) < opening + 10}
    bulk_end = max(clock(t) for t, job in ended if job in bulk)
    trace("pool", proxy)
    follows = [
        b for m, p, b in proxy.bodies if (m, p) == SEARCH and b["search"][0]["parameter"] == "JobID"
    ]
    return {
        "wall": end - first,
        "bulk": bulk_end - first,
        "late": N - lost - len(bulk),
        "submit": proxy.count(*SUBMIT),
        "search": proxy.count(*SEARCH),
        "follows": len(follows),
        "ids": statistics.median(len(b["search"][0]["values"]) for b in follows),
        "lost": lost,
    }


def raw_round(prefs: DiracxPreferences, proxy: CountingProxy, work: Path) -> dict[str, Any]:
    """The same N jobs with the raw client: one sandbox, 20 JDLs a call, one search a cycle."""
    with get_client(sync_client=True) as prefect:
        runs = [
            str(prefect.create_flow_run(warm_flows.report, parameters={"out": "/dev/null"}).id)
            for _ in range(N)
        ]
    proxy.reset()
    script = work / BOOTSTRAP
    script.write_text(BOOTSTRAP_SCRIPT)
    start = time.time()

    async def upload() -> str:
        async with AsyncDiracClient(diracx_preferences=prefs) as client:
            return str(await create_sandbox([script], client=client))

    pfn = run_async(upload())
    jdls = [
        f'[Executable = "/bin/sh"; Arguments = "{BOOTSTRAP} {run}"; JobName = "{run}";'
        f' InputSandbox = {{"{pfn}"}}; CPUTime = 7200;]'
        for run in runs
    ]
    with SyncDiracClient(diracx_preferences=prefs) as client:
        ids = [
            j.job_id for s in range(0, N, 20) for j in client.jobs.submit_jdl_jobs(jdls[s : s + 20])
        ]
        while True:
            rows = client.jobs.search(
                parameters=["JobID", "Status"],
                search=[{"parameter": "JobID", "operator": VectorSearchOperator.IN, "values": ids}],
                per_page=10000,
            )
            if all(r["Status"] == "Done" for r in rows):
                break
            time.sleep(float(os.environ["ESAP_DIRAC_WORKER_POLL_SECONDS"]))
    trace("raw", proxy)
    return {
        "wall": time.time() - start,
        "submit": proxy.count(*SUBMIT),
        "search": proxy.count(*SEARCH),
        "follows": proxy.count(*SEARCH),
        "ids": N,
        "lost": 0,
        "bulk": time.time() - start,
        "late": 0,
    }


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-dirac-pool-"))
    os.environ["ESAP_DIRAC_WORKER_POLL_SECONDS"] = os.environ.get(
        "ESAP_DIRAC_WORKER_POLL_SECONDS", "2"
    )
    server = DiracXServer(root / "server")
    server.start()
    proxy = CountingProxy(server.url).start()
    stop = threading.Event()
    grid = threading.Thread()
    worker: subprocess.Popen[bytes] | None = None
    results: dict[str, list[dict[str, Any]]] = {"raw diracx-client": [], "dirac pool": []}
    try:
        owner = server.credentials(root / "owner.json")
        admin = server.credentials(root / "admin.json", "pilot", ADMIN_GROUP)
        sim = GridSimulator(
            server.url,
            admin,
            owner,
            server.job_db_url,
            run_payloads=False,
            before_done=nodes_complete,
        )
        with prefect_test_harness(server_startup_timeout=120):
            from prefect.settings import PREFECT_API_URL

            DiracFacility(url=proxy.url, credentials_path=owner).save("bench-grid", overwrite=True)
            template = DiracWorker.get_default_base_job_template()
            template["variables"]["properties"]["facility"]["default"] = "bench-grid"
            with get_client(sync_client=True) as client:
                client.create_work_pool(
                    WorkPoolCreate(name=POOL, type=DiracWorker.type, base_job_template=template),
                    overwrite=True,
                )
            cast(
                RunnerDeployment,
                warm_flows.report.to_deployment(
                    name="bench",
                    work_pool_name=POOL,
                    entrypoint_type=EntrypointType.MODULE_PATH,
                ),
            ).apply()
            log = root / "worker.log"
            env = {
                **os.environ,
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PREFECT_WORKER_QUERY_SECONDS": "1",
            }
            with log.open("wb") as out:
                worker = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "esap-prefect"),
                        "worker",
                        "--pool",
                        POOL,
                        "--limit",
                        str(2 * N),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            while "started!" not in log.read_text():
                time.sleep(0.5)
            grid = threading.Thread(target=pilot, args=(sim, stop), daemon=True)
            grid.start()
            prefs = DiracxPreferences(url=proxy.url, credentials_path=owner)
            for _ in range(ROUNDS):
                results["raw diracx-client"].append(raw_round(prefs, proxy, root))
                results["dirac pool"].append(pool_round(proxy, log))
    finally:
        stop.set()
        if grid.ident is not None:
            grid.join()
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        proxy.stop()
        server.stop()
    raw = statistics.median(r["wall"] for r in results["raw diracx-client"])
    poll = os.environ["ESAP_DIRAC_WORKER_POLL_SECONDS"]
    print(f"dirac pool: {N} flow runs as {N} DIRAC jobs, {ROUNDS} rounds, medians; poll {poll} s")
    print(
        f"{'':20}{'wall s':>8}{'ratio':>7}{'first bulk s':>14}{'ratio':>7}{'late':>6}"
        f"{'refused':>9}{'submit calls':>14}{'follow searches':>17}{'jobs per follow':>17}"
    )
    bulk_raw = statistics.median(r["bulk"] for r in results["raw diracx-client"])
    for name, rounds in results.items():
        wall = statistics.median(r["wall"] for r in rounds)
        bulk = statistics.median(r["bulk"] for r in rounds)
        last = rounds[-1]
        print(
            f"{name:20}{wall:8.2f}{wall / raw:6.2f}x{bulk:14.2f}{bulk / bulk_raw:6.2f}x"
            f"{sum(r['late'] for r in rounds):6d}{sum(r['lost'] for r in rounds):9d}"
            f"{last['submit']:14d}{last['follows']:17d}{last['ids']:17g}"
        )
    print(
        "first bulk: the jobs the worker sent within 10 s of its first submission; late: runs "
        "Prefect's API (SQLite, 503 and the client's retries) gave the worker a minute later; "
        "refused: runs it gave up on"
    )
    print(
        f"target: submit calls = ceil(N/20) = {-(-N // 20)}; every follow search covers all "
        "jobs still followed (one search per cycle); the pool within 1.3x of the raw client."
    )


if __name__ == "__main__":
    main()
