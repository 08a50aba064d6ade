"""Container benchmark: 20 short jobs on Docker and on Apptainer, our facilities vs the raw tools.

Raw Docker: the docker SDK (create, start, wait, logs, remove); raw Apptainer: one
`singularity exec` subprocess per job, all started at once. Same images, same machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-containers-")

from blocks import ApptainerFacility, DockerFacility, JobSpec
from blocks.facility import FacilityBlock
from tests.servers.containers import DockerEngine, build_sif, singularity_shim
from tests.servers.venvs import ROOT

JOBS = int(os.environ.get("BENCH_JOBS", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
IMAGE = "esap-test/payload:1"


def raw_docker(engine: DockerEngine, work: Path, round_: int) -> None:
    with contextlib.closing(engine.client()) as client:
        containers = []
        for n in range(JOBS):
            directory = work / f"raw-{round_}-{n}"
            directory.mkdir(parents=True)
            containers.append(
                client.containers.run(
                    IMAGE,
                    ["job"],
                    detach=True,
                    working_dir=str(directory),
                    volumes={str(directory): {"bind": str(directory), "mode": "rw"}},
                    network_mode="none",
                )
            )
        for container in containers:
            assert container.wait()["StatusCode"] == 0
            container.logs()
            container.remove()


def raw_apptainer(singularity: Path, sif: Path, work: Path, round_: int) -> None:
    processes = []
    for n in range(JOBS):
        directory = work / f"raw-{round_}-{n}"
        directory.mkdir(parents=True)
        command = [str(singularity), "run", "--containall", "--bind", f"{directory}:{directory}"]
        command += ["--pwd", str(directory), str(sif), "job"]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for process in processes:
        process.communicate()
        assert process.returncode == 0


def ours(facility: FacilityBlock, image: str, work: Path, round_: int) -> None:
    specs = [
        JobSpec(name=f"ours-{round_}-{n}", image=image, arguments=["job"]) for n in range(JOBS)
    ]
    refs = facility.submit(specs)
    while not all(s.state.is_final for s in facility.poll(refs)):
        time.sleep(0.1)
    outputs = facility.fetch(refs, work / f"fetched-{round_}")
    assert all(o.stdout is not None for o in outputs)


def measure(run: Callable[[int], None]) -> float:
    times = []
    for round_ in range(ROUNDS):
        started = time.perf_counter()
        run(round_)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="esap-bench-work-"))
    engine = DockerEngine(work / "docker")
    engine.start()
    try:
        engine.build_image(IMAGE, work / "build")
        docker = DockerFacility(base_url=engine.url, workdir=work / "docker-jobs", max_cores=64)
        raw = measure(lambda r: raw_docker(engine, work / "raw-docker", r))
        our = measure(lambda r: ours(docker, IMAGE, work / "ours-docker", r))
    finally:
        engine.stop()
    singularity = singularity_shim(work / "bin", [Path(tempfile.gettempdir()), ROOT])
    sif = build_sif(singularity, work / "payload.sif", work)
    apptainer = ApptainerFacility(
        singularity=str(singularity), workdir=work / "sif-jobs", max_cores=os.cpu_count() or 1
    )
    raw_sif = measure(lambda r: raw_apptainer(singularity, sif, work / "raw-sif", r))
    our_sif = measure(lambda r: ours(apptainer, str(sif), work / "ours-sif", r))
    print(f"{JOBS} jobs per round, {ROUNDS} rounds, medians")
    print("| runtime | raw tool | esap-prefect facility | ratio |")
    print(f"| docker | {raw:.2f} s | {our:.2f} s | {our / raw:.2f}x |")
    print(f"| apptainer | {raw_sif:.2f} s | {our_sif:.2f} s | {our_sif / raw_sif:.2f}x |")


if __name__ == "__main__":
    main()
