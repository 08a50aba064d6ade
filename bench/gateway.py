"""Gateway benchmark: create, get and list UWS jobs with 10,000 stored, vs django-uws, one run.

Both are single processes on loopback (uvicorn; gunicorn with one sync worker, as a Django
app is deployed), both on SQLite with bearer tokens; the same client drives both. ESAP's
pages (50 a page, a random page each time) are read from our ESAP mount and from django-uws
with ESAP's global pagination (a second gunicorn, the same database).
"""

from __future__ import annotations

import getpass
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOME = Path(tempfile.mkdtemp(prefix="esap-bench-gateway-"))
os.environ["ESAP_PREFECT_HOME"] = str(HOME)
os.environ.pop("PREFECT_API_URL", None)

import httpx  # noqa: E402

from core.states import UWSPhase  # noqa: E402
from deployments.processes import free_port, spawn, stop_group  # noqa: E402
from gateway.records import JobRecord  # noqa: E402
from gateway.store import JobStore  # noqa: E402
from tests.servers.venvs import server_venv  # noqa: E402

STORED = int(os.environ.get("BENCH_JOBS", "10000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
COUNTS = {
    "create": 400,
    "get": 1000,
    "list 10,000": 100,
    "list LAST=50": 400,
    "ESAP page of 50": 400,
}
IDENTITY = {"Accept-Encoding": "identity"}
SLOW = {("list 10,000", "django-uws"): 10}  # about 30 s per list


def seed_ours(path: Path, owner: str) -> list[str]:
    """STORED PENDING hello-world jobs in the gateway's table."""
    store = JobStore.open(path)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = []
    for i in range(STORED):
        job_id = store.new_job_id()
        store.insert(
            JobRecord(
                job_id=job_id,
                owner=owner,
                workflow="hello-world",
                run_id=None,
                phase=UWSPhase.PENDING,
                parameters={"workflow": "hello-world", "Parameter1": str(i)},
                flow_parameters={"Parameter1": i},
                creation_time=now,
                start_time=None,
                end_time=None,
                execution_duration=0,
                destruction=now + timedelta(days=30),
                error_type=None,
                error_message=None,
                results=[],
                flow_run_id=None,
                token_hash=None,
            )
        )
        ids.append(job_id)
    store.close()
    return ids


def measure(call: Callable[[], httpx.Response], count: int) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) of `count` calls, CONCURRENCY at a time."""
    for _ in range(5):
        call()

    def timed(_: int) -> float:
        start = time.perf_counter()
        answer = call()
        assert answer.status_code < 400, answer.text[:200]
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = sorted(pool.map(timed, range(count)))
    wall = time.perf_counter() - start
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return count / wall, statistics.median(latencies) * 1000, p99 * 1000


def main() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.stack import EmbeddedStack

    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    port, gateway_port, django_port, paged_port = (free_port() for _ in range(4))
    ids = seed_ours(HOME / "gateway.db", getpass.getuser())
    stack = EmbeddedStack(HOME, port=port, gateway_port=gateway_port)
    django_dir = Path(tempfile.mkdtemp(prefix="django-uws-"))
    env = {
        **os.environ,
        "DJANGO_UWS_DIR": str(django_dir),
        "PYTHONPATH": str(ROOT / "bench/djangouws"),
    }
    bin_dir = server_venv("djangouws")
    seeded = subprocess.run(
        [str(bin_dir / "python"), "-m", "esap_uws_site.seed", str(STORED)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    django_token, first = seeded.stdout.split()
    django = spawn(
        [str(bin_dir / "gunicorn"), "-b", f"127.0.0.1:{django_port}", "-w", "1",
         "esap_uws_site.wsgi"],
        django_dir / "gunicorn.log", env,
    )  # fmt: skip
    paged = spawn(
        [str(bin_dir / "gunicorn"), "-b", f"127.0.0.1:{paged_port}", "-w", "1",
         "esap_uws_site.wsgi"],
        django_dir / "gunicorn-paged.log", {**env, "DJANGO_UWS_PAGINATED": "1"},
    )  # fmt: skip
    try:
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
            stack.start()
        deadline = time.monotonic() + 60
        for server, at in ((django, django_port), (paged, paged_port)):
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{at}/uws/jobs/1/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and server.poll() is None, "django is down"
                    time.sleep(0.2)
        token = (HOME / "token").read_text().strip()
        ours = httpx.Client(
            base_url=f"http://127.0.0.1:{gateway_port}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=120,
            limits=httpx.Limits(max_connections=CONCURRENCY),
        )
        theirs = httpx.Client(
            base_url=f"http://127.0.0.1:{django_port}",
            headers={"Authorization": f"Bearer {django_token}", "Accept": "application/json"},
            timeout=120,
            limits=httpx.Limits(max_connections=CONCURRENCY),
        )
        theirs_paged = httpx.Client(
            base_url=f"http://127.0.0.1:{paged_port}",
            headers={"Authorization": f"Bearer {django_token}", "Accept": "*/*"},
            timeout=120,
            limits=httpx.Limits(max_connections=CONCURRENCY),
        )
        pages = STORED // 50

        def page() -> dict[str, int]:
            return {"page": random.randint(1, pages)}

        first_id = int(first)
        distinct = itertools.count()
        calls: dict[str, dict[str, Callable[[], httpx.Response]]] = {
            "create": {
                "esap-prefect": lambda: ours.post(
                    "/uws/jobs", data={"workflow": "hello-world", "Parameter1": "3"}
                ),
                "django-uws": lambda: theirs.post(
                    "/uws/jobs/",
                    json={
                        "runId": "bench",
                        "parameters": [{"key": "type", "value": "batch.submit"}],
                    },
                ),
            },
            "get": {
                "esap-prefect": lambda: ours.get(f"/uws/jobs/{random.choice(ids)}"),
                "django-uws": lambda: theirs.get(
                    f"/uws/jobs/{first_id + random.randrange(STORED)}/"
                ),
            },
            # the same list is kept in memory, plain and gzipped, until a job changes; a
            # distinct AFTER (before every job) makes each request a list never asked for
            "list 10,000": {
                "esap-prefect": lambda: ours.get("/uws/jobs"),
                "not gzipped": lambda: ours.get("/uws/jobs", headers=IDENTITY),
                "uncached": lambda: ours.get(
                    "/uws/jobs", params={"AFTER": f"2000-01-01T00:00:00.{next(distinct):06d}Z"}
                ),
                "django-uws": lambda: theirs.get("/uws/jobs/"),
            },
            "list LAST=50": {
                "esap-prefect": lambda: ours.get("/uws/jobs", params={"LAST": 50}),
            },
            "ESAP page of 50": {
                "esap-prefect": lambda: ours.get("/esap-api/uws/jobs/", params=page()),
                "django-uws": lambda: theirs_paged.get("/esap-api/uws/jobs/", params=page()),
            },
        }
        for operation, contenders in calls.items():
            for name, call in contenders.items():
                count = SLOW.get((operation, name), COUNTS[operation])
                results.setdefault(operation, {})[name] = measure(call, count)
    finally:
        stop_group(django)
        stop_group(paged)
        stack.stop()
    print(
        f"UWS gateway vs django-uws: {STORED:,} jobs stored, {CONCURRENCY} concurrent clients,"
        " JSON, gzip accepted (django-uws sends it plain)"
    )
    print(f"{'operation':16}{'server':14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'rps ratio':>11}")
    for operation, figures in results.items():
        reference = figures.get("django-uws", (0.0, 0.0, 0.0))[0]
        for name, (rps, p50, p99) in figures.items():
            ratio = f"{rps / reference:9.2f}x" if reference else ""
            print(f"{operation:16}{name:14}{rps:9.1f}{p50:9.1f}{p99:9.1f}{ratio:>11}")
    print("target: at least 2x django-uws on each, p99 under 100 ms")


if __name__ == "__main__":
    main()
