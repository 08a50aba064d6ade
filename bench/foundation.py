"""Foundation benchmark: hello world vs a bare Prefect flow; 1,000 local jobs vs raw subprocess.

Prints medians and ratios from one run against one real Prefect API (a temporary server).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-")
os.environ.pop("PREFECT_API_URL", None)
from core.settings import configure_prefect_environment

configure_prefect_environment()

import psutil  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from blocks import JobSpec, LocalFacility  # noqa: E402
from containers import payload  # noqa: E402
from flows.hello_world import hello_world  # noqa: E402
from flows.pipeline import job_prefix  # noqa: E402
from tasks.jobs import submit_jobs, wait_for_jobs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
JOBS = int(os.environ.get("BENCH_JOBS", "1000"))
PARAMS = {
    "Parameter1": 1,
    "Parameter2": 2,
    "Parameter3": 33,
    "Parameter4": "GG",
    "Parameter5": "test",
    "Parameter6": "default",
}


@flow(name="bare-hello-world")
def bare_hello_world() -> dict[str, object]:
    """The same payload subprocess, with none of this project's steps around it."""
    work = Path(tempfile.mkdtemp(prefix="bare-"))
    (work / "parameters.json").write_text(json.dumps(PARAMS))
    subprocess.run(
        [sys.executable, str(payload("hello_world.py")), "parameters.json", "output.json"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    result: dict[str, object] = json.loads((work / "output.json").read_text())
    return result


@flow(name="fan-out")
def fan_out(count: int) -> int:
    """`count` trivial jobs on the local facility: one submit, bulk waits."""
    facility = LocalFacility()
    specs = [JobSpec(name=f"{job_prefix('fan')}-{i:05d}", executable="true") for i in range(count)]
    refs = submit_jobs(facility, specs)
    statuses = wait_for_jobs(facility, refs)
    return sum(s.state.value == "COMPLETED" for s in statuses)


def raw_fan_out(count: int, slots: int) -> int:
    """The peer: the same `true` processes with plain subprocess, `slots` at a time."""
    with ThreadPoolExecutor(slots) as pool:
        codes = list(
            pool.map(lambda _: subprocess.run(["true"], check=False).returncode, range(count))
        )
    return codes.count(0)


class PeakMemory:
    """Samples the RSS of this process plus its children, excluding the Prefect server."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude, self.peak, self._stop = exclude, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                if child.pid in self.exclude:
                    continue
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += child.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    with prefect_test_harness(server_startup_timeout=120):
        server_pids = {p.pid for p in psutil.Process().children(recursive=True)}
        hello_world()  # warm-up: imports, block registration, first DB writes
        bare_hello_world()
        ours, bare = [], []
        for _ in range(ROUNDS):
            ours.append(timed(hello_world))
            bare.append(timed(bare_hello_world))
        mo, mb = statistics.median(ours), statistics.median(bare)
        print(f"(a) hello world, {ROUNDS} rounds alternating, median seconds")
        print(f"    esap-prefect hello world   {mo:6.2f} s")
        print(f"    bare Prefect flow          {mb:6.2f} s")
        print(f"    ratio                      {mo / mb:6.2f}x   (target < 1.5x)")

        slots = LocalFacility().max_cores
        with PeakMemory(server_pids) as memory:
            start = time.perf_counter()
            done = fan_out(JOBS)
            wall = time.perf_counter() - start
        raw_wall = timed(raw_fan_out, JOBS, slots)
        print(f"(b) {JOBS} trivial local jobs ('true'), {slots} slots, one flow")
        print(f"    completed                  {done}/{JOBS}")
        print(f"    wall time                  {wall:6.2f} s   (target < 60 s)")
        print(f"    per job                    {1000 * wall / JOBS:6.2f} ms")
        print(f"    raw subprocess, same slots {raw_wall:6.2f} s   ratio {wall / raw_wall:.2f}x")
        print(f"    peak RSS flow + payloads   {memory.peak / 2**20:6.0f} MB (target < 500 MB)")


if __name__ == "__main__":
    main()
