"""The Kubernetes facility: each payload job a batch/v1 Job, its folder on a shared working volume.

One list call per poll cycle finds all the facility's Jobs by label; pods are listed only to
read why a job waits or how it ended. Ended jobs' exit and logs are recorded beside their
folders, so the Jobs can expire (`ttlSecondsAfterFinished`) without anything being lost.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import kubernetes
import kubernetes.client
import kubernetes.config
import urllib3
import yaml
from kubernetes.client import ApiClient, ApiException
from pydantic import Field, PrivateAttr, SecretStr

from blocks.facility import LOG_TAIL, FacilityBlock
from blocks.kubernetes_manifest import (
    JOB,
    ROOT,
    check_manifest,
    job_manifest,
    object_name,
    root_label,
    secret_manifest,
)
from blocks.local import (
    CANCELLED,
    FINAL,
    collect_directory,
    log_tail,
    prepare_directory,
    submitted_before,
    write_final,
)
from blocks.local_runner import meta_dir
from core.errors import FatalError, JobRefused, TransientError
from core.files import write_atomic
from core.jobs import JobLog, JobOutputs, JobRef, JobSpec, JobStatus
from core.states import KUBERNETES_STUCK, JobState, ended, kubernetes_job_state
from core.units import Duration, Memory
from planner.models import TaskType

READY_WAIT = 5.0  # seconds a job may be pending before its pod is looked at for a reason
LOOK_AGAIN = 15.0  # seconds between looks at pending pods when no job has ended
MIN_TTL = 10  # seconds an ended Job must stay: its end and log are read at the next poll


class KubernetesFacility(FacilityBlock):
    """Runs payload jobs as Kubernetes Jobs, one pod each, on a shared working volume.

    Each job's folder (inputs, outputs) lives on the working volume: a PersistentVolumeClaim
    that this host also mounts at `workdir`, or, on a single-node cluster, a host path. The
    pod sees only its own folder, as its working directory. Cores and memory become requests
    and limits, the wall time `activeDeadlineSeconds`; the job's variables go in a Secret of
    its own, never in the Job's manifest. Every manifest is validated against the schema of
    `kubernetes_version` before it is sent.

    Example:
        ```python
        from blocks import KubernetesFacility

        facility = KubernetesFacility.load("cluster")  # this block, in your code
        KubernetesFacility(  # another: a claim this host mounts at /mnt/esap-jobs
            namespace="esap", volume_claim="esap-jobs", workdir="/mnt/esap-jobs"
        ).save("other-cluster")
        ```
    """

    _block_type_name = "Kubernetes Facility"
    _description = "Runs ESAP payload jobs as Kubernetes Jobs."

    tasktypes: ClassVar[frozenset[TaskType]] = frozenset({TaskType.DOCKER})
    servicetype: ClassVar[str] = "uri://esap-prefect/kubernetes"
    kind: ClassVar[str] = "kubernetes"
    runtime_engine: ClassVar[str] = "Kubernetes"

    kubeconfig: Path | None = Field(
        default=None,
        description="Path of a kubeconfig file ($KUBECONFIG or ~/.kube/config if unset).",
    )
    kubeconfig_content: SecretStr | None = Field(
        default=None, description="A kubeconfig's content (YAML), kept secret, instead of a path."
    )
    in_cluster: bool = Field(
        default=False, description="Use the pod's service account (the flow runs in the cluster)."
    )
    context: str | None = Field(default=None, description="Kubeconfig context (else its current).")
    api_url: str | None = Field(
        default=None, description="API server URL without credentials (tests; no kubeconfig)."
    )
    namespace: str = Field(default="default", description="Namespace of the jobs.")
    service_account: str | None = Field(default=None, description="Service account of the pods.")
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        default="IfNotPresent", description="When nodes pull job images."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets (in the namespace) for private registries."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods must run on."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations, as in a pod spec."
    )
    volume_claim: str | None = Field(
        default=None, description="PersistentVolumeClaim that holds the jobs' folders."
    )
    host_path: Path | None = Field(
        default=None, description="Host folder that holds the jobs' folders (single-node clusters)."
    )
    workdir: Path | None = Field(
        default=None,
        description="Where this host sees the working volume (default: the host path).",
    )
    mount_path: str = Field(default="/esap-job", description="Where a pod sees its folder.")
    executable_image: str | None = Field(
        default=None, description="Image in which jobs that name no image run (uri://executable)."
    )
    ttl_after_finished: int = Field(
        default=3600,
        ge=MIN_TTL,
        description=(
            f"Seconds an ended Job stays in the cluster (at least {MIN_TTL}: its exit code and "
            "log are read after it ends, at the next poll)."
        ),
    )
    pending_limit: Duration = Field(
        default=300,
        description="Seconds a pod may fail to start (image pull, config) before its job fails.",
    )
    kubernetes_version: str = Field(
        default="1.33", description="Kubernetes version whose schema the manifests must meet."
    )
    max_cores: int = Field(default=4, ge=1, description="Most cores one job may ask for.")
    max_memory: Memory = Field(
        default="8G", validate_default=True, description="Most memory one job may ask for."
    )
    max_duration: Duration = Field(default=86400, description="Longest wall time a job may ask.")

    _pods_looked: float = PrivateAttr(default=0.0)
    _reasons: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)

    def task_types(self) -> frozenset[TaskType]:
        return self.tasktypes | ({TaskType.EXECUTABLE} if self.executable_image else set())

    def check(self, spec: JobSpec) -> None:
        if spec.image is None and self.executable_image:
            spec = spec.model_copy(update={"image": self.executable_image})
        super().check(spec)

    def endpoint(self) -> str | None:
        return self.api_url

    def _root(self) -> Path:
        root = self.workdir or self.host_path
        if root is None:
            raise FatalError(
                f"facility {self.facility_name} has no working volume on this host: "
                "set host_path (single-node) or workdir (where the claim is mounted)"
            )
        root = root.expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _volume(self) -> dict[str, Any]:
        if self.volume_claim:
            return {"persistentVolumeClaim": {"claimName": self.volume_claim}}
        if self.host_path is None:
            raise FatalError(f"facility {self.facility_name} needs volume_claim or host_path")
        return {"hostPath": {"path": str(self.host_path), "type": "Directory"}}

    @contextlib.contextmanager
    def api(self) -> Iterator[ApiClient]:
        """A client of the cluster; its errors as TransientError or FatalError (no secrets)."""
        try:
            client = self._client()
        except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
            raise FatalError(
                f"facility {self.facility_name}: no usable kubeconfig: {exc}"
            ) from None
        try:
            yield client
        except ApiException as exc:
            if exc.status in (0, 429) or exc.status >= 500:
                raise TransientError(
                    f"Kubernetes API of {self.facility_name}: {_said(exc)}"
                ) from None
            raise FatalError(f"Kubernetes API of {self.facility_name}: {_said(exc)}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(
                f"Kubernetes API of {self.facility_name} unreachable: {type(exc).__name__}"
            ) from None
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def _client(self) -> ApiClient:
        if self.in_cluster:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(configuration)  # type: ignore[no-untyped-call]
            return ApiClient(configuration)
        if self.api_url:
            configuration = kubernetes.client.Configuration(host=self.api_url)
            return ApiClient(configuration)
        if self.kubeconfig_content is not None:
            loaded = yaml.safe_load(self.kubeconfig_content.get_secret_value())
            made: ApiClient = kubernetes.config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
                loaded, context=self.context
            )
            return made
        path = str(self.kubeconfig.expanduser()) if self.kubeconfig else None
        found: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=path, context=self.context
        )
        return found

    def server_version(self) -> str:
        """The API server's version, and that the namespace exists; an error saying why not."""
        with self.api() as client:
            version = kubernetes.client.VersionApi(client).get_code().git_version
            _core(client).read_namespace(self.namespace)
            return str(version)

    def submit(self, specs: Sequence[JobSpec]) -> list[JobRef]:
        """Create one Job (and its Secret) per spec; names submitted before are not again."""
        root = self._root()
        todo = [s for s in specs if not self._known(root, s)]
        manifests = [(spec, self._manifest(spec, root)) for spec in todo]
        if manifests:
            with self.api() as client:
                batch, core = _batch(client), _core(client)
                for spec, manifest in manifests:
                    if prepare_directory(root / spec.name, spec):
                        self._create(batch, core, spec, manifest, root)
        return [
            JobRef(facility=self.facility_name, job_id=spec.name, name=spec.name) for spec in specs
        ]

    def _known(self, root: Path, spec: JobSpec) -> bool:
        self.check(spec)
        return submitted_before(root / spec.name, spec, self.facility_name)

    def _manifest(self, spec: JobSpec, root: Path) -> dict[str, Any]:
        image = spec.image or self.executable_image
        assert image is not None  # check() refused it otherwise
        manifest = job_manifest(
            spec,
            image=image,
            walltime=self.walltime_of(spec),
            root=str(root),
            volume=self._volume(),
            mount_path=self.mount_path,
            options=self.model_dump(
                include={
                    "image_pull_policy",
                    "image_pull_secrets",
                    "service_account",
                    "node_selector",
                    "tolerations",
                    "ttl_after_finished",
                }
            ),
        )
        check_manifest(manifest, self.kubernetes_version)
        return manifest

    def _create(
        self,
        batch: Any,
        core: Any,
        spec: JobSpec,
        manifest: dict[str, Any],
        root: Path,
    ) -> None:
        try:
            created = batch.create_namespaced_job(self.namespace, manifest, _preload_content=False)
            uid = json.loads(created.data)["metadata"]["uid"]
        except ApiException as exc:
            if exc.status == 409:  # created by an earlier attempt whose records were lost
                return
            if exc.status == 422:
                raise JobRefused(f"job {spec.name} refused by the cluster: {_said(exc)}") from None
            raise
        if spec.env:
            secret = secret_manifest(spec, uid, str(root))
            check_manifest(secret, self.kubernetes_version)
            core.create_namespaced_secret(self.namespace, secret, _preload_content=False)
        write_atomic(meta_dir(root / spec.name) / "started", repr(time.time()))

    def _list(
        self, client: ApiClient, kind: Literal["jobs", "pods"], root: Path
    ) -> list[dict[str, Any]]:
        selector = f"{ROOT}={root_label(str(root))}"
        if kind == "jobs":
            answer = _batch(client).list_namespaced_job(
                self.namespace, label_selector=selector, _preload_content=False
            )
        else:
            answer = _core(client).list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False
            )
        items: list[dict[str, Any]] = json.loads(answer.data)["items"]
        return items

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """States from one list call of the facility's Jobs.

        Pods are listed (one more call) when a job has ended, for its exit code and log, and
        every LOOK_AGAIN seconds while some job waits, for the reason it waits.
        """
        root = self._root()
        pending = [r for r in refs if not (meta_dir(root / r.job_id) / FINAL).exists()]
        jobs: dict[str, dict[str, Any]] = {}
        pods: dict[str, dict[str, Any]] = {}
        if pending:
            with self.api() as client:
                for job in self._list(client, "jobs", root):
                    jobs[job["metadata"]["name"]] = job
                seen = [jobs.get(object_name(r.job_id)) for r in pending]
                ended = any(j is not None and _ended(j) for j in seen)
                waiting = any(j is not None and _waits(j) for j in seen)
                looked = time.monotonic() - self._pods_looked >= LOOK_AGAIN
                if ended or (waiting and looked):
                    pods = _latest_pods(self._list(client, "pods", root))
                    self._pods_looked = time.monotonic()
                    self._reasons = {k: w for k, p in pods.items() if (w := _waiting(p))}
                for ref in pending:
                    name = object_name(ref.job_id)
                    self._record_end(client, root / ref.job_id, jobs.get(name), pods.get(name))
        return [self._status(ref, root, jobs, pods) for ref in refs]

    def _record_end(
        self,
        client: ApiClient,
        directory: Path,
        job: dict[str, Any] | None,
        pod: dict[str, Any] | None,
    ) -> None:
        """Write down how a job ended (through `ended`), with its logs; fail one stuck too long."""
        meta = meta_dir(directory)
        if not (meta / "spec.json").exists():
            return
        if job is None:
            if (meta / "started").exists():
                write_final(
                    meta,
                    ended(
                        None,
                        cancelled=(meta / CANCELLED).exists(),
                        error="the Job disappeared from the cluster",
                    ),
                )
            return
        status = job.get("status") or {}
        if kubernetes_job_state(status) is not None:
            waiting = _waiting(pod) or self._reasons.get(object_name(directory.name))
            if waiting and waiting[0] in KUBERNETES_STUCK and _age(job) > self.pending_limit:
                self._delete(client, directory.name)
                write_final(
                    meta, ended(None, error=f"the pod could not start: {waiting[0]}: {waiting[1]}")
                )
            return
        self._save_logs(client, meta, pod)
        failed = {
            c.get("reason"): c.get("message", "")
            for c in status.get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        }
        terminated = _terminated(pod)
        spec = JobSpec.model_validate_json((meta / "spec.json").read_text())
        code = terminated.get("exitCode") if terminated else (0 if not failed else None)
        outcome = ended(
            code,
            cancelled=(meta / CANCELLED).exists(),
            overtime=self.walltime_of(spec) if "DeadlineExceeded" in failed else None,
            out_of_memory=bool(terminated and terminated.get("reason") == "OOMKilled"),
            error="" if terminated else "; ".join(f"{k}: {v}" for k, v in failed.items()),
        )
        write_final(meta, outcome)

    def _save_logs(self, client: ApiClient, meta: Path, pod: dict[str, Any] | None) -> None:
        """The pod's log (Kubernetes keeps stdout and stderr as one) into the job's records."""
        if pod is None:
            return
        with contextlib.suppress(ApiException):
            answer = _core(client).read_namespaced_pod_log(
                pod["metadata"]["name"], self.namespace, _preload_content=False
            )
            write_atomic(meta / "stdout", answer.data)

    def _status(
        self,
        ref: JobRef,
        root: Path,
        jobs: dict[str, dict[str, Any]],
        pods: dict[str, dict[str, Any]],
    ) -> JobStatus:
        meta = meta_dir(root / ref.job_id)
        if not (meta / "spec.json").exists():
            return self.lost(ref)
        if (meta / FINAL).exists():
            record = json.loads((meta / FINAL).read_text())
            return JobStatus(
                ref=ref,
                state=JobState(record["state"]),
                detail=record["detail"],
                exit_code=record["exit_code"],
            )
        name = object_name(ref.job_id)
        job = jobs.get(name)
        if job is None:
            return JobStatus(ref=ref, state=JobState.PENDING, detail="submitted")
        state = kubernetes_job_state(job.get("status") or {}) or JobState.RUNNING
        waiting = _waiting(pods.get(name)) or self._reasons.get(name)
        detail = f"{waiting[0]}: {waiting[1]}" if waiting else state.value.lower()
        return JobStatus(ref=ref, state=state, detail=detail)

    def fetch(self, refs: Sequence[JobRef], dest: Path) -> list[JobOutputs]:
        """Each job's declared outputs and logs under `dest`/<job name>/, from the volume."""
        root = self._root()
        return [collect_directory(ref, root / ref.job_id, dest / ref.name) for ref in refs]

    def logs(self, refs: Sequence[JobRef], limit: int = LOG_TAIL) -> list[JobLog]:
        """Recorded logs of ended jobs; the pod log API's tail for running ones."""
        root = self._root()
        running = [r for r in refs if not (meta_dir(root / r.job_id) / FINAL).exists()]
        live: dict[JobRef, JobLog] = {}
        if running:
            with self.api() as client:
                pods = _latest_pods(self._list(client, "pods", root))
                for ref in running:
                    pod = pods.get(object_name(ref.job_id))
                    if pod is None:
                        continue
                    with contextlib.suppress(ApiException):
                        answer = _core(client).read_namespaced_pod_log(
                            pod["metadata"]["name"],
                            self.namespace,
                            tail_lines=200,
                            limit_bytes=limit,
                            _preload_content=False,
                        )
                        live[ref] = JobLog(
                            ref=ref,
                            stdout=answer.data.decode(errors="replace")[-limit:],
                            detail=pod.get("status", {}).get("phase", "").lower(),
                        )
        return [live.get(ref) or log_tail(ref, root / ref.job_id, limit) for ref in refs]

    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Delete the Jobs (and their pods) of jobs not yet final; they end CANCELLED."""
        root = self._root()
        live = [s.ref for s in self.poll(refs) if not s.state.is_final]
        if live:
            with self.api() as client:
                pods = _latest_pods(self._list(client, "pods", root))
                for ref in live:
                    meta = meta_dir(root / ref.job_id)
                    (meta / CANCELLED).touch()
                    self._save_logs(client, meta, pods.get(object_name(ref.job_id)))
                    self._delete(client, ref.job_id)
                    write_final(meta, ended(None, cancelled=True))
        return self.poll(refs)

    def _delete(self, client: ApiClient, job: str) -> None:
        with contextlib.suppress(ApiException):
            _batch(client).delete_namespaced_job(
                object_name(job),
                self.namespace,
                propagation_policy="Background",
                _preload_content=False,
            )


def _batch(client: ApiClient) -> Any:
    """batch/v1 calls; their answers are read raw (`_preload_content=False`), hence Any."""
    return kubernetes.client.BatchV1Api(client)


def _core(client: ApiClient) -> Any:
    """core/v1 calls, read raw as `_batch`'s."""
    return kubernetes.client.CoreV1Api(client)


def _ended(job: dict[str, Any]) -> bool:
    return kubernetes_job_state(job.get("status") or {}) is None


def _waits(job: dict[str, Any]) -> bool:
    state = kubernetes_job_state(job.get("status") or {})
    return state is JobState.PENDING and _age(job) > READY_WAIT


def _latest_pods(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest pod of each job (by the job label), e.g. after a node lost the first."""
    latest: dict[str, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
        latest[pod["metadata"].get("labels", {}).get(JOB, "")] = pod
    return latest


def _container_state(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
    state: dict[str, Any] = statuses[0].get("state") or {}
    return state


def _waiting(pod: dict[str, Any] | None) -> tuple[str, str] | None:
    waiting = _container_state(pod).get("waiting")
    if not waiting or waiting.get("reason") in (None, "ContainerCreating", "PodInitializing"):
        return None
    return str(waiting["reason"]), str(waiting.get("message", ""))[:300]


def _terminated(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    terminated: dict[str, Any] | None = _container_state(pod).get("terminated")
    return terminated


def _age(job: dict[str, Any]) -> float:
    created = job["metadata"].get("creationTimestamp")
    if not created:
        return 0.0
    return time.time() - datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()


def _said(exc: ApiException) -> str:
    """What the API server said (its Status message), never the request's headers."""
    try:
        body = json.loads(exc.body or "{}")
        return f"{exc.status} {body.get('reason', exc.reason)}: {body.get('message', '')}"[:500]
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"
