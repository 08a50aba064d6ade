"""DIRAC benchmark: N jobs submitted and watched to Done, this project vs raw diracx-client.

One real DiracX server; the grid simulator completes jobs in bulk for both contenders.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-dirac-")
os.environ.pop("PREFECT_API_URL", None)
from core.settings import configure_prefect_environment

configure_prefect_environment()

from diracx.client._generated.operations._operations import JobsOperations  # noqa: E402
from diracx.client.patches.jobs.sync import JobsOperations as PatchedJobs  # noqa: E402
from diracx.client.sync import SyncDiracClient  # noqa: E402
from diracx.core.models import VectorSearchOperator  # noqa: E402
from diracx.core.preferences import DiracxPreferences  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from blocks import DiracFacility, JobArray, JobRef, JobSpec, JobStatus  # noqa: E402
from tasks.jobs import submit_jobs, wait_for_jobs  # noqa: E402
from tests.gridsim import GridSimulator  # noqa: E402
from tests.servers.diracx import ADMIN_GROUP, DiracXServer  # noqa: E402

N = int(os.environ.get("BENCH_JOBS", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CALLS: Counter[str] = Counter()


def count_calls() -> None:
    """Wrap the real client methods so every call is counted and passed through."""
    submit = JobsOperations.submit_jdl_jobs
    search = PatchedJobs.search

    def counted_submit(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            CALLS["submit"] += 1
        return submit(self, *args, **kwargs)

    def counted_search(self: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():  # not the simulated grid
            CALLS["search"] += 1
        return search(self, **kwargs)

    JobsOperations.submit_jdl_jobs = counted_submit  # type: ignore[method-assign]
    PatchedJobs.search = counted_search  # type: ignore[method-assign]


class CountingDirac(DiracFacility):
    """The real DIRAC facility, counting poll cycles."""

    _block_type_name = "Counting DIRAC Facility (bench)"

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        CALLS["cycles"] += 1
        return super().poll(refs)


@flow(name="bench-dirac")
def ours(facility: CountingDirac, tag: str, parametric: bool) -> int:
    """Submit N trivial jobs and watch them to Done with this project's tasks."""
    if parametric:
        specs: list[JobSpec] | JobArray = JobArray(
            template=JobSpec(name=f"{tag}-%s", group=tag, executable="true"),
            values=[f"{i:05d}" for i in range(N)],
        )
    else:
        specs = [JobSpec(name=f"{tag}-{i:05d}", group=tag, executable="true") for i in range(N)]
    refs = submit_jobs(facility, specs)
    statuses = wait_for_jobs(facility, refs, min_interval=0.25, max_interval=1.0)
    return sum(s.state.value == "COMPLETED" for s in statuses)


def raw(prefs: DiracxPreferences, tag: str) -> int:
    """The minimal raw client calls for the same work."""
    jdls = [
        f'[Executable = "true"; JobName = "{tag}-{i:05d}"; JobGroup = "{tag}";]' for i in range(N)
    ]
    with SyncDiracClient(diracx_preferences=prefs) as client:
        ids = [
            job.job_id
            for start in range(0, N, 20)
            for job in client.jobs.submit_jdl_jobs(jdls[start : start + 20])
        ]
        while True:
            CALLS["cycles"] += 1
            rows = client.jobs.search(
                parameters=["JobID", "Status"],
                search=[{"parameter": "JobID", "operator": VectorSearchOperator.IN, "values": ids}],
                per_page=10000,
            )
            if all(r["Status"] == "Done" for r in rows):
                return len(rows)
            time.sleep(0.25)


def pilot(sim: GridSimulator, stop: threading.Event) -> None:
    while not stop.is_set():
        sim.run_once()
        time.sleep(0.25)


def measure(run: Callable[[], Any]) -> tuple[float, Counter[str], int]:
    CALLS.clear()
    start = time.perf_counter()
    done = run()
    return time.perf_counter() - start, Counter(CALLS), done


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-diracx-"))
    server = DiracXServer(root / "server")
    server.start()
    stop = threading.Event()
    grid = threading.Thread()
    try:
        owner = server.credentials(root / "owner.json")
        admin = server.credentials(root / "admin.json", "pilot", ADMIN_GROUP)
        sim = GridSimulator(server.url, admin, owner, server.job_db_url, run_payloads=False)
        grid = threading.Thread(target=pilot, args=(sim, stop), daemon=True)
        grid.start()
        prefs = DiracxPreferences(url=server.url, credentials_path=owner)
        facility = CountingDirac(url=server.url, credentials_path=owner)
        count_calls()
        results: dict[str, list[tuple[float, Counter[str], int]]] = {
            "raw": [],
            "ours": [],
            "ours-parametric": [],
        }
        with prefect_test_harness(server_startup_timeout=120):
            ours(facility, "warmup", False)
            for r in range(ROUNDS):
                results["raw"].append(measure(partial(raw, prefs, f"raw{r}")))
                results["ours"].append(measure(partial(ours, facility, f"ours{r}", False)))
                results["ours-parametric"].append(measure(partial(ours, facility, f"par{r}", True)))
    finally:
        stop.set()
        if grid.ident is not None:
            grid.join()
        server.stop()
    raw_median = statistics.median(t for t, _, _ in results["raw"])
    print(f"DIRAC: {N} jobs submitted and watched to Done, {ROUNDS} rounds, medians")
    print(
        f"{'':22}{'wall s':>8}{'submit calls':>14}{'search calls':>14}{'cycles':>8}"
        f"{'per cycle':>11}{'ratio':>8}"
    )
    for name, runs in results.items():
        wall = statistics.median(t for t, _, _ in runs)
        calls = runs[-1][1]
        done = runs[-1][2]
        cycles = max(calls["cycles"], 1)
        lookups = 1 if name.startswith("ours") else 0
        print(
            f"{name:22}{wall:8.2f}{calls['submit']:14d}{calls['search']:14d}{cycles:8d}"
            f"{(calls['search'] - lookups) / cycles:11.2f}{wall / raw_median:7.2f}x"
            + ("" if done == N else f"  ONLY {done} DONE")
        )
    print(
        f"target: submit calls = ceil(N/20) = {-(-N // 20)}; one search per cycle; "
        "ratio <= 1.2x. 'ours' adds one search before submitting (look-before-submit)."
    )


if __name__ == "__main__":
    main()
