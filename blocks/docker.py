"""The Docker facility: each job a container on a Docker Engine, its working directory bound in.

Polling is one container listing per call; an ended container's exit and logs are recorded
beside its folder, and it is removed once its outputs are fetched. A watcher thread enforces
wall time from labels the containers carry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from pydantic import Field
from requests.exceptions import RequestException

from blocks.facility import LOG_TAIL, FacilityBlock
from blocks.local import (
    CANCELLED,
    FINAL,
    collect_directory,
    log_tail,
    machine_memory,
    prepare_directory,
    submitted_before,
    write_final,
)
from blocks.local_runner import meta_dir
from core.backoff import wait_until
from core.errors import FatalError, JobRefused, TransientError
from core.files import write_atomic
from core.jobs import JobLog, JobOutputs, JobRef, JobSpec, JobStatus
from core.settings import home
from core.states import DOCKER_STATUS, JobState, ended
from core.units import Duration, Memory
from planner.models import TaskType

LABEL = "esap-prefect.job"
GROUP = "esap-prefect.group"
RECORDS = "esap-prefect.records"
DEADLINE = "esap-prefect.deadline"
OVERTIME = "walltime"
LOG_LINES = 200


class DockerFacility(FacilityBlock):
    """Runs payload jobs as containers on a Docker Engine (or Podman's Docker API).

    Each job's working directory (inputs, outputs) is bound into its container at the same
    path and is its working directory; cores and memory become the container's limits, the
    wall time is enforced by a watcher thread, cancel kills the container.

    Example:
        ```python
        from blocks import DockerFacility

        facility = DockerFacility.load("docker")  # this block, in your code
        DockerFacility(base_url="unix:///run/docker.sock").save("other-engine")  # another
        ```
    """

    _block_type_name = "Docker Facility"
    _description = "Runs ESAP payload jobs as Docker containers."

    tasktypes: ClassVar[frozenset[TaskType]] = frozenset({TaskType.DOCKER})
    servicetype: ClassVar[str] = "uri://esap-prefect/docker"

    kind: ClassVar[str] = "docker"
    runtime_engine: ClassVar[str] = "Docker"
    base_url: str | None = Field(
        default=None,
        description="Docker Engine address, e.g. unix:///run/docker.sock; $DOCKER_HOST if unset.",
    )
    network: str = Field(
        default="none", description="Network mode of job containers: none, host or a network."
    )
    pull: bool = Field(
        default=False, description="Pull images missing on the engine (else refuse the job)."
    )
    workdir: Path | None = Field(
        default=None,
        description="Root of the jobs' working directories (bound into the containers); "
        "default $ESAP_PREFECT_HOME/docker-jobs.",
    )
    max_cores: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Most cores per job."
    )
    max_memory: Memory = Field(
        default_factory=machine_memory, description="Most memory one job may ask for."
    )
    max_duration: Duration = Field(default=86400, description="Longest wall time a job may ask.")

    def _root(self) -> Path:
        root = (self.workdir or home() / "docker-jobs").expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return root

    @contextlib.contextmanager
    def engine(self) -> Iterator[docker.DockerClient]:
        try:
            client = (
                docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
            )
        except DockerException as exc:
            raise TransientError(
                f"Docker Engine of {self.facility_name} unreachable: {exc}"
            ) from None
        try:
            yield client
        except APIError as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                raise TransientError(f"Docker Engine of {self.facility_name}: {exc}") from None
            raise FatalError(f"Docker Engine of {self.facility_name}: {exc}") from None
        except (DockerException, RequestException) as exc:  # the engine gone mid-call
            raise TransientError(f"Docker Engine of {self.facility_name}: {exc}") from None
        finally:
            client.close()

    def engine_version(self) -> str:
        """The engine's version, or an error saying why it cannot be reached."""
        with self.engine() as client:
            return str(client.version().get("Version", "unknown"))

    def _image(self, client: docker.DockerClient, image: str) -> None:
        try:
            client.images.get(image)
        except ImageNotFound:
            if not self.pull:
                raise JobRefused(
                    f"image {image} is not on the Docker Engine of {self.facility_name} "
                    "and the facility does not pull images"
                ) from None
            try:
                client.images.pull(image)
            except (APIError, ImageNotFound) as exc:
                raise JobRefused(f"image {image} could not be pulled: {exc}") from None

    def submit(self, specs: Sequence[JobSpec]) -> list[JobRef]:
        """Create and start one container per job; names already submitted are reused."""
        root = self._root()
        todo = [s for s in specs if not self._known(root, s)]
        with self.engine() as client:
            for image in {s.image for s in specs if s.image}:
                self._image(client, image)
            for spec in todo:
                if prepare_directory(root / spec.name, spec):
                    self._start(client, spec, root / spec.name)
        self._watch()
        return [
            JobRef(facility=self.facility_name, job_id=spec.name, name=spec.name) for spec in specs
        ]

    def _known(self, root: Path, spec: JobSpec) -> bool:
        self.check(spec)
        return submitted_before(root / spec.name, spec, self.facility_name)

    def _start(self, client: docker.DockerClient, spec: JobSpec, directory: Path) -> None:
        assert spec.image is not None
        meta = meta_dir(directory)
        started = time.time()
        env = {**spec.env, "ESAP_JOB_NAME": spec.name, "ESAP_JOB_DIR": str(directory)}
        options: dict[str, Any] = {
            "name": _container_name(spec.name),
            "labels": {
                LABEL: spec.name,
                GROUP: spec.group or "",
                RECORDS: str(meta),
                DEADLINE: repr(started + self.walltime_of(spec)),
            },
            "environment": env,
            "working_dir": str(directory),
            "volumes": {str(directory): {"bind": str(directory), "mode": "rw"}},
            "network_mode": self.network,
            "nano_cpus": spec.cores * 1_000_000_000,
            "detach": True,
        }
        if spec.memory is not None:
            options["mem_limit"] = int(spec.memory)
        if spec.executable:
            options["entrypoint"] = [spec.executable]
            options["command"] = spec.arguments
        elif spec.arguments:
            options["command"] = spec.arguments
        container = client.containers.create(spec.image, **options)
        write_atomic(meta / "started", repr(started))
        try:
            container.start()
        except APIError:
            # undo, so that submitting again starts the job afresh
            container.remove(force=True)
            shutil.rmtree(meta, ignore_errors=True)
            raise

    def _watch(self) -> None:
        """Make sure this engine's wall-time watcher runs (it stops when no job runs)."""
        _Watcher.ensure(self.base_url)

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """States from one container listing; an ended container's exit and logs are recorded."""
        root = self._root()
        pending = [r for r in refs if not (meta_dir(root / r.job_id) / FINAL).exists()]
        listed: dict[str, dict[str, Any]] = {}
        if pending:
            with self.engine() as client:
                for item in client.api.containers(all=True, filters={"label": LABEL}):
                    listed[item["Labels"][LABEL]] = item
                for ref in pending:
                    self._record_end(client, root / ref.job_id, listed.get(ref.job_id))
            self._watch()
        return [self._status(ref, root / ref.job_id, listed.get(ref.job_id)) for ref in refs]

    def _record_end(
        self, client: docker.DockerClient, directory: Path, item: dict[str, Any] | None
    ) -> None:
        """Write down how a container that ended did (through the state table), with its logs."""
        meta = meta_dir(directory)
        if not (meta / "spec.json").exists():
            return
        if item is None:
            write_final(meta, ended(None, error="the container disappeared from the engine"))
            return
        if DOCKER_STATUS.get(item["State"], JobState.RUNNING) is not None:
            return
        details = client.api.inspect_container(item["Id"])["State"]
        for stream, flags in (("stdout", {"stderr": False}), ("stderr", {"stdout": False})):
            write_atomic(meta / stream, client.api.logs(item["Id"], **flags))
        spec = JobSpec.model_validate_json((meta / "spec.json").read_text())
        outcome = ended(
            int(details.get("ExitCode", -1)),
            cancelled=(meta / CANCELLED).exists(),
            overtime=self.walltime_of(spec) if (meta / OVERTIME).exists() else None,
            out_of_memory=bool(details.get("OOMKilled")),
            error=details.get("Error") or "",
        )
        write_final(meta, outcome)

    def _status(self, ref: JobRef, directory: Path, item: dict[str, Any] | None) -> JobStatus:
        meta = meta_dir(directory)
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
        if item is None or item["State"] == "created":
            return JobStatus(ref=ref, state=JobState.PENDING, detail="created")
        return JobStatus(ref=ref, state=JobState.RUNNING, detail=item.get("Status", "running"))

    def fetch(self, refs: Sequence[JobRef], dest: Path) -> list[JobOutputs]:
        """Each job's declared outputs and logs under `dest`/<job name>/; containers removed."""
        root = self._root()
        outputs = [collect_directory(ref, root / ref.job_id, dest / ref.name) for ref in refs]
        self._remove([r for r in refs if (meta_dir(root / r.job_id) / FINAL).exists()])
        return outputs

    def _remove(self, refs: Sequence[JobRef]) -> None:
        """Remove the containers of jobs whose end and logs are recorded."""
        if not refs:
            return
        with self.engine() as client:
            for ref in refs:
                with contextlib.suppress(NotFound, APIError):
                    client.api.remove_container(_container_name(ref.job_id))

    def logs(self, refs: Sequence[JobRef], limit: int = LOG_TAIL) -> list[JobLog]:
        """Recorded logs of ended jobs; the engine's log of running ones (their last lines)."""
        root = self._root()
        running = [r for r in refs if not (meta_dir(root / r.job_id) / FINAL).exists()]
        live: dict[JobRef, JobLog] = {}
        if running:
            with self.engine() as client:
                for ref in running:
                    with contextlib.suppress(NotFound, APIError):
                        live[ref] = _live_log(client, ref, limit)
        return [live.get(ref) or log_tail(ref, root / ref.job_id, limit) for ref in refs]

    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Kill the containers of jobs not yet final; they end CANCELLED and are removed."""
        root = self._root()
        live = [s.ref for s in self.poll(refs) if not s.state.is_final]
        if live:
            with self.engine() as client:
                for ref in live:
                    (meta_dir(root / ref.job_id) / CANCELLED).touch()
                    with contextlib.suppress(NotFound, APIError):
                        client.api.kill(_container_name(ref.job_id))
            wait_until(
                lambda: self.poll(live), lambda s: all(j.state.is_final for j in s), timeout=10
            )
            self._remove(live)
        return self.poll(refs)


class _Watcher:
    """Kills containers past their wall time on one engine, whether or not anyone polls.

    Each container carries its deadline and the folder of its records as labels, so the
    watcher needs nothing else; it runs in a daemon thread while containers of ours run.
    """

    _running: ClassVar[dict[str | None, threading.Thread]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()
    interval: ClassVar[float] = 0.5

    @classmethod
    def ensure(cls, base_url: str | None) -> None:
        with cls._lock:
            thread = cls._running.get(base_url)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=cls._loop, args=(base_url,), name="esap-docker-walltime", daemon=True
                )
                cls._running[base_url] = thread
                thread.start()

    @classmethod
    def _loop(cls, base_url: str | None) -> None:
        try:
            client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        except DockerException:
            return
        with contextlib.closing(client):
            while True:
                try:
                    running = client.api.containers(filters={"label": LABEL, "status": "running"})
                except (DockerException, RequestException):
                    return  # the engine is away (a restart): the next poll starts a watcher
                if not running:
                    return
                now = time.time()
                for item in running:
                    labels = item["Labels"]
                    if DEADLINE in labels and float(labels[DEADLINE]) < now:
                        with contextlib.suppress(OSError):
                            (Path(labels[RECORDS]) / OVERTIME).touch()
                        with contextlib.suppress(DockerException):
                            client.api.kill(item["Id"])
                time.sleep(cls.interval)


def _live_log(client: docker.DockerClient, ref: JobRef, limit: int) -> JobLog:
    """The last lines of a running container's stdout and stderr, as the engine keeps them."""
    name = _container_name(ref.job_id)
    out = client.api.logs(name, stdout=True, stderr=False, tail=LOG_LINES)[-limit:]
    err = client.api.logs(name, stdout=False, stderr=True, tail=LOG_LINES)[-limit:]
    return JobLog(
        ref=ref,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        detail="running",
    )


def _container_name(job: str) -> str:
    # Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; job names also allow '%'
    safe = job.replace("%", "_")
    if safe != job:
        safe += "-" + hashlib.sha256(job.encode()).hexdigest()[:8]
    return f"esap-{safe}"
