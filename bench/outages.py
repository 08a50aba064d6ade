"""Backends away in the middle of a run: the Prefect API, DiracX, Rucio, each for BENCH_OUTAGE s.

One `esap-prefect server` (SQLite), one worker on the `local` pool, one gateway. The Prefect
API is killed while a flow run waits on a local job, and started again on the same database;
DiracX is stopped while a CTA production's jobs wait on the grid simulator; Rucio while a
data-staging run waits on its rule (no conveyor until it is back). Printed: how long
each run waited, its end, and what the gateway answered meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOME = Path(tempfile.mkdtemp(prefix="esap-bench-outage-"))
os.environ["ESAP_PREFECT_HOME"] = str(HOME)
for _name in [n for n in os.environ if n.startswith("PREFECT_")]:
    del os.environ[_name]
from deployments.processes import free_port  # noqa: E402

PORT, GATEWAY_PORT = free_port(), free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PORT}/api"
from core.settings import configure_prefect_environment  # noqa: E402

configure_prefect_environment()

import httpx  # noqa: E402
import psutil  # noqa: E402
from diracx.client.sync import SyncDiracClient  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from blocks import DiracFacility, RucioStore  # noqa: E402
from core.backoff import wait_until  # noqa: E402
from flows.cta_mc_production import cta_mc_production  # noqa: E402
from flows.data_staging import data_staging  # noqa: E402
from tests import warm_flows  # noqa: E402
from tests.gridsim import GridSimulator  # noqa: E402
from tests.helpers import deploy_flows, run_deployed  # noqa: E402
from tests.servers.diracx import ADMIN_GROUP, DiracXServer  # noqa: E402
from tests.servers.rucio import RucioServer  # noqa: E402
from tests.stack import CLI  # noqa: E402

OUTAGE = float(os.environ.get("BENCH_OUTAGE", "60"))
RUNS = int(os.environ.get("BENCH_OUTAGE_RUNS", "10"))
ONLY = os.environ.get("BENCH_OUTAGES", "prefect,diracx,rucio").split(",")


def _spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
    with (HOME / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [CLI, *args], stdout=log, stderr=log, env=dict(os.environ), start_new_session=True
        )


def _log(name: str) -> str:
    return (HOME / f"{name}.log").read_text(errors="replace")


def _server() -> subprocess.Popen[bytes]:
    before = _log("server").count("Prefect server is up") if (HOME / "server.log").exists() else 0
    server = _spawn("server", "server", "--port", str(PORT))
    wait_until(lambda: _log("server").count("Prefect server is up"), lambda n: n > before, 240)
    return server


def _gateway_up() -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{GATEWAY_PORT}/uws/availability").status_code == 200
    except httpx.TransportError:
        return False


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything it started (the stack's server has its own group)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        family = [psutil.Process(process.pid)]
        family += family[0].children(recursive=True)
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
    process.wait()


def _run(name: str, **parameters: Any) -> FlowRun:
    return run_deployed(name, "outage", **parameters)


def _final(run: FlowRun, timeout: float) -> FlowRun:
    with get_client(sync_client=True) as client:
        return wait_until(
            lambda: client.read_flow_run(run.id),
            lambda r: r.state is not None and r.state.is_final(),
            timeout,
        )


def _gateway_answers(token: str, job_id: str, seconds: float) -> Counter[str]:
    """What a client of the gateway sees meanwhile: reads and creates, one each a second."""
    seen: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    end = time.monotonic() + seconds
    with httpx.Client(base_url=f"http://127.0.0.1:{GATEWAY_PORT}", headers=headers) as http:
        while time.monotonic() < end:
            read = http.get(f"/uws/jobs/{job_id}/phase")
            seen[f"read {read.status_code} {read.text if read.status_code == 200 else ''}"] += 1
            made = http.post("/uws/jobs", data={"workflow": "hello-world"})
            seen[f"create {made.status_code}"] += 1
            time.sleep(1)
    return seen


def prefect_api_away(server: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Kill the Prefect server while a run waits on a 90 s local job; start it again."""
    token = (HOME / "token").read_text().strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{GATEWAY_PORT}") as http:
        answer = http.post(
            "/uws/jobs",
            data={"workflow": "hello-world", "PHASE": "RUN"},
            headers={"Authorization": f"Bearer {token}"},
        )
    job_id = answer.headers["location"].rsplit("/", 1)[-1]
    marks = Path(tempfile.mkdtemp(prefix="marks-", dir=HOME))
    run = _run("long-job", marks=str(marks), seconds=30 + OUTAGE)
    wait_until((marks / "starts").exists, bool, 120)
    _kill(server)
    away = time.monotonic()
    seen = _gateway_answers(token, job_id, OUTAGE)
    server = _server()
    back = time.monotonic()
    done = _final(run, 600)
    starts = len((marks / "starts").read_text().split())
    flows = len(list(marks.glob("flow-*")))
    print(
        f"Prefect API away {back - away:.0f} s: the run ended {done.state_name} "
        f"{time.monotonic() - back:.1f} s after it came back; job started {starts}x, "
        f"flow process(es) {flows}, retries label {done.labels.get('esap.crash-retries', '0')}"
    )
    print(f"  gateway meanwhile: {dict(seen)}")
    return server


def diracx_away() -> None:
    """Stop DiracX while a CTA production's jobs wait; start it again."""
    diracx = DiracXServer(HOME / "diracx")
    diracx.start()
    try:
        owner = diracx.credentials(HOME / "owner.json")
        admin = diracx.credentials(HOME / "admin.json", "pilot", ADMIN_GROUP)
        DiracFacility(
            url=diracx.url,
            credentials_path=owner,
            output_path="/cta/user/e/esap",
            output_se="SE-TEST",
        ).save("grid", overwrite=True)
        sim = GridSimulator(diracx.url, admin, owner, diracx.job_db_url)
        run = _run("cta-mc-production", runs=RUNS, showers_per_run=2, facility="grid")
        prefix = f"cta-mc-{str(run.id)[:8]}-"

        def submitted() -> int:
            with SyncDiracClient(diracx_preferences=sim.owner_prefs) as client:
                found = client.jobs.search(parameters=["JobName"], per_page=10000)
            return sum(str(j["JobName"]).startswith(prefix) for j in found)

        wait_until(submitted, lambda n: n == RUNS, 300)
        diracx.stop_app()
        away = time.monotonic()
        time.sleep(OUTAGE)
        diracx.start()
        back = time.monotonic()
        stop = threading.Event()

        def pilots() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    sim.run_once()
                time.sleep(0.2)

        thread = threading.Thread(target=pilots, daemon=True)
        thread.start()
        done = _final(run, 900)
        stop.set()
        thread.join()
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id)
        print(
            f"DiracX away {back - away:.0f} s while {RUNS} jobs waited: the run ended "
            f"{done.state_name} {time.monotonic() - back:.1f} s after it came back; "
            f"jobs on DiracX {submitted()}, run count {state.run_count}"
        )
    finally:
        diracx.stop()


def rucio_away() -> None:
    """Stop Rucio while a data-staging run waits on its rule; start it, then its conveyor."""
    rucio = RucioServer(HOME / "rucio")
    rucio.start()
    try:
        rucio.add_rse("ESAP_ARCHIVE", HOME / "rse-archive")
        rucio.add_rse("SITE_B", HOME / "rse-site-b")
        files = {f"away/f{i:03d}.dat": f"file {i}\n".encode() for i in range(RUNS)}
        rucio.seed_dataset("away", files, "ESAP_ARCHIVE")
        RucioStore(
            rucio_host=rucio.url,
            account="root",
            username=rucio.user,
            password=SecretStr(rucio.password),
            archive_rse="ESAP_ARCHIVE",
        ).save("rucio", overwrite=True)
        run = _run("data-staging", inputs=["esap:away"], target="SITE_B", store="rucio")
        with get_client(sync_client=True) as client:
            wait_until(
                lambda: [log.message for log in client.read_logs(limit=200)],
                lambda lines: any("replicating" in line for line in lines),
                300,
            )  # its rule made, no conveyor yet: the run waits on it
        rucio.stop()
        away = time.monotonic()
        time.sleep(OUTAGE)
        rucio.start()
        back = time.monotonic()
        with rucio.conveyor():
            done = _final(run, 900)
        with get_client(sync_client=True) as client:
            warned = [
                log.message
                for log in client.read_logs(limit=200)
                if log.flow_run_id == run.id and "cannot be reached" in log.message
            ]
        print(
            f"Rucio away {back - away:.0f} s while staging {RUNS} files waited: the run ended "
            f"{done.state_name} {time.monotonic() - back:.1f} s after it came back; "
            f"{len(warned)} 'cannot be reached' warnings in its log"
        )
    finally:
        rucio.stop()


def main() -> None:
    server = _server()
    worker = gateway = None
    try:
        flows: list[Any] = [warm_flows.long_job, cta_mc_production, data_staging]
        deploy_flows("local", flows, "outage", tags=["esap"])
        worker = _spawn("worker", "worker", "--pool", "local", "--name", "bench")
        wait_until(lambda: _log("worker"), lambda text: "started!" in text, 120)
        gateway = _spawn("gateway", "gateway", "--port", str(GATEWAY_PORT))
        wait_until((HOME / "token").exists, bool, 120)
        wait_until(_gateway_up, bool, 120)
        if "prefect" in ONLY:
            server = prefect_api_away(server)
        if "diracx" in ONLY:
            diracx_away()
        if "rucio" in ONLY:
            rucio_away()
    finally:
        for process in (gateway, worker, server):
            if process is not None:
                _kill(process)
    print(f"logs in {HOME}")


if __name__ == "__main__":
    main()
