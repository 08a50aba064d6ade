"""The `apptainer` and `docker` work pools with the runtime images built here, as operators do.

`esap-prefect images build` makes the images (real Docker Engine, real Apptainer); `up`'s
bootstrap creates the pools; `esap-prefect worker` runs our apptainer worker and
prefect-docker's worker against the session's Prefect API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from operator import not_
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.states import Cancelling
from prefect.types.entrypoint import EntrypointType
from prefect_kubernetes.credentials import KubernetesClusterConfig

from blocks.apptainer import ApptainerFacility
from blocks.kubernetes import KubernetesFacility
from blocks.local import LocalFacility
from core.backoff import wait_until
from core.errors import FatalError
from core.files import write_json
from core.jobs import JobSpec
from core.states import JobState
from deployments import runtime_image
from deployments.bootstrap import ensure_work_pools
from flows.hello_world import hello_world
from flows.pipeline import jobs_record
from tests import warm_flows
from tests.helpers import CLI, PoolWorker, alive, final_run, run_logs
from tests.servers.containers import IMAGES, DockerEngine, build_runtime_images
from tests.servers.kube_apiserver import ApiError
from tests.servers.kubelet import POD, StandInCluster
from tests.servers.venvs import ROOT
from workers.apptainer import ApptainerWorker
from workers.kubernetes import GRACE_VARIABLE, engine_grace

pytestmark = pytest.mark.slow
TESTS_INSIDE = "/esap-tests"  # the tests package, bound read-only, for tests.warm_flows


@pytest.fixture(scope="module")
def pool_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The home `up` and the workers use in this module (its images: the shared cache)."""
    before = os.environ.get("ESAP_PREFECT_HOME")
    home = tmp_path_factory.mktemp("pool-home")
    os.environ["ESAP_PREFECT_HOME"] = str(home)
    yield home
    if before is None:
        del os.environ["ESAP_PREFECT_HOME"]
    else:
        os.environ["ESAP_PREFECT_HOME"] = before


@pytest.fixture(scope="module")
def pools(
    prefect_api: str,
    pool_home: Path,
    docker_engine: DockerEngine,
    singularity: Path,
    kube: StandInCluster,
) -> dict[str, str]:
    """Pools made by `up` before any image was built (their descriptions), then after."""
    del prefect_api
    ensure_work_pools()
    before = {name: _pool(name)["description"] for name in ("apptainer", "docker")}
    built = build_runtime_images(docker_engine, singularity)
    assert built.returncode == 0, built.stderr[-3000:]
    (pool_home / "images").symlink_to(IMAGES)
    ApptainerFacility(singularity=str(singularity)).save("pool-apptainer", overwrite=True)
    (pool_home / "cluster-jobs").mkdir()
    KubernetesFacility(api_url=kube.url, host_path=pool_home / "cluster-jobs").save("cluster")
    ensure_work_pools()
    for fn, name, variables in _deployments(pool_home):
        deployment = cast(
            RunnerDeployment,
            fn.to_deployment(
                name=name,
                work_pool_name=name.split("-")[0],
                job_variables=variables,
                entrypoint_type=EntrypointType.MODULE_PATH,
            ),
        )
        deployment.apply()
    return before


def _deployments(home: Path) -> list[tuple[Any, str, dict[str, Any]]]:
    tests = f"{ROOT / 'tests'}:{TESTS_INSIDE}/tests"
    env = {"PYTHONPATH": TESTS_INSIDE}
    docker = {
        "volumes": [f"{home}:{home}", f"{tests}:ro"],
        "env": {**env, "ESAP_PREFECT_HOME": str(home)},
    }
    return [
        (hello_world, "apptainer", {}),
        (hello_world, "docker", {}),
        (warm_flows.sleeper, "apptainer", {"binds": [f"{tests}:ro"], "env": env}),
        (
            warm_flows.sleeper,
            "apptainer-walltime",
            {"binds": [f"{tests}:ro"], "env": env, "walltime": 8},
        ),
        (warm_flows.sleeper, "docker", docker),
        (hello_world, "kubernetes", {}),
        (warm_flows.sleeper, "kubernetes", _kube_variables(home, tests)),
        (hello_world, "kubernetes-broken", {"command": "sh -c 'echo broken >&2; exit 3'"}),
        (hello_world, "kubernetes-unpullable", {"image": "nowhere.invalid/none:1"}),
    ]


def _kube_variables(home: Path, tests: str) -> dict[str, Any]:
    """The pool's home volume and env, and the tests folder, read-only, for warm_flows."""
    source, target = tests.split(":")[:2]
    return {
        "volumes": [
            {"name": "esap-home", "hostPath": {"path": str(home), "type": "Directory"}},
            {"name": "tests", "hostPath": {"path": source, "type": "Directory"}},
        ],
        "volume_mounts": [
            {"name": "esap-home", "mountPath": str(home)},
            {"name": "tests", "mountPath": target, "readOnly": True},
        ],
        "env": {"ESAP_PREFECT_HOME": str(home), "PYTHONPATH": TESTS_INSIDE},
    }


def _pool(name: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(name)
    defaults = {
        key: value.get("default")
        for key, value in pool.base_job_template["variables"]["properties"].items()
    }
    return {"description": pool.description, "type": pool.type, **defaults}


@pytest.fixture(scope="module")
def apptainer_worker(
    pools: dict[str, str], prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoolWorker]:
    log = tmp_path_factory.mktemp("apptainer-worker") / "worker.log"
    env = {"ESAP_APPTAINER_WORKER_POLL_SECONDS": "1"}
    worker = PoolWorker(
        prefect_api, log, "--pool", "apptainer", "--name", "apptainer-test", env=env
    )
    yield worker.start()
    worker.stop()


@pytest.fixture(scope="module")
def docker_worker(
    pools: dict[str, str],
    prefect_api: str,
    docker_engine: DockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PoolWorker]:
    log = tmp_path_factory.mktemp("docker-worker") / "worker.log"
    env = {"DOCKER_HOST": docker_engine.url}
    worker = PoolWorker(prefect_api, log, "--pool", "docker", "--name", "docker-test", env=env)
    yield worker.start()
    worker.stop()


def _run(deployment: str, **parameters: Any) -> FlowRun:
    return cast(
        FlowRun, run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
    )


def test_images_are_built_once_and_reused_with_their_recipe_recorded(
    pools: dict[str, str], docker_engine: DockerEngine, singularity: Path
) -> None:
    again = build_runtime_images(docker_engine, singularity)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = again.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["docker", "apptainer"], lines
    assert all(line.endswith("reused") for line in lines), "nothing changed: nothing rebuilt"
    recorded = runtime_image.recorded(IMAGES)
    tag, sif = recorded["docker"].reference, recorded["apptainer"].reference
    assert tag.startswith("esap-prefect/runtime:0.1.0-") and sif.endswith(".sif")
    with contextlib.closing(docker_engine.client()) as client:
        image = client.images.get(tag)
    assert image.id == recorded["docker"].digest
    assert image.labels[runtime_image.LABEL_KEY] == recorded["docker"].key
    labels = ApptainerFacility(singularity=str(singularity)).image_labels(sif)
    assert labels[runtime_image.LABEL_KEY] == recorded["apptainer"].key


def test_up_creates_the_pools_saying_what_they_lack_then_what_they_run(
    pools: dict[str, str], singularity: Path
) -> None:
    for name in ("apptainer", "docker"):
        assert "Not configured: no runtime image is built" in pools[name], pools[name]
        assert f"esap-prefect images build --{name}" in pools[name]
    recorded = runtime_image.recorded(IMAGES)
    apptainer, docker = _pool("apptainer"), _pool("docker")
    assert apptainer["type"] == "apptainer" and docker["type"] == "docker"
    assert apptainer["image"] == recorded["apptainer"].reference
    assert apptainer["singularity"] == str(singularity), "the saved facility's command"
    assert f"Image: {apptainer['image']}" in apptainer["description"]
    assert (
        docker["image"] == recorded["docker"].reference and docker["image_pull_policy"] == "Never"
    )
    assert f"Image: {docker['image']}" in docker["description"]


@pytest.mark.parametrize("pool", ["apptainer", "docker"])
def test_hello_world_completes_in_the_runtime_image_and_archives_on_the_host(
    pool: str, request: pytest.FixtureRequest, pool_home: Path
) -> None:
    request.getfixturevalue(f"{pool}_worker")
    run = final_run(_run(f"hello-world/{pool}").id, 300)
    assert run.state_type is StateType.COMPLETED, (run.state, run_logs(run.id)[-5:])
    archived = list((pool_home / "results" / "hello-world" / str(run.id)).rglob("output.json"))
    assert len(archived) == 1, "archived into the worker's home, through the shared bind"
    assert json.loads(archived[0].read_text())["type"] == "batch.submit"
    assert run.infrastructure_pid, "the worker recorded what it started"


def _sleeping(deployment: str, home: Path) -> tuple[FlowRun, dict[str, Any], Path]:
    out, hook = home / f"sleeper-{time.monotonic_ns()}.json", home / f"hook-{time.monotonic_ns()}"
    run = _run(deployment, out=str(out), hook=str(hook))
    assert wait_until(out.exists, bool, 180), f"the sleeper of {run.id} never wrote {out}"
    return run, json.loads(out.read_text()), hook


def test_cancelling_an_apptainer_run_kills_its_container(
    apptainer_worker: PoolWorker, pool_home: Path
) -> None:
    run, inside, hook = _sleeping("sleeper/apptainer", pool_home)
    assert inside["pid"] != inside["ppid"] and inside["grandchild"] > 0
    leader = _cancel_and_wait(run.id)
    assert not _groupalive(leader), "nothing of the container's process group is left"
    assert hook.read_text().startswith("cancellation hook ran"), "the flow's hook ran inside"


def _cancel_and_wait(run_id: UUID) -> int:
    """Cancel a running run; the pid that led its container, once it has ended."""
    with get_client(sync_client=True) as client:
        found = wait_until(
            lambda: client.read_flow_run(run_id).infrastructure_pid, bool, 30
        )  # recorded as "<host>:<pid>" once the worker has the process
        assert found, "the worker never recorded the run's process"
        leader = int(str(found).rsplit(":", 1)[-1])
        assert alive(leader)
        client.set_flow_run_state(run_id, Cancelling(), force=True)
    assert final_run(run_id, 120).state_type is StateType.CANCELLED, run_logs(run_id)
    assert wait_until(lambda: alive(leader), lambda alive: not alive, 30) is False
    return leader


def test_a_restarted_apptainer_worker_cancels_runs_its_predecessor_started(
    apptainer_worker: PoolWorker, pool_home: Path
) -> None:
    run, _, _ = _sleeping("sleeper/apptainer", pool_home)
    # a payload job the run owns, noted as its flow notes them, on a facility of the host
    facility = LocalFacility(workdir=pool_home / "orphan-jobs", kill_grace=1)
    facility.save("orphan-local", overwrite=True)
    [ref] = facility.submit([JobSpec(name="orphan-payload", executable="sleep", arguments=["300"])])
    write_json(
        jobs_record(str(run.id)),
        {"facility": "orphan-local", "refs": [ref.model_dump(mode="json")]},
    )
    apptainer_worker.kill()  # the container lives on: it leads its own session
    apptainer_worker.start()
    leader = _cancel_and_wait(run.id)
    assert not _groupalive(leader)
    with get_client(sync_client=True) as client:
        shown = [s.type for s in client.read_flow_run_states(run.id)]
    assert StateType.CRASHED not in shown, f"never shown Crashed on the way: {shown}"
    said = wait_until(
        lambda: " ".join(run_logs(run.id)), lambda logs: "cancelled 1 job(s)" in logs, 30
    )
    assert "container of a previous worker stopped" in said
    assert "cancelled 1 job(s) on orphan-local: orphan-payload CANCELLED" in said, said
    [status] = facility.poll([ref])
    assert status.state is JobState.CANCELLED, "the flow's payload job did not run on"
    assert "Traceback" not in said, "the run outlived its worker without a broken pipe"


def _groupalive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_an_apptainer_run_past_its_wall_time_is_stopped_and_crashed(
    apptainer_worker: PoolWorker, pool_home: Path
) -> None:
    run, _, _ = _sleeping("sleeper/apptainer-walltime", pool_home)
    ended = final_run(run.id, 120)
    assert ended.state_type is StateType.CRASHED, ended.state
    logs = wait_until(lambda: run_logs(run.id), lambda ls: any("wall time" in m for m in ls), 30)
    assert "wall time of 8 s exceeded: the container was stopped" in logs
    assert "Worker 'apptainer-test' stopped!" not in apptainer_worker.log.read_text()


def test_cancelling_a_docker_run_stops_its_container(
    docker_worker: PoolWorker, docker_engine: DockerEngine, pool_home: Path
) -> None:
    run, _, _ = _sleeping("sleeper/docker", pool_home)
    label = f"io.prefect.flow-run-id={run.id}"
    with contextlib.closing(docker_engine.client()) as client:
        [container] = client.containers.list(filters={"label": label})
        assert container.status == "running"
        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(run.id, Cancelling(), force=True)
        assert final_run(run.id, 120).state_type is StateType.CANCELLED
        running = wait_until(
            lambda: client.containers.list(filters={"label": label}), lambda c: not c, 60
        )
    assert running == [], "the run's container stopped"


def _empty_pool(name: str, kind: str, template: dict[str, Any]) -> None:
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name=name, type=kind, base_job_template=template), overwrite=True
        )


def test_workers_of_pools_without_an_image_refuse_to_start_in_one_line(
    pools: dict[str, str], prefect_api: str, docker_engine: DockerEngine, singularity: Path
) -> None:
    apptainer = ApptainerWorker.get_default_base_job_template()
    apptainer["variables"]["properties"]["singularity"]["default"] = str(singularity)
    _empty_pool("apptainer-empty", "apptainer", apptainer)
    docker = json.loads(json.dumps(_docker_template()))
    docker["variables"]["properties"]["image"]["default"] = "esap-prefect/runtime:missing"
    _empty_pool("docker-empty", "docker", docker)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "DOCKER_HOST": docker_engine.url}
    for pool, line in (
        ("apptainer-empty", "the apptainer worker cannot start: the pool names no image"),
        ("docker-empty", "error: the docker worker cannot start: the Docker Engine has no image"),
    ):
        answer = subprocess.run(
            [CLI, "worker", "--pool", pool],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        said = answer.stdout + answer.stderr
        assert answer.returncode != 0 and line in said, said[-2000:]
        assert "esap-prefect images build" in said and "Traceback" not in said, said[-2000:]


def _docker_template() -> dict[str, Any]:
    from prefect_docker.worker import DockerWorker

    return dict(DockerWorker.get_default_base_job_template())


def test_the_launcher_passes_the_runs_variables_not_the_hosts() -> None:
    from workers.apptainer_launch import container_env

    environ = {
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
        "PREFECT__FLOW_RUN_ID": str(UUID(int=1)),
        "PREFECT_HOME": "/home/op/.prefect",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite:///secret.db",
        "ESAP_PREFECT_HOME": "/home/op/esap",
        "HOME": "/home/op",
        "PATH": "/usr/bin",
        "GREETING": "hi",
    }
    alone = container_env(environ, ["GREETING"], None)
    assert alone == {
        "APPTAINERENV_PREFECT_API_URL": "http://127.0.0.1:1/api",
        "APPTAINERENV_PREFECT__FLOW_RUN_ID": str(UUID(int=1)),
        "APPTAINERENV_GREETING": "hi",
    }
    shared = container_env(environ, [], "/home/op/esap")
    assert shared["APPTAINERENV_ESAP_PREFECT_HOME"] == "/home/op/esap"
    assert "APPTAINERENV_PREFECT_HOME" not in shared, "not under the shared home"


@pytest.fixture(scope="module")
def kubernetes_worker(
    pools: dict[str, str], prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoolWorker]:
    log = tmp_path_factory.mktemp("kubernetes-worker") / "worker.log"
    grace = {"ESAP_PREFECT_KUBERNETES_CANCEL_GRACE": "20"}  # a frozen engine's Job goes sooner
    worker = PoolWorker(
        prefect_api, log, "--pool", "kubernetes", "--name", "kubernetes-test", env=grace
    )
    yield worker.start()
    worker.stop()


def test_up_points_the_kubernetes_pool_at_the_saved_cluster(
    pools: dict[str, str], kube: StandInCluster, pool_home: Path
) -> None:
    pool = _pool("kubernetes")
    assert pool["type"] == "esap-kubernetes"
    assert pool["image"] == runtime_image.recorded(IMAGES)["docker"].reference
    assert pool["namespace"] == "default" and pool["host_network"] is True
    assert pool["env"] == {"ESAP_PREFECT_HOME": str(pool_home)}
    assert "Cluster: facility cluster, namespace default" in pool["description"]
    config = KubernetesClusterConfig.load("esap-cluster")
    assert config.config["clusters"][0]["cluster"]["server"] == kube.url


def test_hello_world_completes_as_a_job_on_the_kubernetes_pool(
    kubernetes_worker: PoolWorker, kube: StandInCluster, pool_home: Path
) -> None:
    run = final_run(_run("hello-world/kubernetes").id, 300)
    assert run.state_type is StateType.COMPLETED, (run.state, run_logs(run.id)[-5:])
    archived = list((pool_home / "results" / "hello-world" / str(run.id)).rglob("output.json"))
    assert len(archived) == 1, "archived into the worker's home, through the hostPath volume"
    namespace, _, job = str(run.infrastructure_pid).partition(":")
    found = wait_until(
        lambda: kube.cluster.get("jobs", namespace, job),
        lambda j: any(c["type"] == "Complete" for c in j["status"].get("conditions", [])),
        60,
    )  # the flow reports Completed a moment before its process, and so its pod, ends
    assert found["metadata"]["labels"]["prefect.io/flow-run-id"] == str(run.id)
    assert found["status"].get("succeeded") == 1, found["status"]
    assert found["spec"]["ttlSecondsAfterFinished"] == 3600, "ended Jobs expire"


def test_cancelling_a_running_kubernetes_run_ends_its_pod(
    kubernetes_worker: PoolWorker, kube: StandInCluster, pool_home: Path
) -> None:
    run, _, hook = _sleeping("sleeper/kubernetes", pool_home)
    namespace, _, job = str(wait_until(lambda: _infrastructure(run.id), bool, 60)).partition(":")
    assert kube.cluster.get("jobs", namespace, job)["status"].get("active") == 1
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    assert final_run(run.id, 120).state_type is StateType.CANCELLED
    ended = wait_until(
        lambda: kube.cluster.get("jobs", namespace, job)["status"],
        lambda status: bool(status.get("conditions")),
        60,
    )
    assert ended.get("active") == 0, "the run's engine ended its pod"
    assert hook.read_text().startswith("cancellation hook ran"), "the flow's hook ran in it"


def test_cancelling_a_kubernetes_run_whose_pod_never_started_deletes_its_job(
    kubernetes_worker: PoolWorker, kube: StandInCluster
) -> None:
    run = _run("hello-world/kubernetes-unpullable")
    namespace, _, job = str(wait_until(lambda: _infrastructure(run.id), bool, 60)).partition(":")
    selector = f"job-name={job}"
    pods = wait_until(
        lambda: kube.cluster.list("pods", namespace, selector)[0],
        lambda found: any("waiting" in p["status"]["containerStatuses"][0]["state"] for p in found),
        60,
    )
    assert len(pods) == 1, "the pod waits for an image it can never pull"
    deletes = kube.cluster.calls["DELETE jobs"]
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    ended = final_run(run.id, 60)
    assert ended.state_type is StateType.CANCELLED, ended.state
    assert ended.state is not None and f"Kubernetes Job {namespace}:{job} deleted" in str(
        ended.state.message
    )
    with get_client(sync_client=True) as client:
        history = [state.type for state in client.read_flow_run_states(run.id)]
    assert StateType.RUNNING not in history, "no engine ever ran: only the worker could end it"
    assert kube.cluster.calls["DELETE jobs"] == deletes + 1
    with pytest.raises(ApiError, match="not found"):
        kube.cluster.get("jobs", namespace, job)
    left = wait_until(lambda: kube.cluster.list("pods", namespace, selector)[0], not_, 30)
    assert left == [], "the Job's pod went with it"


def test_a_cancelled_kubernetes_run_whose_engine_is_frozen_loses_its_job_after_the_grace(
    kubernetes_worker: PoolWorker, kube: StandInCluster, pool_home: Path
) -> None:
    run, _, hook = _sleeping("sleeper/kubernetes", pool_home)
    namespace, _, job = str(wait_until(lambda: _infrastructure(run.id), bool, 60)).partition(":")
    (pod,) = kube.cluster.list("pods", namespace, f"job-name={job}")[0]
    key = f"{namespace}/{pod['metadata']['name']}"
    (container,) = kube.kubelet.docker.containers.list(filters={"label": f"{POD}={key}"})
    container.pause()  # the engine inside can neither see the cancel nor end its pod
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    ended = final_run(run.id, 120)
    assert ended.state_type is StateType.CANCELLED, ended.state
    assert "deleted (its engine did not end it in time)" in str(ended.state and ended.state.message)
    with pytest.raises(ApiError, match="not found"):
        kube.cluster.get("jobs", namespace, job)
    gone = wait_until(
        lambda: kube.kubelet.docker.containers.list(all=True, filters={"label": f"{POD}={key}"}),
        not_,
        60,
    )
    assert gone == [], "the paused container went with its pod"
    assert not hook.exists(), "its hook never ran: the engine was frozen to the end"


def test_the_kubernetes_worker_refuses_a_cancel_grace_that_is_not_seconds(
    pools: dict[str, str], prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, GRACE_VARIABLE: "nan"}
    done = subprocess.run(
        [CLI, "worker", "--pool", "kubernetes"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert f"{GRACE_VARIABLE}='nan': give seconds from 0 to 3600" in done.stderr
    for bad in ("-1", "1e9", "soon"):  # what the worker reads at start, without starting one
        monkeypatch.setenv(GRACE_VARIABLE, bad)
        with pytest.raises(FatalError, match=re.escape(f"{bad!r}: give seconds from 0 to 3600")):
            engine_grace()


def test_a_kubernetes_pod_that_fails_crashes_its_flow_run_with_the_reason(
    kubernetes_worker: PoolWorker,
) -> None:
    run = final_run(_run("hello-world/kubernetes-broken").id, 300)
    assert run.state_type is StateType.CRASHED, run.state
    assert run.state is not None and "No active or succeeded pods" in (run.state.message or "")
    logs = wait_until(
        lambda: " ".join(run_logs(run.id)), lambda text: "broken" in text, 60
    )  # the observer forwards the failed container's log to the run's
    assert "Container logs from container 'prefect-job'" in logs and "broken" in logs, logs


def _infrastructure(run_id: UUID) -> str | None:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).infrastructure_pid
