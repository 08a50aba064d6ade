"""Docker and Apptainer facilities against a real Docker Engine and real Apptainer.

Both run the same busybox payload image built in the session (no registry is reachable).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks import ApptainerFacility, DockerFacility, JobSpec, JobState
from blocks.outbound import ALLOW_VARIABLE
from core.errors import FatalError
from tests.helpers import settle, wait_running
from tests.servers.containers import DockerEngine

IMAGE = "esap-test/payload:1"


@pytest.fixture
def docker_facility(docker_engine: DockerEngine, tmp_path: Path) -> DockerFacility:
    return DockerFacility(base_url=docker_engine.url, workdir=tmp_path / "jobs", max_cores=2)


@pytest.fixture
def apptainer_facility(singularity: Path, tmp_path: Path) -> ApptainerFacility:
    return ApptainerFacility(
        singularity=str(singularity), workdir=tmp_path / "jobs", max_cores=2, kill_grace=1
    )


def test_docker_runs_the_image_entrypoint_with_env_and_returns_outputs(
    docker_facility: DockerFacility, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    spec = JobSpec(
        name="greet-1",
        image=IMAGE,
        arguments=["and", "more"],
        env={"GREETING": "bonjour"},
        outputs=["outputs/*.txt"],
        memory="256M",
    )
    refs = docker_facility.submit([spec])
    [status] = settle(docker_facility, refs)
    assert status.state is JobState.COMPLETED, status
    assert status.exit_code == 0
    [out] = docker_facility.fetch(refs, tmp_path / "fetched")
    assert [f.name for f in out.files] == ["greet-1/outputs/greeting.txt"]
    text = out.files[0].path.read_text().splitlines()
    assert text[0] == "hello from greet-1: bonjour and more"
    assert text[1] == str(tmp_path / "jobs" / "greet-1")
    assert out.stdout is not None and "bonjour" in out.stdout.read_text()
    # finished containers are cleaned away
    with contextlib.closing(docker_engine.client()) as client:
        assert not client.containers.list(all=True, filters={"label": "esap-prefect.job"})
    assert docker_facility.submit([spec]) == refs  # same name, same spec: nothing new
    assert docker_facility.poll(refs)[0].state is JobState.COMPLETED
    with pytest.raises(ValueError, match="different spec"):
        docker_facility.submit([spec.model_copy(update={"arguments": ["other"]})])


def test_docker_failure_cancel_and_wall_time(
    docker_facility: DockerFacility, tmp_path: Path
) -> None:
    failing = JobSpec(
        name="fails", image=IMAGE, executable="sh", arguments=["-c", "echo broken >&2; exit 3"]
    )
    sleeper = JobSpec(name="sleeper", image=IMAGE, executable="sleep", arguments=["60"])
    overtime = JobSpec(
        name="overtime", image=IMAGE, executable="sleep", arguments=["60"], walltime=1
    )
    refs = docker_facility.submit([failing, sleeper, overtime])
    wait_running(docker_facility, refs[1])
    [cancelled] = docker_facility.cancel([refs[1]])
    assert cancelled.state is JobState.CANCELLED
    by_name = {s.ref.name: s for s in settle(docker_facility, refs)}
    assert by_name["fails"].state is JobState.FAILED
    assert by_name["fails"].exit_code == 3
    assert by_name["overtime"].state is JobState.FAILED
    assert by_name["overtime"].detail == "wall time of 1s exceeded"
    [out] = docker_facility.fetch([refs[0]], tmp_path / "fetched")
    assert out.stderr is not None and out.stderr.read_text().strip() == "broken"


def test_docker_refuses_missing_images_and_imageless_jobs(
    docker_facility: DockerFacility,
) -> None:
    with pytest.raises(FatalError, match="image esap-test/nothing:9 is not on the Docker Engine"):
        docker_facility.submit([JobSpec(name="x", image="esap-test/nothing:9")])
    with pytest.raises(ValueError, match="names no image"):
        docker_facility.submit([JobSpec(name="y", executable="true")])
    with pytest.raises(ValueError, match="asks for 8 cores"):
        docker_facility.submit([JobSpec(name="z", image=IMAGE, cores=8)])


def test_docker_unreachable_engine_is_transient(tmp_path: Path) -> None:
    from core.errors import TransientError

    facility = DockerFacility(base_url=f"unix://{tmp_path}/none.sock", workdir=tmp_path)
    with pytest.raises(TransientError, match="Docker Engine of docker unreachable"):
        facility.submit([JobSpec(name="a", image=IMAGE)])


def test_a_job_outlives_a_docker_engine_restart_and_its_end_is_read_after(
    docker_facility: DockerFacility, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    from core.errors import TransientError

    spec = JobSpec(name="outlives", image=IMAGE, executable="sh",
                   arguments=["-c", "sleep 6; mkdir -p outputs; echo done > outputs/end.txt"],
                   outputs=["outputs/*.txt"])  # fmt: skip
    refs = docker_facility.submit([spec])
    wait_running(docker_facility, refs[0])
    docker_engine.stop_daemon()
    away = time.monotonic()
    try:
        with pytest.raises(TransientError, match="Docker Engine of docker unreachable"):
            docker_facility.poll(refs)
        time.sleep(2)
    finally:
        docker_engine.start()
    back = time.monotonic()
    [status] = settle(docker_facility, refs)
    assert status.state is JobState.COMPLETED and status.exit_code == 0, status
    [out] = docker_facility.fetch(refs, tmp_path / "fetched")
    assert [f.path.read_text() for f in out.files] == ["done\n"]
    print(f"\nDocker Engine away {back - away:.1f} s; the job completed "
          f"{time.monotonic() - back:.1f} s after it was back")  # fmt: skip


def test_apptainer_runs_the_runscript_and_exec_commands(
    apptainer_facility: ApptainerFacility, sif_image: Path, tmp_path: Path
) -> None:
    run = JobSpec(
        name="sif-run",
        image=str(sif_image),
        arguments=["x"],
        env={"GREETING": "hallo"},
        outputs=["outputs/greeting.txt"],
    )
    failing = JobSpec(
        name="sif-fails",
        image=str(sif_image),
        executable="sh",
        arguments=["-c", 'echo "inside: $(cat /proc/1/comm)" >&2; exit 4'],
    )
    refs = apptainer_facility.submit([run, failing])
    first, second = settle(apptainer_facility, refs)
    assert first.state is JobState.COMPLETED, first
    assert second.state is JobState.FAILED and second.exit_code == 4
    out, bad = apptainer_facility.fetch(refs, tmp_path / "fetched")
    lines = out.files[0].path.read_text().splitlines()
    assert lines == ["hello from sif-run: hallo x", str(tmp_path / "jobs" / "sif-run")]
    assert bad.stderr is not None and "inside:" in bad.stderr.read_text()


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_apptainer_pulls_an_image_url_once_and_cancels_jobs(
    apptainer_facility: ApptainerFacility,
    sif_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serving(sif_image.parent) as base:
        monkeypatch.setenv(ALLOW_VARIABLE, base.removeprefix("http://"))  # a site registry
        url = f"{base}/{sif_image.name}"
        local = apptainer_facility.local_image(url)
        assert local.read_bytes() == sif_image.read_bytes()
    # the server is gone: the cached copy serves the job
    spec = JobSpec(name="sif-sleep", image=url, executable="sleep", arguments=["60"])
    refs = apptainer_facility.submit([spec])
    wait_running(apptainer_facility, refs[0])
    [status] = apptainer_facility.cancel(refs)
    assert status.state is JobState.CANCELLED
    monkeypatch.setenv(ALLOW_VARIABLE, "127.0.0.1:9")
    with pytest.raises(FatalError, match=r"^image http://127\.0\.0\.1:9/none\.sif cannot be fetch"):
        apptainer_facility.local_image("http://127.0.0.1:9/none.sif")
    with pytest.raises(FatalError, match="is not a SIF image file"):
        apptainer_facility.submit([JobSpec(name="nope", image="relative.sif")])
    with pytest.raises(FatalError, match="scheme ftp"):
        apptainer_facility.local_image("ftp://example.org/x.sif")


def test_apptainer_reports_its_version_and_image_labels_through_spython(
    apptainer_facility: ApptainerFacility, sif_image: Path
) -> None:
    assert apptainer_facility.version().startswith("apptainer version 1.")
    labels = apptainer_facility.image_labels(str(sif_image))
    assert any(key.startswith("org.label-schema.") for key in labels), labels
    with pytest.raises(FatalError, match="is not a SIF image file"):
        apptainer_facility.image_labels("/no/such.sif")
