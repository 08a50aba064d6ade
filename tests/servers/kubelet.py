"""The stand-in cluster's node and job controller: Jobs become pods, pods containers on real Docker.

For each Job it creates a pod (retries up to `backoffLimit`), runs the pod's container on the
Docker Engine with the requested limits, env (Secrets resolved) and volumes (hostPath, or a
PersistentVolumeClaim mapped to a host folder), moves pod phases and Job conditions as
Kubernetes 1.33 does, enforces `activeDeadlineSeconds` and `ttlSecondsAfterFinished`, serves
logs, and removes the containers of deleted pods. A missing image leaves the pod Pending in
ErrImagePull / ImagePullBackOff, as a node that cannot pull does.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from tests.servers.kube_apiserver import ApiServer, Cluster, now, quantity

POD = "standin.k8s/pod"  # container label: namespace/pod name
NODE = "standin-node"


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class Kubelet:
    """Runs the cluster's Jobs on a Docker Engine, every `interval` seconds, in a thread."""

    def __init__(self, cluster: Cluster, docker_url: str, interval: float = 0.2) -> None:
        self.cluster = cluster
        self.docker = docker.DockerClient(base_url=docker_url)
        self.interval = interval
        self._stop = threading.Event()
        self._seen: dict[str, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._loop, name="standin-kubelet", daemon=True)

    def serve(self, server: ApiServer) -> None:
        server.logs = self.logs
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for container in self.docker.containers.list(all=True, filters={"label": POD}):
            with contextlib.suppress(APIError):
                container.remove(force=True)
        self.docker.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a bad object must not stop the node
                self.step()
            self._stop.wait(self.interval)

    def step(self) -> None:
        """One pass of the job controller and the kubelet."""
        jobs, _ = self.cluster.list("jobs", "")
        pods, _ = self.cluster.list("pods", "")
        # one listing of the node's containers a pass (docker-py's `list` inspects each one)
        self._seen = {
            item["Labels"][POD]: item
            for item in self.docker.api.containers(all=True, filters={"label": POD})
        }
        for pod in pods:
            self._kubelet(pod)
        pods, _ = self.cluster.list("pods", "")
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            for owner in pod["metadata"].get("ownerReferences") or []:
                by_job.setdefault(owner["uid"], []).append(pod)
        for job in jobs:
            self._controller(job, by_job.get(job["metadata"]["uid"], []))
        self._collect(pods)

    # the job controller

    def _controller(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        spec, status = job["spec"], job.get("status") or {}
        conditions = {c["type"] for c in status.get("conditions") or []}
        if {"Complete", "Failed"} & conditions:
            self._expire(job, status)
            return
        if spec.get("suspend"):
            return
        active = [p for p in pods if p["status"].get("phase") in ("Pending", "Running")]
        succeeded = sum(p["status"].get("phase") == "Succeeded" for p in pods)
        failed = sum(p["status"].get("phase") == "Failed" for p in pods)
        started = status.get("startTime")
        deadline = spec.get("activeDeadlineSeconds")
        if started and deadline and time.time() - _seconds(started) > deadline:
            for pod in active:
                self._end_pod(
                    pod,
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )
            self._finish(
                job,
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                succeeded,
                failed + len(active),
            )
            return
        if succeeded >= spec.get("completions", 1):
            self._finish(
                job,
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                succeeded,
                failed,
            )
            return
        if failed > spec.get("backoffLimit", 6):
            self._finish(
                job,
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                succeeded,
                failed,
            )
            return
        if not active:
            made = self._new_pod(job)
            if made is None:
                return
            active = [made]
        counts = {
            "active": len(active),
            "succeeded": succeeded,
            "failed": failed,
            "ready": sum(p["status"].get("phase") == "Running" for p in active),
            "terminating": 0,
        }

        def change(obj: dict[str, Any]) -> None:
            obj["status"].setdefault("startTime", now())
            obj["status"].update(
                {k: v for k, v in counts.items() if v or k in ("ready", "terminating")}
            )
            for key in ("succeeded", "failed"):
                if not counts[key]:
                    obj["status"].pop(key, None)

        if {k: status.get(k, 0) for k in counts} != counts or not started:
            self.cluster.update("jobs", ns, name, change)

    def _finish(
        self, job: dict[str, Any], kind: str, reason: str, text: str, succeeded: int, failed: int
    ) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        stamp = now()
        first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"

        def change(obj: dict[str, Any]) -> None:
            obj["status"]["conditions"] = [
                {
                    "type": t,
                    "status": "True",
                    "reason": reason,
                    "message": text,
                    "lastProbeTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for t in (first, kind)
            ]
            obj["status"]["active"] = 0
            obj["status"]["ready"] = 0
            if succeeded:
                obj["status"]["succeeded"] = succeeded
            if failed:
                obj["status"]["failed"] = failed
            if kind == "Complete":
                obj["status"]["completionTime"] = stamp

        self.cluster.update("jobs", ns, name, change)
        self.cluster.event(
            ns,
            job,
            "Normal" if kind == "Complete" else "Warning",
            reason if kind == "Failed" else "Completed",
            text,
        )

    def _expire(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        ended = next((c["lastTransitionTime"] for c in status.get("conditions") or []), None)
        if ttl is not None and ended and time.time() - _seconds(ended) >= ttl:
            with contextlib.suppress(Exception):
                self.cluster.delete(
                    "jobs", job["metadata"]["namespace"], job["metadata"]["name"], "Background"
                )

    def _new_pod(self, job: dict[str, Any]) -> dict[str, Any] | None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        template = job["spec"]["template"]
        pod = {
            "metadata": {
                "name": f"{name[:57]}-{secrets.token_hex(3)[:5]}",
                "generateName": f"{name}-",
                "labels": dict(template["metadata"]["labels"]),
                "annotations": dict(template["metadata"].get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": NODE},
            "status": {
                "phase": "Pending",
                "qosClass": "Burstable",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
                ],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                    for c in template["spec"]["containers"]
                ],
            },
        }
        with self.cluster.changed:  # not for a Job deleted since this pass listed it
            current = self.cluster.objects.get(("jobs", ns, name))
            if current is None or current["metadata"]["uid"] != job["metadata"]["uid"]:
                return None
            self.cluster.put("pods", ns, pod)
        self.cluster.event(
            ns, job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}"
        )
        return self.cluster.get("pods", ns, pod["metadata"]["name"])

    # the kubelet

    def _kubelet(self, pod: dict[str, Any]) -> None:
        phase = pod["status"].get("phase")
        if phase == "Pending":
            self._start(pod)
        elif phase == "Running":
            self._follow(pod)

    def _container(self, pod: dict[str, Any]) -> Any | None:
        """The pod's container (as this pass listed it; the engine's, for a log)."""
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        item = self._seen.get(key)
        if item is None:
            found = self.docker.api.containers(all=True, filters={"label": f"{POD}={key}"})
            item = found[0] if found else None
        return None if item is None else self.docker.containers.prepare_model(item)

    def _start(self, pod: dict[str, Any]) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        if self._container(pod) is not None:
            return
        try:
            image = self.docker.images.get(container["image"])
        except ImageNotFound:
            self._waiting(
                pod,
                "ErrImagePull" if not self._pull_failed(pod) else "ImagePullBackOff",
                f'Back-off pulling image "{container["image"]}"',
            )
            return
        try:
            options = self._options(pod, container)
        except LookupError as exc:
            self._waiting(pod, "CreateContainerConfigError", str(exc))
            return
        created = self.docker.containers.create(image.id, **options)
        created.start()
        stamp = now()

        def change(obj: dict[str, Any]) -> None:
            obj["status"].update(
                {
                    "phase": "Running",
                    "startTime": obj["status"].get("startTime", stamp),
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                }
            )
            obj["status"]["containerStatuses"][0].update(
                {
                    "state": {"running": {"startedAt": stamp}},
                    "ready": True,
                    "started": True,
                    "imageID": image.id,
                    "containerID": f"docker://{created.id}",
                }
            )

        self.cluster.update("pods", ns, name, change)
        self.cluster.event(ns, pod, "Normal", "Started", f"Started container {container['name']}")

    def _pull_failed(self, pod: dict[str, Any]) -> bool:
        state = pod["status"]["containerStatuses"][0]["state"]
        return "waiting" in state and state["waiting"].get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
        )

    def _waiting(self, pod: dict[str, Any], reason: str, text: str) -> None:
        state = pod["status"]["containerStatuses"][0]["state"].get("waiting", {})
        if state.get("reason") == reason:
            return

        def change(obj: dict[str, Any]) -> None:
            obj["status"]["containerStatuses"][0]["state"] = {
                "waiting": {"reason": reason, "message": text}
            }

        ns = pod["metadata"]["namespace"]
        self.cluster.update("pods", ns, pod["metadata"]["name"], change)
        self.cluster.event(ns, pod, "Warning", "Failed" if "Pull" in reason else reason, text)

    def _options(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref:
                for key, value in self._secret(ns, ref["name"]).items():
                    env[key] = value
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                data = self._secret(ns, ref["name"])
                if ref["key"] not in data:
                    raise LookupError(
                        f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}"
                    )
                env[item["name"]] = data[ref["key"]]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        binds: dict[str, dict[str, str]] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "hostPath" in volume:
                host = volume["hostPath"]["path"]
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.cluster.claims:
                    raise LookupError(f'persistentvolumeclaim "{claim}" not found')
                host = self.cluster.claims[claim]
            else:
                raise LookupError(f"volume {mount['name']}: only hostPath and PVCs here")
            if mount.get("subPath"):
                host = f"{host.rstrip('/')}/{mount['subPath']}"
            binds[host] = {
                "bind": mount["mountPath"],
                "mode": "ro" if mount.get("readOnly") else "rw",
            }
        limits = (container.get("resources") or {}).get("limits") or {}
        options: dict[str, Any] = {
            "labels": {POD: f"{ns}/{pod['metadata']['name']}"},
            "environment": env,
            "volumes": binds,
            # the node has no pod network: a pod reaches the host's services with hostNetwork
            "network_mode": "host" if pod["spec"].get("hostNetwork") else "none",
            "detach": True,
        }
        if container.get("workingDir"):
            options["working_dir"] = container["workingDir"]
        if "cpu" in limits:
            options["nano_cpus"] = int(quantity(limits["cpu"]) * 1e9)
        if "memory" in limits:
            options["mem_limit"] = int(quantity(limits["memory"]))
        if container.get("command"):
            options["entrypoint"] = container["command"]
            options["command"] = container.get("args") or []
        elif container.get("args"):
            options["command"] = container["args"]
        return options

    def _secret(self, ns: str, name: str) -> dict[str, str]:
        try:
            secret = self.cluster.get("secrets", ns, name)
        except Exception:
            raise LookupError(f'secret "{name}" not found') from None
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def _follow(self, pod: dict[str, Any]) -> None:
        container = self._container(pod)
        if container is None:
            self._end_pod(pod, "ContainerStatusUnknown", "The container could not be located")
            return
        if container.attrs.get("State") in ("running", "created"):
            return
        container.reload()
        state = container.attrs["State"]
        if state.get("Running"):
            return
        code = int(state.get("ExitCode", 1))
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        stamp = now()

        def change(obj: dict[str, Any]) -> None:
            obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            obj["status"]["containerStatuses"][0].update(
                {
                    "ready": False,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": reason,
                            "startedAt": obj["status"].get("startTime", stamp),
                            "finishedAt": stamp,
                            "containerID": f"docker://{container.id}",
                        }
                    },
                }
            )

        self.cluster.update("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], change)

    def _end_pod(self, pod: dict[str, Any], reason: str, text: str) -> None:
        container = self._container(pod)
        if container is not None:
            with contextlib.suppress(APIError):
                container.kill()

        def change(obj: dict[str, Any]) -> None:
            obj["status"].update({"phase": "Failed", "reason": reason, "message": text})
            obj["status"]["containerStatuses"][0].update(
                {
                    "ready": False,
                    "state": {
                        "terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now()}
                    },
                }
            )

        self.cluster.update("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], change)

    def _collect(self, pods: list[dict[str, Any]]) -> None:
        """Remove the containers of pods that are gone from the API."""
        known = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods}
        for key, item in self._seen.items():
            if key not in known:
                with contextlib.suppress(NotFound, APIError):
                    self.docker.api.remove_container(item["Id"], force=True)

    def logs(self, ns: str, name: str, query: dict[str, list[str]]) -> bytes:
        """A pod's log as the kubelet serves it: stdout and stderr as one, tailLines, limitBytes."""
        pod = self.cluster.get("pods", ns, name)
        container = self._container(pod)
        if container is None:
            return b""
        tail = query.get("tailLines", [None])[-1]
        data: bytes = container.logs(stdout=True, stderr=True, tail=int(tail) if tail else "all")
        limit = query.get("limitBytes", [None])[-1]
        return data[: int(limit)] if limit else data


class StandInCluster:
    """The stand-in API server and its node, started together (tests and bench)."""

    def __init__(self, docker_url: str, claims: dict[str, str] | None = None) -> None:
        self.cluster = Cluster(claims)
        self.server = ApiServer(self.cluster)
        self.kubelet = Kubelet(self.cluster, docker_url)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> StandInCluster:
        self.server.start()
        self.kubelet.serve(self.server)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kubelet.stop()
        self.server.stop()
