"""Start latency of every container pool beside Prefect's process pool, on one `up` stack.

Hello World deployment runs, round-robin over the pools (local warm, process, apptainer with
the runtime SIF, docker with the runtime image): flow run created -> running, -> Completed.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments.processes import free_port  # noqa: E402
from tests.servers.containers import (  # noqa: E402
    IMAGES,
    DockerEngine,
    build_runtime_images,
    singularity_shim,
)
from tests.stack import CLI, launch_up  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
POOLS = {"local": "local", "process": "process", "apptainer": "apptainer", "docker": "docker"}


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "started!" not in log.read_text():
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        yield
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(60)


def _deploy_process_pool(api: str) -> None:
    """A pool of Prefect's own process worker, Hello World deployed on it."""
    os.environ["PREFECT_API_URL"] = api  # before Prefect is imported: its settings read it
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.types.entrypoint import EntrypointType
    from prefect.workers.process import ProcessWorker

    from flows.hello_world import hello_world

    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name="process", type="process", base_job_template=template),
            overwrite=True,
        )
    entry = EntrypointType.MODULE_PATH
    hello_world.to_deployment(
        name="process", work_pool_name="process", entrypoint_type=entry
    ).apply()  # type: ignore[union-attr]


def one_run(deployment: str) -> dict[str, float]:
    """One Hello World run of `deployment`: seconds to running and to Completed."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = run_deployment(f"hello-world/{deployment}", timeout=0, as_subflow=False)
    with get_client(sync_client=True) as client:
        while True:
            now = client.read_flow_run(run.id)  # type: ignore[union-attr]
            if now.state is not None and now.state.is_final():
                break
            time.sleep(0.2)
    assert now.state_type is not None and now.state_type.value == "COMPLETED", now.state
    assert now.start_time is not None and now.end_time is not None and now.created is not None
    created = now.created.timestamp()
    return {
        "created -> running": now.start_time.timestamp() - created,
        "created -> Completed": now.end_time.timestamp() - created,
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="esap-bench-pool-start-"))
    home = work / "home"
    home.mkdir()
    with ExitStack() as stack:
        engine = DockerEngine(work / "docker")
        engine.start()
        stack.callback(engine.stop)
        singularity = singularity_shim(work / "bin", [Path(tempfile.gettempdir()), ROOT])
        built = build_runtime_images(engine, singularity)
        assert built.returncode == 0, built.stderr[-3000:]
        print(built.stdout, end="")
        (home / "images").symlink_to(IMAGES)
        port, gateway_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"ESAP_PREFECT_HOME": str(home), "DOCKER_HOST": engine.url}
        up = launch_up(home, port, gateway_port, env)
        stack.callback(up.communicate, timeout=120)
        stack.callback(up.send_signal, signal.SIGTERM)
        api = f"http://127.0.0.1:{port}/api"
        env |= {"PREFECT_API_URL": api}
        subprocess.run(
            [CLI, "facilities", "add", "apptainer", "bench", "--singularity", str(singularity)],
            env=env,
            check=True,
            capture_output=True,
        )
        _deploy_process_pool(api)
        for pool in ("process", "apptainer", "docker"):
            stack.enter_context(
                _process([CLI, "worker", "--pool", pool], env, work / f"{pool}.log")
            )
        results: dict[str, list[dict[str, float]]] = {pool: [] for pool in POOLS}
        for deployment in POOLS.values():
            one_run(deployment)  # warm up: images cached, imports compiled
        for _ in range(RUNS):
            for pool, deployment in POOLS.items():
                results[pool].append(one_run(deployment))
    print(f"Hello World deployment runs per pool, {RUNS} each round-robin (after one), medians")
    phases = list(results["local"][0])
    print(f"{'pool':12}" + "".join(f"{p:>24}" for p in phases) + f"{'/ process':>12}")
    base = statistics.median(r[phases[0]] for r in results["process"])
    for pool in POOLS:
        row = [statistics.median(r[p] for r in results[pool]) for p in phases]
        print(f"{pool:12}" + "".join(f"{v:24.2f}" for v in row) + f"{row[0] / base:11.2f}x")
    print("target: every pool's start (created -> running) within 2x of the process pool's")


if __name__ == "__main__":
    main()
