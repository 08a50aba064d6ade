"""The Kubernetes facility on the stand-in API server, and the stand-in as clients see it.

The stand-in (tests/servers/kube_apiserver.py) validates what it is sent against the
Kubernetes 1.33 schema and runs pods on the session's real Docker Engine; the official
`kubernetes` client talks to it unchanged. These cases are what the contract suite does not
cover: many jobs in one list call, Secrets, hostile values, images that cannot be pulled,
expiry, the API's own answers, and `esap-prefect facilities add kubernetes`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, BatchV1Api, Configuration
from kubernetes.watch import Watch

from blocks.kubernetes import MIN_TTL, KubernetesFacility
from blocks.kubernetes_manifest import object_name
from core.backoff import wait_until
from core.errors import JobRefused
from core.jobs import JobSpec
from core.states import JobState
from tests.helpers import CLI, settle, wait_running
from tests.servers.containers import DockerEngine
from tests.servers.kubelet import POD, StandInCluster

pytestmark = pytest.mark.slow
IMAGE = "esap-test/payload:1"


@pytest.fixture
def facility(kube: StandInCluster, tmp_path: Path) -> KubernetesFacility:
    return KubernetesFacility(api_url=kube.url, host_path=tmp_path / "jobs", max_cores=2)


@pytest.fixture
def api(kube: StandInCluster) -> Iterator[ApiClient]:
    with ApiClient(Configuration(host=kube.url)) as client:
        yield client


def _batch(api: ApiClient) -> Any:
    return BatchV1Api(api)  # its models are typed Optional everywhere: read as Any here


def _core(api: ApiClient) -> Any:
    return kubernetes.client.CoreV1Api(api)


def _spec(name: str, script: str, **fields: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "image": IMAGE, "executable": "sh", "arguments": ["-c", script], **fields}
    )


def _name(case: str) -> str:
    return f"{case}-{uuid.uuid4().hex[:8]}"


def _calls(kube: StandInCluster) -> dict[str, int]:
    return dict(kube.cluster.calls)


def _since(kube: StandInCluster, before: dict[str, int]) -> dict[str, int]:
    now = _calls(kube)
    return {k: now[k] - before.get(k, 0) for k in now if now[k] != before.get(k, 0)}


def test_two_hundred_jobs_are_followed_with_one_list_call_a_cycle(
    facility: KubernetesFacility, kube: StandInCluster
) -> None:
    specs = [_spec(f"many-{i:03d}-{uuid.uuid4().hex[:6]}", f"echo {i} > n.txt") for i in range(200)]
    before = _calls(kube)
    refs = facility.submit(specs)
    assert _since(kube, before) == {"POST jobs (list)": 200}, "one create each, no Secret"
    cycles: list[dict[str, int]] = []

    def poll() -> list[JobState]:
        before = _calls(kube)
        states = [s.state for s in facility.poll(refs)]
        cycles.append(_since(kube, before))
        return states

    states = wait_until(poll, lambda s: all(x.is_final for x in s), 600)
    assert set(states) == {JobState.COMPLETED}
    assert all(c.get("GET jobs (list)") == 1 for c in cycles), cycles
    assert all(c.get("GET pods (list)", 0) <= 1 for c in cycles), "pods: one list at most"
    again = _calls(kube)
    facility.poll(refs)
    assert _since(kube, again) == {}, "ended jobs are read from their records"


def test_variables_travel_in_a_secret_never_in_the_job(
    facility: KubernetesFacility, kube: StandInCluster, api: ApiClient
) -> None:
    token = "not-in-the-manifest-" + uuid.uuid4().hex
    name = _name("secret")
    refs = facility.submit(
        [_spec(name, 'printf "%s" "$TOKEN" > token.txt', env={"TOKEN": token}, outputs=["x"])]
    )
    state = wait_until(lambda: facility.poll(refs)[0].state, lambda s: s.is_final, 120)
    assert state is JobState.COMPLETED
    job = _batch(api).read_namespaced_job(object_name(name), "default").to_dict()
    assert token not in json.dumps(job, default=str), "the Job carries no value in clear"
    assert job["spec"]["template"]["spec"]["containers"][0]["env_from"] == [
        {"secret_ref": {"name": object_name(name), "optional": None}, "prefix": None,
         "config_map_ref": None}
    ]  # fmt: skip
    secret = _core(api).read_namespaced_secret(object_name(name), "default")
    assert base64.b64decode(secret.data["TOKEN"]).decode() == token
    assert secret.metadata.owner_references[0].uid == job["metadata"]["uid"]
    assert (facility.host_path / name / "token.txt").read_text() == token  # type: ignore[operator]


def test_hostile_values_reach_neither_the_manifest_structure_nor_a_shell(
    facility: KubernetesFacility, kube: StandInCluster, api: ApiClient
) -> None:
    hostile = '; rm -rf / $(id) `id` " \' \n}]},{"name": "x"\\'
    name = f"Odd_Name.{uuid.uuid4().hex[:6]}_X"
    spec = JobSpec(
        name=name,
        image=IMAGE,
        executable="sh",
        arguments=["-c", 'printf "%s" "$1" > arg.txt; printf "%s" "$V" > env.txt', "sh", hostile],
        env={"V": hostile},
        outputs=["arg.txt"],
        group="odd-group.1",
    )
    refs = facility.submit([spec])
    [status] = settle(facility, refs, 120)
    assert status.state is JobState.COMPLETED, status
    folder = facility.host_path / name  # type: ignore[operator]
    assert (folder / "arg.txt").read_text() == hostile, "an argument stays one argument"
    assert (folder / "env.txt").read_text() == hostile, "a variable stays one variable"
    job = _batch(api).read_namespaced_job(object_name(name), "default")
    assert job.metadata.name == object_name(name) and job.metadata.name.startswith("odd-name")
    assert job.metadata.annotations["esap-prefect/job-name"] == name
    assert job.metadata.labels["esap-prefect/group"] == object_name("odd-group.1")
    assert job.metadata.annotations["esap-prefect/group"] == "odd-group.1"
    [container] = job.spec.template.spec.containers
    assert [m.sub_path for m in container.volume_mounts] == [name], "it sees its folder only"


def test_a_manifest_the_schema_refuses_is_not_sent(
    facility: KubernetesFacility, kube: StandInCluster
) -> None:
    odd = facility.model_copy(
        update={"tolerations": [{"key": "k", "effect": "NoSchedule", "bad": 1}]}
    )
    before = _calls(kube)
    with pytest.raises(JobRefused, match=r"not valid for Kubernetes 1.33: spec.template.spec"):
        odd.submit([_spec(_name("schema"), "true")])
    assert _since(kube, before) == {}, "nothing reached the API server"


def test_an_image_that_cannot_be_pulled_waits_with_the_reason_then_fails(
    kube: StandInCluster, tmp_path: Path
) -> None:
    facility = KubernetesFacility(api_url=kube.url, host_path=tmp_path / "jobs", pending_limit=8)
    name = _name("no-image")
    refs = facility.submit([JobSpec(name=name, image="nowhere/none:1", executable="true")])
    waiting = wait_until(
        lambda: facility.poll(refs)[0], lambda s: "ImagePullBackOff" in s.detail, 60
    )
    assert waiting.state is JobState.PENDING
    assert 'Back-off pulling image "nowhere/none:1"' in waiting.detail
    [failed] = settle(facility, refs, 60)
    assert failed.state is JobState.FAILED
    assert failed.detail.startswith("the pod could not start: ImagePullBackOff"), failed.detail
    assert not kube.cluster.list("jobs", "default", f"esap-prefect/job={object_name(name)}")[0]


def test_cancel_deletes_the_job_its_pod_and_its_container(
    facility: KubernetesFacility, kube: StandInCluster, docker_engine: DockerEngine
) -> None:
    name = _name("cancel")
    refs = facility.submit([_spec(name, "echo begun; sleep 120", env={"A": "b"})])
    wait_running(facility, refs[0], 120)
    [pod] = kube.cluster.list("pods", "default", f"esap-prefect/job={object_name(name)}")[0]
    [cancelled] = facility.cancel(refs)
    assert cancelled.state is JobState.CANCELLED
    selector = f"esap-prefect/job={object_name(name)}"
    for kind in ("jobs", "pods", "secrets"):
        assert not kube.cluster.list(kind, "default", selector)[0], f"{kind} left behind"
    key = f"{POD}=default/{pod['metadata']['name']}"
    with contextlib.closing(docker_engine.client()) as client:
        gone = wait_until(
            lambda: client.containers.list(all=True, filters={"label": key}), lambda c: not c, 30
        )
    assert gone == []
    assert "begun" in facility.logs(refs)[0].stdout, "its log was kept before the delete"


def test_ended_jobs_expire_from_the_cluster_and_stay_known(
    kube: StandInCluster, tmp_path: Path
) -> None:
    facility = KubernetesFacility(
        api_url=kube.url, host_path=tmp_path / "jobs", ttl_after_finished=MIN_TTL
    )
    name = _name("ttl")
    refs = facility.submit([_spec(name, "echo kept")])
    [done] = settle(facility, refs, 120)
    assert done.state is JobState.COMPLETED
    selector = f"esap-prefect/job={object_name(name)}"
    expired = wait_until(
        lambda: kube.cluster.list("jobs", "default", selector)[0], lambda j: not j, MIN_TTL + 30
    )
    assert expired == [], "the cluster keeps ended Jobs for ttl_after_finished only"
    assert facility.poll(refs) == [done]
    assert facility.logs(refs)[0].stdout == "kept\n"


def test_the_api_answers_as_kubernetes_does(api: ApiClient, kube: StandInCluster) -> None:
    batch = _batch(api)
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": _name("raw")},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": IMAGE, "command": ["sh", "-c", "exit 0"]}]}}},
    }  # fmt: skip
    created = batch.create_namespaced_job("default", job)
    assert created.spec.backoff_limit == 6 and created.spec.completions == 1, "defaults filled"
    assert created.spec.template.metadata.labels["job-name"] == job["metadata"]["name"]
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    with pytest.raises(ApiException) as conflict:
        batch.create_namespaced_job("default", job)
    body = json.loads(str(conflict.value.body))
    assert (conflict.value.status, body["reason"], body["kind"]) == (409, "AlreadyExists", "Status")
    with pytest.raises(ApiException) as missing:
        batch.read_namespaced_job("nobody", "default")
    assert json.loads(str(missing.value.body))["message"] == 'jobs.batch "nobody" not found'
    always = {"restartPolicy": "Always", "containers": [{"name": "c", "image": IMAGE}]}
    bad = {**job, "metadata": {"name": _name("bad")}, "spec": {"template": {"spec": always}}}
    with pytest.raises(ApiException) as invalid:
        batch.create_namespaced_job("default", bad)
    assert invalid.value.status == 422
    assert "spec.template.spec.restartPolicy" in json.loads(str(invalid.value.body))["message"]
    events = Watch().stream(  # type: ignore[no-untyped-call]
        batch.list_namespaced_job,
        "default",
        field_selector=f"metadata.name={job['metadata']['name']}",
        label_selector=f"job-name={job['metadata']['name']}",
        timeout_seconds=30,
    )
    for event in events:
        conditions = event["object"].status.conditions or []
        if any(c.type == "Complete" and c.status == "True" for c in conditions):
            break
    else:
        pytest.fail("the watch ended before the Job completed")
    batch.delete_namespaced_job(job["metadata"]["name"], "default")  # no policy: orphans
    assert kube.cluster.list("pods", "default", f"job-name={job['metadata']['name']}")[0]


def test_facilities_add_kubernetes_checks_the_api_first(
    kube: StandInCluster, prefect_api: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = prefect_api

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], check=False, capture_output=True, text=True, timeout=120, env=env
        )

    def refused(done: subprocess.CompletedProcess[str], said: str) -> None:
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert said in done.stderr, done.stderr

    add = ("facilities", "add", "kubernetes")
    refused(
        cli(*add, "k8s-down", "--api-url", "http://127.0.0.1:9", "--host-path", str(tmp_path)),
        "Kubernetes API of kubernetes unreachable",
    )
    refused(cli(*add, "k8s-none", "--api-url", kube.url), "--host-path")
    here = ("--api-url", kube.url, "--host-path", str(tmp_path))
    refused(cli(*add, "k8s-ns", *here, "--namespace", "nope"), 'namespaces "nope" not found')
    saved = cli(*add, "k8s", *here, "--namespace", "esap")
    assert saved.returncode == 0, saved.stderr
    assert "saved Kubernetes facility 'k8s' (API server v1.33.0+esap-standin" in saved.stdout
    loaded = cast(KubernetesFacility, KubernetesFacility.load("k8s"))
    assert loaded.namespace == "esap" and loaded.host_path == tmp_path.resolve()
    assert "k8s  (kubernetes)  runs uri://docker-container" in cli("facilities").stdout


def test_the_pool_takes_the_cluster_from_kubeconfig_when_the_facility_names_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.kubernetes_pool import kubeconfig

    config = {"apiVersion": "v1", "kind": "Config", "current-context": "lab", "clusters": []}
    path = tmp_path / "lab.kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", f"{path}{os.pathsep}{tmp_path / 'other'}")
    facility = KubernetesFacility(host_path=tmp_path / "jobs")
    assert kubeconfig(facility) == config, "the first file of $KUBECONFIG, as kubectl reads"
