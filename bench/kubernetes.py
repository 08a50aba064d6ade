"""Kubernetes benchmark: 200 Jobs through KubernetesFacility against the raw `kubernetes` client.

Both on the stand-in API server (tests/servers/kube_apiserver.py), whose node runs every pod
on the same real Docker Engine, in the same run, alternating. Raw: create the same Jobs
(manifests built by hand, no validation), one watch until all have completed, one pod list,
then each pod's log. Ours: `submit`, `poll` every 0.5 s (as a flow's wait would at best),
then `logs`. API calls are counted by the server, per contender and per poll cycle.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

# the project, not this folder, first: this file's name would hide the `kubernetes` package
sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-kube-")

from kubernetes.client import ApiClient, BatchV1Api, Configuration, CoreV1Api  # noqa: E402
from kubernetes.watch import Watch  # noqa: E402

from blocks import JobSpec, KubernetesFacility  # noqa: E402
from tests.servers.containers import DockerEngine  # noqa: E402
from tests.servers.kubelet import StandInCluster  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
IMAGE = "esap-test/payload:1"
SCRIPT = "echo $ESAP_JOB_NAME > out.txt && echo done"


def raw(url: str, root: Path, tag: str) -> None:
    """What a user of the client writes: create, watch to the end, read the logs."""
    with ApiClient(Configuration(host=url)) as client:
        # the client's models type every field Optional: used untyped, as most scripts do
        batch: Any = BatchV1Api(client)
        core: Any = CoreV1Api(client)
        for n in range(JOBS):
            name = f"raw-{tag}-{n}"
            (root / name).mkdir(parents=True)
            labels = {"bench": tag}
            container = {
                "name": "job",
                "image": IMAGE,
                "command": ["sh"],
                "args": ["-c", SCRIPT],
                "workingDir": "/work",
                "env": [{"name": "ESAP_JOB_NAME", "value": name}],
                "volumeMounts": [{"name": "work", "mountPath": "/work", "subPath": name}],
                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
            }
            job: dict[str, Any] = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 3600,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [container],
                            "volumes": [{"name": "work", "hostPath": {"path": str(root)}}],
                        },
                    },
                },
            }
            batch.create_namespaced_job("default", job)
        done: set[str] = set()
        watch: Any = Watch()  # type: ignore[no-untyped-call]
        for event in watch.stream(
            batch.list_namespaced_job, "default", label_selector=f"bench={tag}"
        ):
            status = event["object"].status
            if any(c.type in ("Complete", "Failed") for c in status.conditions or []):
                done.add(event["object"].metadata.name)
                if len(done) == JOBS:
                    watch.stop()
        pods = core.list_namespaced_pod("default", label_selector=f"bench={tag}").items
        for pod in pods:
            assert core.read_namespaced_pod_log(pod.metadata.name, "default") == "done\n"


def ours(url: str, root: Path, tag: str, cycles: list[Counter[str]], calls: Counter[str]) -> None:
    facility = KubernetesFacility(api_url=url, host_path=root, ttl_after_finished=3600)
    specs = [
        JobSpec(name=f"ours-{tag}-{n}", image=IMAGE, executable="sh", arguments=["-c", SCRIPT])
        for n in range(JOBS)
    ]
    refs = facility.submit(specs)
    while True:
        before = Counter(calls)
        states = facility.poll(refs)
        cycles.append(Counter(calls) - before)
        if all(s.state.is_final for s in states):
            break
        time.sleep(0.5)
    assert all(s.state.value == "COMPLETED" for s in states), states[:3]
    assert all(log.stdout == "done\n" for log in facility.logs(refs))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="esap-bench-kube-work-"))
    engine = DockerEngine(work / "docker")
    engine.start()
    try:
        engine.build_image(IMAGE, work / "build")
        with StandInCluster(engine.url) as cluster:
            times: dict[str, list[float]] = {"raw": [], "ours": []}
            calls: dict[str, Counter[str]] = {"raw": Counter(), "ours": Counter()}
            cycles: list[Counter[str]] = []
            for round_ in range(ROUNDS):
                for who in ("raw", "ours"):
                    tag = f"{round_}-{uuid.uuid4().hex[:6]}"
                    root = work / f"{who}-{tag}"
                    root.mkdir()
                    before = Counter(cluster.cluster.calls)
                    start = time.perf_counter()
                    if who == "raw":
                        raw(cluster.url, root, tag)
                    else:
                        ours(cluster.url, root, tag, cycles, cluster.cluster.calls)
                    times[who].append(time.perf_counter() - start)
                    calls[who] += Counter(cluster.cluster.calls) - before
                    print(f"round {round_} {who}: {times[who][-1]:.2f} s", flush=True)
                    for kind in ("jobs", "pods"):  # start the next round on an idle node
                        for item in cluster.cluster.list(kind, "default")[0]:
                            cluster.cluster.delete(kind, "default", item["metadata"]["name"], None)
                    time.sleep(2)
    finally:
        engine.stop()
    raw_t, ours_t = statistics.median(times["raw"]), statistics.median(times["ours"])
    job_lists = [c.get("GET jobs (list)", 0) for c in cycles]
    pod_lists = [c.get("GET pods (list)", 0) for c in cycles]
    print(f"\n{JOBS} jobs, median of {ROUNDS} rounds (stand-in API server, pods on real Docker)")
    print(f"raw kubernetes client (create, watch, logs): {raw_t:.2f} s")
    print(f"KubernetesFacility (submit, poll 0.5 s, logs): {ours_t:.2f} s = {ours_t / raw_t:.2f}x")
    for who in ("raw", "ours"):
        print(f"API calls a round, {who}: { ({k: v // ROUNDS for k, v in calls[who].items()}) }")
    print(
        f"poll cycles: {len(cycles)}; job list calls per cycle: min {min(job_lists)} max "
        f"{max(job_lists)}; pod list calls per cycle: max {max(pod_lists)}, in "
        f"{sum(1 for p in pod_lists if p)} of {len(cycles)} cycles"
    )


if __name__ == "__main__":
    main()
