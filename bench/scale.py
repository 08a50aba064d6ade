"""Past one machine, measured: throughput with 1, 2 and 4 workers on SQLite and PostgreSQL,
gateways on each, and a 10,000-job wait on the grid simulator.

1. Hello World flow runs completed per minute: `esap-prefect server` on SQLite, then on a
   real PostgreSQL, with 1, 2 and 4 `local` workers (own homes, `--limit 8` each), BENCH_SCALE_RUNS
   runs each.
2. UWS create+RUN requests per second and their p99: one gateway on SQLite against two on
   PostgreSQL (requests alternate between them), 8 clients, BENCH_SCALE_REQUESTS requests.
3. A CTA-sized job array of BENCH_SCALE_JOBS jobs submitted and watched to Done on a real
   DiracX (the simulator completes a fifth of them every 3 s once all are submitted, no
   payloads run): the flow process's peak RSS, and the Prefect API calls per poll cycle
   counted on the wire.
"""

from __future__ import annotations

import itertools
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE = Path(tempfile.mkdtemp(prefix="esap-bench-scale-"))
os.environ["ESAP_PREFECT_HOME"] = str(BASE / "bench-home")
for _name in [n for n in os.environ if n.startswith(("PREFECT_", "ESAP_PREFECT_DATABASE"))]:
    del os.environ[_name]
from core.settings import configure_prefect_environment  # noqa: E402

configure_prefect_environment()

import httpx  # noqa: E402
from diracx.client.sync import SyncDiracClient  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from blocks import DiracFacility, JobArray, JobRef, JobSpec, JobStatus  # noqa: E402
from core.backoff import wait_until  # noqa: E402
from deployments.processes import free_port  # noqa: E402
from tasks.jobs import submit_jobs, wait_for_jobs  # noqa: E402
from tests.gridsim import GridSimulator  # noqa: E402
from tests.servers.counting_proxy import CountingProxy  # noqa: E402
from tests.servers.diracx import ADMIN_GROUP, DiracXServer  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402
from tests.stack import CLI  # noqa: E402

RUNS = int(os.environ.get("BENCH_SCALE_RUNS", "40"))
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "100"))
JOBS = int(os.environ.get("BENCH_SCALE_JOBS", "10000"))
WORKERS = (1, 2, 4)


class Part:
    """Processes of one configuration, each with its log, all stopped together."""

    def __init__(self, name: str, database: str | None) -> None:
        self.root = BASE / name
        self.root.mkdir()
        self.database = database
        self.api = ""
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, home: str, **more: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ESAP_"))}
        clean["ESAP_PREFECT_HOME"] = str(self.root / home)
        if self.database:
            clean["ESAP_PREFECT_DATABASE_URL"] = self.database
        if self.api:
            clean["PREFECT_API_URL"] = self.api
        return clean | more

    def start(self, name: str, args: Sequence[str], env: dict[str, str], ready: str) -> None:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            self.processes.append(
                subprocess.Popen(
                    [CLI, *args], stdout=out, stderr=out, env=env, start_new_session=True
                )
            )
        wait_until(lambda: log.read_text(errors="replace"), lambda text: ready in text, 300)

    def server(self) -> None:
        port = free_port()
        self.start("server", ["server", "--port", str(port)], self.env("server"), "server is up")
        self.api = f"http://127.0.0.1:{port}/api"

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()


def throughput(part: Part, workers: int, first: int) -> float:
    """Flow runs completed per minute with `workers` workers (started for this measure)."""
    for i in range(first, workers):
        name = f"worker-{i}"
        args = ["worker", "--pool", "local", "--name", name, "--limit", "8"]
        part.start(name, args, part.env(name), "started!")
    with temporary_settings({PREFECT_API_URL: part.api}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("hello-world/local")
        started = time.monotonic()
        ids = [client.create_flow_run_from_deployment(deployment.id).id for _ in range(RUNS)]

        def done() -> int:
            finished = 0
            for start in range(0, len(ids), 200):
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[start : start + 200]))
                )
                finished += sum(1 for r in runs if r.state is not None and r.state.is_final())
            return finished

        wait_until(done, lambda n: n == RUNS, 1800)
    return RUNS / ((time.monotonic() - started) / 60)


def gateway_requests(urls: list[str], token: str) -> tuple[float, float, int]:
    """Create+RUN requests per second, the p99 latency (s) and how many failed (not 303)."""
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        with httpx.Client(base_url=urls[i % len(urls)], timeout=600) as http:
            begun = time.perf_counter()
            try:
                answer = http.post(
                    "/uws/jobs",
                    data={"workflow": "hello-world", "PHASE": "RUN"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                ok = answer.status_code == 303
            except httpx.TransportError:
                ok = False
            took = time.perf_counter() - begun
        with lock:
            latencies.append(took)
            failed[0] += not ok

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(REQUESTS)))
    wall = time.perf_counter() - started
    return REQUESTS / wall, statistics.quantiles(latencies, n=100)[98], failed[0]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def gateways(part: Part, count: int) -> tuple[list[str], str]:
    urls = []
    for i in range(count):
        port = free_port()
        name = f"gateway-{i}"
        home = part.root / name
        home.mkdir(mode=0o700, exist_ok=True)
        if i:
            (home / "token").write_text((part.root / "gateway-0" / "token").read_text())
        part.start(name, ["gateway", "--port", str(port)], part.env(name), "gateway on")
        urls.append(f"http://127.0.0.1:{port}")
        wait_until(partial(_answers, f"{urls[-1]}/uws/availability"), bool, 120)
    return urls, (part.root / "gateway-0" / "token").read_text().strip()


def database_part(label: str, database: str | None) -> dict[str, Any]:
    part = Part(label, database)
    figures: dict[str, Any] = {}
    try:
        part.server()
        running = 0
        for workers in WORKERS:
            figures[f"{workers} worker(s)"] = throughput(part, workers, running)
            running = workers
            print(f"  {label}: {workers} worker(s): {figures[f'{workers} worker(s)']:.1f} runs/min")
        urls, token = gateways(part, 2 if database else 1)
        figures["gateway"] = gateway_requests(urls, token)
        rate, p99, failed = figures["gateway"]
        print(f"  {label}: {len(urls)} gateway(s): {rate:.1f} req/s, p99 {p99:.2f} s, "
              f"{failed} failed")  # fmt: skip
    finally:
        part.stop()
    return figures


class Cycles(DiracFacility):
    """The DIRAC facility, noting when each poll cycle begins."""

    _block_type_name = "Cycle-noting DIRAC Facility (bench)"

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        STARTS.append(time.time())
        return super().poll(refs)


STARTS: list[float] = []


@flow(name="bench-scale-wait")
def big_wait(facility: Cycles, tag: str) -> int:
    """A CTA-sized job array submitted and watched to Done, as cta-mc-production does."""
    specs = JobArray(
        template=JobSpec(name=f"{tag}-%s", group=tag, executable="true"),
        values=[f"{i:06d}" for i in range(JOBS)],
    )
    refs = submit_jobs(facility, specs)
    statuses = wait_for_jobs(facility, refs, min_interval=1.0, max_interval=5.0)
    return sum(s.state.value == "COMPLETED" for s in statuses)


def grid_part() -> tuple[int, float, list[int]]:
    """Done jobs, peak RSS (MB) of this process, Prefect calls in each poll cycle."""
    server = DiracXServer(BASE / "diracx")
    server.start()
    stop = threading.Event()
    try:
        owner = server.credentials(BASE / "owner.json")
        admin = server.credentials(BASE / "admin.json", "pilot", ADMIN_GROUP)
        sim = GridSimulator(server.url, admin, owner, server.job_db_url, run_payloads=False)

        def pilots() -> None:  # a fifth of the jobs ends every 3 s, once all are submitted
            with SyncDiracClient(diracx_preferences=sim.prefs) as client:
                while not stop.is_set() and len(sim.waiting(client)) < JOBS:
                    time.sleep(1.0)
                while not stop.is_set() and (jobs := sim.waiting(client)[: JOBS // 5]):
                    sim.start(client, jobs)
                    sim.finish_bulk(client, jobs)
                    time.sleep(3.0)

        grid = threading.Thread(target=pilots, daemon=True)
        with prefect_test_harness(server_startup_timeout=120):
            proxy = CountingProxy(str(PREFECT_API_URL.value()).removesuffix("/api")).start()
            try:
                with temporary_settings({PREFECT_API_URL: f"{proxy.url}/api"}):
                    grid.start()
                    done = big_wait(Cycles(url=server.url, credentials_path=owner), "scale")
            finally:
                proxy.stop()
        per_cycle = [
            sum(1 for t in proxy.times if begin <= t < end)
            for begin, end in itertools.pairwise(STARTS)
        ]
    finally:
        stop.set()
        server.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return done, peak, per_cycle


def main() -> None:
    postgres = PostgresServer(Path(tempfile.mkdtemp(prefix="esap-pg-"))).initialise().start()
    try:
        print(f"Hello World flow runs completed per minute ({RUNS} runs a measure):")
        sqlite = database_part("sqlite", None)
        pg = database_part("postgresql", postgres.fresh_database())
    finally:
        postgres.stop()
    print(f"{JOBS} jobs on DiracX through submit-jobs and wait-for-jobs:")
    done, peak, per_cycle = grid_part()
    print()
    print("| measure | SQLite | PostgreSQL |")
    print("| --- | --- | --- |")
    for workers in WORKERS:
        key = f"{workers} worker(s)"
        print(f"| runs/min, {key} | {sqlite[key]:.1f} | {pg[key]:.1f} |")
    print(f"| gateway create+RUN req/s (1 on SQLite; 2 on PostgreSQL) | {sqlite['gateway'][0]:.1f} "
          f"| {pg['gateway'][0]:.1f} |")  # fmt: skip
    print(f"| gateway p99 s | {sqlite['gateway'][1]:.2f} | {pg['gateway'][1]:.2f} |")
    print(f"| gateway requests failed | {sqlite['gateway'][2]} | {pg['gateway'][2]} |")
    print(
        f"{JOBS} jobs: {done} Done; peak RSS of the flow process {peak:.0f} MB (target < 1024); "
        f"{len(STARTS)} poll cycles; Prefect API calls per cycle: min {min(per_cycle, default=0)}, "
        f"median {statistics.median(per_cycle) if per_cycle else 0}, "
        f"max {max(per_cycle, default=0)} (target: constant)"
    )
    print(f"logs in {BASE}")


if __name__ == "__main__":
    main()
