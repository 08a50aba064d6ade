"""The production split on one machine: Prefect and two gateways on a real PostgreSQL, two
workers with homes of their own and one shared archive, as on several hosts.

Every part is started by its own `esap-prefect` command, as the README's Production section
gives them; only the database server and the folders are shared.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx
import psutil
import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.backoff import wait_until
from deployments.processes import free_port, wait_http_ok
from gateway.database_postgres import LEADER_KEY
from tests import leaks
from tests.credential import api_credential
from tests.helpers import CLI
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.slow
JOBS = int(os.environ.get("ESAP_TEST_PRODUCTION_JOBS", "40"))  # 300 by hand: README
OUTAGE = 5.0  # seconds PostgreSQL stays down in the restart test
PUBLIC = "https://esap-gateway.example.org"  # the proxy in front of both gateways


@dataclass
class Production:
    """The parts, their homes, and how to reach them."""

    root: Path
    database: str
    api: str = ""
    token: str = ""
    gateways: list[str] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self, home: str, **more: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ESAP_"))}
        return clean | {
            "ESAP_PREFECT_HOME": str(self.root / home),
            "ESAP_PREFECT_DATABASE_URL": self.database,
            **({"PREFECT_API_URL": self.api} if self.api else {}),
            **api_credential(),
            **more,
        }

    def start(self, name: str, arguments: list[str], env: dict[str, str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [CLI, *arguments], stdout=log, stderr=log, env=env, start_new_session=True
        )

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def http(self, gateway: int) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateways[gateway],
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            event_hooks={"response": [leaks.keep_answer]},
        )

    def stop(self) -> None:
        for process in self.processes.values():
            with_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with_group(process, signal.SIGKILL)
                process.wait()


def with_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)


@pytest.fixture(scope="module")
def production(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Production]:
    root = tmp_path_factory.mktemp("production")
    shared = root / "shared-results"
    shared.mkdir()
    made = Production(root, postgres.fresh_database())
    port = free_port()
    made.start("server", ["server", "--port", str(port)], made.env("server-home"))
    made.api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: "Prefect server is up" in made.log("server"), bool, 240)
        added = subprocess.run(
            [CLI, "stores", "add", "local", "local", "--root", str(shared), "--overwrite"],
            env=made.env("server-home"),
            capture_output=True,
            text=True,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        token = root / "server-home" / "token"
        for i in range(2):
            home = root / f"gateway-{i}"
            home.mkdir(mode=0o700)
            gateway_port = free_port()
            if i:  # the same token on every gateway (or OIDC): the proxy may send either
                shutil.copy(token, home / "token")
            env = made.env(f"gateway-{i}", ESAP_GATEWAY_URL=PUBLIC)
            made.start(f"gateway-{i}", ["gateway", "--port", str(gateway_port)], env)
            made.gateways.append(f"http://127.0.0.1:{gateway_port}")
            name = f"gateway-{i}"
            wait_http_ok(
                f"{made.gateways[-1]}/uws/availability",
                made.processes[name],
                root / f"{name}.log",
                120,
            )
            if not i:
                token.parent.mkdir(exist_ok=True)
                shutil.copy(home / "token", token)
        made.token = leaks.secret(token.read_text().strip())
        for i in range(2):
            made.start(
                f"worker-{i}",
                ["worker", "--pool", "local", "--name", f"host-{i}", "--limit", "8"],
                made.env(f"worker-{i}"),
            )
            log = f"worker-{i}"
            wait_until(lambda: "started!" in made.log(log), bool, 120)  # noqa: B023
        yield made
    finally:
        made.stop()


def _create(production: Production, i: int) -> str:
    with production.http(i % 2) as http:
        answer = http.post("/uws/jobs", data={"workflow": "hello-world", "PHASE": "RUN"})
    assert answer.status_code == 303, answer.text
    return answer.headers["location"].rsplit("/", 1)[-1]


def _phases(production: Production, gateway: int) -> Counter[str]:
    with production.http(gateway) as http:
        listed = http.get("/esap-api/uws/jobs/", params={"page_size": 500})
    assert listed.status_code == 200, listed.text
    return Counter(job["phase"] for job in listed.json()["results"])


def test_jobs_through_two_gateways_complete_once_each_with_the_same_answers(
    production: Production,
) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: _create(production, i), range(JOBS)))
    created = time.monotonic() - started
    assert len(set(ids)) == JOBS, "job numbers from both gateways never collide"
    wait_until(
        lambda: _phases(production, 0),
        lambda phases: phases["COMPLETED"] == JOBS or phases["ERROR"] > 0,
        600,
    )
    done = time.monotonic() - started
    for gateway in (0, 1):
        assert _phases(production, gateway) == Counter({"COMPLETED": JOBS})
    print(f"\n{JOBS} jobs created in {created:.1f} s, all completed in {done:.1f} s")

    runs = _uws_runs(production)
    assert len(runs) == JOBS, "one flow run per job: a run was never created twice"
    assert all(state is StateType.COMPLETED for state, _ in runs.values())
    by_worker = Counter(worker for _, worker in runs.values())
    assert set(by_worker) == {"host-0", "host-1"}, by_worker

    with production.http(0) as first, production.http(1) as second:
        for job_id in ids[:: JOBS // 10]:
            documents = [http.get(f"/uws/jobs/{job_id}/results").text for http in (first, second)]
            assert documents[0] == documents[1] and f"{PUBLIC}/uws/jobs/{job_id}/" in documents[0]
            files = [http.get(f"/uws/jobs/{job_id}/results/0") for http in (first, second)]
            assert files[0].status_code == files[1].status_code == 200, files[0].text
            assert files[0].content == files[1].content
            assert files[0].json()["type"] == "batch.submit"


def _uws_runs(production: Production) -> dict[UUID, tuple[StateType | None, str | None]]:
    """Every flow run the gateways created: its state, and the worker that took it."""
    with (
        temporary_settings({PREFECT_API_URL: production.api}),
        get_client(sync_client=True) as client,
    ):
        runs: list[FlowRun] = []
        while page := client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["uws"])),
            limit=200,
            offset=len(runs),
        ):
            runs += page
        workers = {w.name for w in client.read_workers_for_work_pool("local")}
    logs = {i: production.log(f"worker-{i}") for i in (0, 1)}  # each names the runs it took
    taken = {
        run.id: next((f"host-{i}" for i in (0, 1) if str(run.id) in logs[i]), None) for run in runs
    }
    assert workers >= {"host-0", "host-1"}
    return {run.id: (run.state_type, taken[run.id]) for run in runs}


def test_run_sent_to_both_gateways_at_once_runs_a_job_once(production: Production) -> None:
    before = len(_uws_runs(production))
    with production.http(0) as first, production.http(1) as second:
        ids = []
        for _ in range(10):
            created = first.post("/uws/jobs", data={"workflow": "hello-world"})
            ids.append(created.headers["location"].rsplit("/", 1)[-1])
        with ThreadPoolExecutor(2) as pool:
            answers = [
                sorted(
                    pool.map(
                        lambda http, job_id=job_id: http.post(
                            f"/uws/jobs/{job_id}/phase", data={"PHASE": "RUN"}
                        ),
                        (first, second),
                    ),
                    key=lambda answer: answer.status_code,
                )
                for job_id in ids
            ]
    for job_id, (won, lost) in zip(ids, answers, strict=True):
        assert won.status_code == 303 and lost.status_code == 400, (won.text, lost.text)
        assert re.search(rf"job {job_id} is [A-Z]+; only a PENDING job can RUN", lost.text)
    wait_until(
        lambda: Counter(_phase(production, job_id) for job_id in ids),
        lambda found: found["COMPLETED"] == len(ids),
        180,
    )
    assert len(_uws_runs(production)) == before + len(ids), "one flow run a job"


def _leader(production: Production) -> str:
    """The gateway whose connection holds the following lock, found through PostgreSQL."""
    with psycopg.connect(production.database) as connection:
        row = connection.execute(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
            [LEADER_KEY],
        ).fetchone()
    assert row is not None, "no gateway follows Prefect"
    for name in ("gateway-0", "gateway-1"):
        if production.processes[name].poll() is not None:
            continue
        process = psutil.Process(production.processes[name].pid)
        family = [process, *process.children(recursive=True)]
        if any(c.laddr.port == row[0] for p in family for c in p.net_connections("tcp")):
            return name
    raise AssertionError(f"no gateway has the leader's connection (port {row[0]})")


def test_when_the_following_gateway_dies_the_other_follows_on(production: Production) -> None:
    leader = _leader(production)
    other = 1 - int(leader[-1])
    production.processes[leader].send_signal(signal.SIGKILL)  # a host gone, no goodbye
    production.processes[leader].wait()
    with production.http(other) as http:
        answer = http.post("/uws/jobs", data={"workflow": "hello-world", "PHASE": "RUN"})
        job_id = answer.headers["location"].rsplit("/", 1)[-1]
        started = time.monotonic()
        job = wait_until(
            lambda: http.get(f"/esap-api/uws/jobs/{job_id}/").json(),
            lambda found: found["phase"] in ("COMPLETED", "ERROR"),
            180,
        )
    assert job["phase"] == "COMPLETED", job
    assert _leader(production) == f"gateway-{other}"
    print(f"\nleader {leader} killed; a new job through gateway-{other} completed in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip


def test_a_database_restart_under_load_loses_nothing(
    production: Production, postgres: PostgresServer
) -> None:
    """Jobs created while PostgreSQL is down 5 s: a client that honours 503 Retry-After loses
    none, and every flow run, gateway and worker carries on."""
    seen: Counter[int] = Counter()
    before = len(_uws_runs(production))

    live = [i for i in (0, 1) if production.processes[f"gateway-{i}"].poll() is None]
    deadline = time.monotonic() + 120

    def create(i: int) -> str:
        with production.http(live[i % len(live)]) as http:
            while time.monotonic() < deadline:
                try:
                    answer = http.post(
                        "/uws/jobs", data={"workflow": "hello-world", "PHASE": "RUN"}
                    )
                except httpx.TransportError:
                    seen[0] += 1
                    time.sleep(1)
                    continue
                seen[answer.status_code] += 1
                if answer.status_code == 503:
                    time.sleep(float(answer.headers.get("retry-after", "1")))
                    continue
                assert answer.status_code == 303, answer.text
                return answer.headers["location"].rsplit("/", 1)[-1]
        raise AssertionError(f"no job created within 120 s; answers {dict(seen)}")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(create, i) for i in range(16)]
        # down while workers are starting runs: their state changes meet the outage
        wait_until(lambda: _starting(production), bool, 60)
        restarted = time.monotonic()
        postgres.stop()  # fast: sessions ended, as an operator's restart does
        time.sleep(OUTAGE)
        postgres.start()
        down = time.monotonic() - restarted
        ids = [future.result() for future in futures]
    phases = wait_until(
        lambda: Counter(_phase(production, job_id) for job_id in ids),
        lambda found: found["COMPLETED"] + found["ERROR"] == len(ids),
        300,
    )
    runs = _uws_runs(production)
    assert phases == Counter({"COMPLETED": len(ids)}), (phases, Counter(runs.values()))
    assert len(runs) == before + len(ids), "one flow run per job, none lost, none twice"
    assert all(state is StateType.COMPLETED for state, _ in runs.values())
    print(f"\nPostgreSQL down {down:.1f} s; answers {dict(seen)}")


def _starting(production: Production) -> bool:
    """Whether a worker has claimed a gateway's flow run that has not begun running."""
    with (
        temporary_settings({PREFECT_API_URL: production.api}),
        get_client(sync_client=True) as client,
    ):
        return bool(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["uws"]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING])),
                ),
                limit=1,
            )
        )


def _phase(production: Production, job_id: str) -> str:
    live = [i for i in (0, 1) if production.processes[f"gateway-{i}"].poll() is None]
    with production.http(live[int(job_id) % len(live)]) as http:
        answer = http.get(f"/uws/jobs/{job_id}/phase")
    return answer.text if answer.status_code == 200 else f"HTTP {answer.status_code}"
