"""The Docker facility: each job a container on a Docker Engine, its working directory bound in.

Polling is one container listing per call; a finished container leaves its logs and exit
record in the job directory and is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from pydantic import Field

from blocks.facility import FacilityBlock
from blocks.local import collect_directory, machine_memory, prepare_directory
from blocks.local_runner import meta_dir
from core.errors import FatalError, TransientError
from core.jobs import JobOutputs, JobRef, JobSpec, JobStatus
from core.settings import home
from core.states import DOCKER_STATUS, JobState
from core.units import Duration, Memory
from planner.models import TaskType

LABEL = "esap-prefect.job"
FINAL = "final.json"
CANCELLED = "cancelled"
OVERTIME = "walltime"


class DockerFacility(FacilityBlock):
    """Runs payload jobs as containers on a Docker Engine (or Podman's Docker API).

    Each job's working directory (inputs, outputs) is bound into its container at the same
    path and is its working directory; cores and memory become the container's limits, the
    wall time is enforced at each poll, cancel kills the container.

    Example:
        ```python
        from blocks import DockerFacility
        DockerFacility(base_url="unix:///run/docker.sock", network="none").save("docker")
        ```
    """

    _block_type_name = "Docker Facility"
    _description = "Runs ESAP payload jobs as Docker containers."

    tasktypes: ClassVar[frozenset[TaskType]] = frozenset({TaskType.DOCKER})
    servicetype: ClassVar[str] = "uri://esap-prefect/docker"

    kind: str = "docker"
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
    def _engine(self) -> Iterator[docker.DockerClient]:
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
        except DockerException as exc:
            raise TransientError(f"Docker Engine of {self.facility_name}: {exc}") from None
        finally:
            client.close()

    def check(self) -> str:
        """The engine's version, or an error saying why it cannot be reached."""
        with self._engine() as client:
            return str(client.version().get("Version", "unknown"))

    def _image(self, client: docker.DockerClient, image: str) -> None:
        try:
            client.images.get(image)
        except ImageNotFound:
            if not self.pull:
                raise FatalError(
                    f"image {image} is not on the Docker Engine of {self.facility_name} "
                    "and the facility does not pull images"
                ) from None
            try:
                client.images.pull(image)
            except (APIError, ImageNotFound) as exc:
                raise FatalError(f"image {image} could not be pulled: {exc}") from None

    def _check(self, spec: JobSpec) -> None:
        self.check_container(spec)

    def submit(self, specs: Sequence[JobSpec]) -> list[JobRef]:
        """Create and start one container per job; names already submitted are reused."""
        for spec in specs:
            self._check(spec)
        root = self._root()
        refs = []
        with self._engine() as client:
            for image in {s.image for s in specs if s.image}:
                self._image(client, image)
            for spec in specs:
                directory = root / spec.name
                if prepare_directory(directory, spec, self.facility_name):
                    self._start(client, spec, directory)
                refs.append(JobRef(facility=self.facility_name, job_id=spec.name, name=spec.name))
        return refs

    def _start(self, client: docker.DockerClient, spec: JobSpec, directory: Path) -> None:
        assert spec.image is not None
        env = {**spec.env, "ESAP_JOB_NAME": spec.name, "ESAP_JOB_DIR": str(directory)}
        options: dict[str, Any] = {
            "name": _container_name(spec.name),
            "labels": {LABEL: spec.name, "esap-prefect.group": spec.group or ""},
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
        (meta_dir(directory) / "started").write_text(str(time.time()))
        try:
            container.start()
        except APIError:
            # undo, so that submitting again starts the job afresh
            container.remove(force=True)
            (meta_dir(directory) / "spec.json").unlink()
            raise

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """States from one container listing; finished containers are recorded and removed."""
        root = self._root()
        pending = [r for r in refs if not (meta_dir(root / r.job_id) / FINAL).exists()]
        listed: dict[str, dict[str, Any]] = {}
        if pending:
            with self._engine() as client:
                for item in client.api.containers(all=True, filters={"label": LABEL}):
                    listed[item["Labels"][LABEL]] = item
                for ref in pending:
                    self._settle(client, ref, root / ref.job_id, listed.get(ref.job_id))
        return [self._status(ref, root / ref.job_id, listed.get(ref.job_id)) for ref in refs]

    def _settle(
        self,
        client: docker.DockerClient,
        ref: JobRef,
        directory: Path,
        item: dict[str, Any] | None,
    ) -> None:
        """Record a finished container (exit, logs) and remove it; kill one over its time."""
        meta = meta_dir(directory)
        if not (meta / "spec.json").exists():
            raise KeyError(f"facility {self.facility_name} has no job {ref.job_id}")
        if item is None:
            _write_final(meta, JobState.FAILED, "the container disappeared from the engine", None)
            return
        state = DOCKER_STATUS.get(item["State"], JobState.RUNNING)
        if state is JobState.RUNNING and self._overtime(meta):
            (meta / OVERTIME).touch()
            with contextlib.suppress(NotFound, APIError):
                client.api.kill(item["Id"])
            return
        if state is not JobState.FAILED:
            return
        details = client.api.inspect_container(item["Id"])["State"]
        for stream, flags in (("stdout", {"stderr": False}), ("stderr", {"stdout": False})):
            (meta / stream).write_bytes(client.api.logs(item["Id"], **flags))
        code = int(details.get("ExitCode", -1))
        if (meta / CANCELLED).exists():
            _write_final(meta, JobState.CANCELLED, "cancelled", code)
        elif (meta / OVERTIME).exists():
            _write_final(meta, JobState.FAILED, "wall time exceeded", code)
        elif details.get("OOMKilled"):
            _write_final(meta, JobState.FAILED, "killed: out of memory", code)
        elif code == 0:
            _write_final(meta, JobState.COMPLETED, "exited 0", code)
        else:
            reason = details.get("Error") or f"exited {code}"
            _write_final(meta, JobState.FAILED, reason, code)
        with contextlib.suppress(NotFound, APIError):
            client.api.remove_container(item["Id"])

    def _overtime(self, meta: Path) -> bool:
        spec = JobSpec.model_validate_json((meta / "spec.json").read_text())
        started = float((meta / "started").read_text())
        return time.time() - started > self.walltime_of(spec)

    def _status(self, ref: JobRef, directory: Path, item: dict[str, Any] | None) -> JobStatus:
        final = meta_dir(directory) / FINAL
        if final.exists():
            record = json.loads(final.read_text())
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
        """Link (or copy) each job's declared outputs and logs to `dest`/<job name>/."""
        root = self._root()
        return [collect_directory(ref, root / ref.job_id, dest / ref.name) for ref in refs]

    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Kill the containers of jobs not yet final; they end CANCELLED."""
        root = self._root()
        live = [s.ref for s in self.poll(refs) if not s.state.is_final]
        if live:
            with self._engine() as client:
                for ref in live:
                    (meta_dir(root / ref.job_id) / CANCELLED).touch()
                    with contextlib.suppress(NotFound, APIError):
                        client.api.kill(_container_name(ref.job_id))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if all(s.state.is_final for s in self.poll(live)):
                    break
                time.sleep(0.2)
        return self.poll(refs)


def _container_name(job: str) -> str:
    # Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; job names also allow '%'
    safe = job.replace("%", "_")
    if safe != job:
        safe += "-" + hashlib.sha256(job.encode()).hexdigest()[:8]
    return f"esap-{safe}"


def _write_final(meta: Path, state: JobState, detail: str, code: int | None) -> None:
    partial = meta / (FINAL + ".partial")
    partial.write_text(json.dumps({"state": state.value, "detail": detail, "exit_code": code}))
    partial.replace(meta / FINAL)
