"""CONCORDIA benchmark: select versus build per facility; runs through the project versus raw tools.

Select-or-build: the CORSIKA image of one configuration built from the stand-in source, then
selected, on Docker and on Apptainer. Runs: N runs x 10 showers of that image on Apptainer
(raw: one `singularity exec` per run, all started at once, each filling its card) and on DIRAC
(raw: diracx-client submitting the same parametric JDL and sandbox, following with one search
a cycle and downloading each output sandbox), with the grid simulator playing the nodes.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-concordia-")
os.environ.pop("PREFECT_API_URL", None)
from core.settings import configure_prefect_environment  # noqa: E402

configure_prefect_environment()

import docker  # noqa: E402
from diracx.api.jobs import create_sandbox, download_sandbox  # noqa: E402
from diracx.client.aio import AsyncDiracClient  # noqa: E402
from diracx.client.sync import SyncDiracClient  # noqa: E402
from diracx.core.models import VectorSearchOperator  # noqa: E402
from diracx.core.preferences import DiracxPreferences  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from blocks import ApptainerFacility, DiracFacility, DockerFacility  # noqa: E402
from blocks.corsika import CorsikaSource, select_or_build  # noqa: E402
from blocks.dirac.connection import run_async  # noqa: E402
from blocks.dirac.facility import CONTAINER_SCRIPT, CONTAINER_SCRIPT_TEXT  # noqa: E402
from core.corsika import RUN_PLACEHOLDER, BuildConfig, SteeringCard  # noqa: E402
from flows.concordia import concordia  # noqa: E402
from tests.gridsim import GridSimulator  # noqa: E402
from tests.servers.containers import IMAGES, DockerEngine, singularity_shim  # noqa: E402
from tests.servers.diracx import ADMIN_GROUP, DiracXServer  # noqa: E402
from tests.servers.venvs import ROOT as CACHE_ROOT  # noqa: E402
from tests.test_concordia import stand_in_source  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DIRAC_RUNS = int(os.environ.get("BENCH_DIRAC_RUNS", str(RUNS)))
SHOWERS = 10
BUILD = BuildConfig(options=())
PARAMETERS: dict[str, Any] = {
    "experiment": "KM3NeT",
    "primary": "proton",
    "energy_range": (10.0, 1000.0),
    "showers_per_run": SHOWERS,
}


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def card_template() -> str:
    return SteeringCard(
        run=1,
        showers=SHOWERS,
        primary=14,
        slope=-2.0,
        energy_min=10.0,
        energy_max=1000.0,
        observation_level=0.0,
    ).template()


def command(run: str) -> str:
    return (
        f"sed s/{RUN_PLACEHOLDER}/{run}/g card.template > run{run}.card && "
        f"exec {BUILD.executable} < run{run}.card"
    )


def raw_apptainer(singularity: Path, sif: str, work: Path, first: int) -> None:
    """One `singularity exec` per run, all at once, as the Apptainer facility starts them."""
    processes = []
    for number in range(first, first + RUNS):
        run = f"{number:06d}"
        folder = work / f"raw-{run}"
        folder.mkdir(parents=True)
        (folder / "card.template").write_text(card_template())
        argv = [str(singularity), "exec", "--containall", "--bind", str(folder), "--pwd"]
        argv += [str(folder), sif, "/bin/sh", "-c", command(run)]
        processes.append(
            subprocess.Popen(
                argv,
                stdout=(folder / "stdout.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    for process in processes:
        assert process.wait() == 0
    for number in range(first, first + RUNS):
        assert (work / f"raw-{number:06d}" / f"DAT{number:06d}").stat().st_size > 0


def raw_dirac(
    prefs: DiracxPreferences, singularity: Path, sif: str, work: Path, first: int
) -> None:
    """The same parametric JDL with the raw client: submit, follow, download every sandbox."""
    work.mkdir(parents=True)
    (work / "card.template").write_text(card_template())
    (work / CONTAINER_SCRIPT).write_text(CONTAINER_SCRIPT_TEXT)
    runs = [f"{n:06d}" for n in range(first, first + DIRAC_RUNS)]

    async def upload() -> str:
        async with AsyncDiracClient(diracx_preferences=prefs) as client:
            files = [work / "card.template", work / CONTAINER_SCRIPT]
            return str(await create_sandbox(files, client=client))

    pfn = run_async(upload())
    line = command("%s")
    with SyncDiracClient(diracx_preferences=prefs) as client:
        ids: list[int] = []
        for start in range(0, len(runs), 20):
            values = ", ".join(f'"{r}"' for r in runs[start : start + 20])
            jdl = (
                f'[Executable = "/bin/sh"; Arguments = "{CONTAINER_SCRIPT} {singularity} {sif} '
                f'/bin/sh -c \'{line}\'"; JobName = "raw-%s"; Parameters = {{{values}}}; '
                f'InputSandbox = {{"{pfn}"}}; OutputSandbox = {{"std.out", "std.err", '
                f'"DAT%s", "run%s.card"}}; CPUTime = 3600;]'
            )
            ids += [j.job_id for j in client.jobs.submit_jdl_jobs([jdl])]
        while True:
            rows = client.jobs.search(
                parameters=["JobID", "Status"],
                search=[{"parameter": "JobID", "operator": VectorSearchOperator.IN, "values": ids}],
                per_page=10000,
            )
            if all(r["Status"] in ("Done", "Failed") for r in rows):
                break
            time.sleep(2)
        assert all(r["Status"] == "Done" for r in rows), rows
        pfns = [client.jobs.get_job_sandboxes(i).get("Output") or [] for i in ids]

    async def download() -> None:
        async with AsyncDiracClient(diracx_preferences=prefs) as client:
            for job, found in zip(ids, pfns, strict=True):
                for output in found:
                    await download_sandbox(output, work / f"out-{job}", client=client)

    run_async(download())


def pilot(sim: GridSimulator, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            sim.run_once()
        except Exception as exc:
            print(f"pilot: {exc}", file=sys.stderr)
        time.sleep(0.25)


def main() -> None:
    os.environ["ESAP_PREFECT_IMAGES"] = str(IMAGES)
    work = Path(tempfile.mkdtemp(prefix="bench-concordia-"))
    engine = DockerEngine(work / "docker")
    engine.start()
    singularity = singularity_shim(work / "bin", [Path(tempfile.gettempdir()), CACHE_ROOT])
    server = DiracXServer(work / "diracx")
    server.start()
    stop = threading.Event()
    rows: list[tuple[str, float, float]] = []
    try:
        source = CorsikaSource(tarball=stand_in_source(work))
        with prefect_test_harness(server_startup_timeout=120):
            source.save("default", overwrite=True)
            dock = DockerFacility(base_url=engine.url)
            dock.save("bench-docker", overwrite=True)
            apptainer = ApptainerFacility(singularity=str(singularity), workdir=work / "jobs")
            apptainer.save("bench-apptainer", overwrite=True)
            client = docker.DockerClient(base_url=engine.url)
            for image in client.images.list(name="esap-prefect/corsika"):
                client.images.remove(image.id, force=True)
            for old in apptainer.image_cache_dir().glob("corsika-*.sif"):
                old.unlink()
            selects: dict[str, tuple[float, float]] = {}
            facilities: dict[str, DockerFacility | ApptainerFacility] = {
                "docker": dock,
                "apptainer": apptainer,
            }
            for name, facility in facilities.items():
                image = functools.partial(select_or_build, facility, BUILD, source)
                build, made = timed(image)
                select, again = timed(image)
                assert made.built and not again.built and made.digest == again.digest
                selects[name] = (build, select)
            sif = str(select_or_build(apptainer, BUILD, source).reference)

            projects, raws = [], []
            for round_ in range(ROUNDS):  # alternating; fresh run numbers each round
                first = 1 + round_ * RUNS
                project, result = timed(
                    functools.partial(
                        concordia,
                        facility="bench-apptainer",
                        runs=RUNS,
                        first_run=first,
                        **PARAMETERS,
                    )
                )
                assert len(result.simulated) == RUNS
                projects.append(project)
                folder = work / f"raw-apptainer-{round_}"
                raws.append(
                    timed(functools.partial(raw_apptainer, singularity, sif, folder, first))[0]
                )
            name = f"apptainer, {RUNS} runs x {SHOWERS} showers, median of {ROUNDS}"
            rows.append((name, statistics.median(projects), statistics.median(raws)))
            print(f"measured: {rows[-1]}, select/build {selects}", file=sys.stderr)

            owner = server.credentials(work / "owner.json")
            admin = server.credentials(work / "admin.json", "pilot", ADMIN_GROUP)
            key = result.image_key
            DiracFacility(
                url=server.url,
                credentials_path=owner,
                singularity=str(singularity),
                images={key: sif},
            ).save("bench-grid", overwrite=True)
            sim = GridSimulator(server.url, admin, owner, server.job_db_url)
            grid = threading.Thread(target=pilot, args=(sim, stop), daemon=True)
            grid.start()
            project, done = timed(
                lambda: concordia(
                    facility="bench-grid", runs=DIRAC_RUNS, first_run=1001, **PARAMETERS
                )
            )
            assert len(done.simulated) == DIRAC_RUNS
            prefs = DiracxPreferences(url=server.url, credentials_path=owner)
            raw, _ = timed(lambda: raw_dirac(prefs, singularity, sif, work / "raw-dirac", 2001))
            rows.append((f"DIRAC, {DIRAC_RUNS} runs x {SHOWERS} showers", project, raw))
    finally:
        stop.set()
        server.stop()
        engine.stop()
    print("CONCORDIA: select-or-build (stand-in CORSIKA source), seconds")
    print(f"{'':12}{'build':>8}{'select':>8}")
    for name, (build, select) in selects.items():
        print(f"{name:12}{build:8.1f}{select:8.2f}")
    print("runs through the project (plan, image, array, archive, read back) vs raw tools")
    print(f"{'':34}{'project s':>10}{'raw s':>8}{'ratio':>8}")
    for name, project, raw in rows:
        print(f"{name:34}{project:10.1f}{raw:8.1f}{project / raw:7.2f}x")
    print("target: within 1.2x of the raw tools once the image exists")


if __name__ == "__main__":
    main()
