"""The local facility: each job a process group in its own working directory on this host.

It is the embedded default; wall time is enforced and cancel kills the whole group.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from blocks.facility import LOG_TAIL, FacilityBlock
from blocks.local_runner import (
    JobRecord,
    LocalRunner,
    exit_record,
    meta_dir,
    read_exit_code,
    read_record,
    runner_for,
    write_record,
)
from core.errors import JobRefused
from core.files import read_tail, write_atomic, write_json
from core.job_folder import UnsafeFile, place, scan_outputs
from core.jobs import JobLog, JobOutputs, JobRef, JobSpec, JobStatus, OutputFile
from core.settings import home
from core.states import JobState, Outcome
from core.units import Duration, Memory

GIB = 2**30
FINAL = "final.json"
"""In a container job's records: how it ended, once seen (Docker, Kubernetes)."""
CANCELLED = "cancelled"
"""In a container job's records: cancelled by the facility (it decides the outcome)."""
_PASSED_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")


def machine_memory() -> int:
    """The physical memory of this host, in bytes, to the GiB below (as forms show it: 23G)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, physical // GIB) * GIB


class LocalFacility(FacilityBlock):
    """Runs payload jobs as processes on the host of the flow run.

    Each job gets its own working directory under `workdir`, its inputs written there, its
    stdout and stderr captured, its wall time enforced; cancel kills its process group.
    Jobs see only a minimal environment plus their own variables, with the Python that runs
    the facility first on PATH.

    Example:
        ```python
        from blocks import LocalFacility

        facility = LocalFacility.load("local")  # this block, in your code
        LocalFacility(max_cores=4).save("big-box")  # another one, under a new name
        ```
    """

    _block_type_name = "Local Facility"
    _description = "Runs ESAP payload jobs as local processes (the embedded default)."

    servicetype: ClassVar[str] = "uri://esap-prefect/local"

    kind: ClassVar[str] = "local"
    workdir: Path | None = Field(
        default=None,
        description="Root of the jobs' working directories; default $ESAP_PREFECT_HOME/jobs.",
    )
    max_cores: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Cores the facility may use at once; jobs queue beyond that.",
    )
    max_memory: Memory = Field(
        default_factory=machine_memory, description="Largest memory a job may ask for."
    )
    max_duration: Duration = Field(default=86400, description="Longest wall time a job may ask.")
    kill_grace: float = Field(default=5.0, ge=0, description="Seconds between SIGTERM and SIGKILL.")

    def _root(self) -> Path:
        root = (self.workdir or home() / "jobs").expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _runner(self) -> LocalRunner:
        return runner_for(self._root(), self.max_cores, self.kill_grace)

    def _job_env(self, spec: JobSpec, directory: Path) -> dict[str, str]:
        env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]
        )
        env["PYTHONUNBUFFERED"] = "1"  # Python payloads' lines reach the log tail as printed
        env.update(spec.env)
        env["ESAP_JOB_NAME"] = spec.name
        env["ESAP_JOB_DIR"] = str(directory)
        return env

    def _command(self, spec: JobSpec, directory: Path) -> list[str]:
        return [spec.executable, *spec.arguments]

    def _enqueue(self, spec: JobSpec, directory: Path) -> None:
        self._runner().enqueue(
            spec.name,
            directory,
            self._command(spec, directory),
            self._job_env(spec, directory),
            spec.cores,
            float(self.walltime_of(spec)),
        )

    def submit(self, specs: Sequence[JobSpec]) -> list[JobRef]:
        """Prepare each job's directory and queue it; names already submitted are reused."""
        root = self._root()
        todo = [s for s in specs if not self._known(root, s)]
        for spec in todo:
            if prepare_directory(root / spec.name, spec):
                self._enqueue(spec, root / spec.name)
        return [
            JobRef(facility=self.facility_name, job_id=spec.name, name=spec.name) for spec in specs
        ]

    def _known(self, root: Path, spec: JobSpec) -> bool:
        """Check the spec; True when it was submitted before (under its name)."""
        self.check(spec)
        return submitted_before(root / spec.name, spec, self.facility_name)

    def _status(self, ref: JobRef) -> JobStatus:
        root = self._root()
        runner = self._runner()
        directory = root / ref.job_id
        record = read_record(meta_dir(directory))
        if record is None:
            where = runner.where(ref.job_id)
            if where == "queued":
                return JobStatus(ref=ref, state=JobState.PENDING, detail="queued")
            if where == "running":
                return JobStatus(ref=ref, state=JobState.RUNNING, detail="running")
            if not (meta_dir(directory) / "spec.json").exists():
                return self.lost(ref)
            record = self._take_over(ref, directory)
            if record is None:
                return JobStatus(ref=ref, state=JobState.RUNNING, detail="running (taken over)")
        return JobStatus(
            ref=ref, state=record.state, detail=record.reason, exit_code=record.exit_code
        )

    def _take_over(self, ref: JobRef, directory: Path) -> JobRecord | None:
        """Handle a job no runner here holds: its submitting process is gone.

        Never launched: queue it now. Still running: watch it. Ended: record how.
        """
        meta = meta_dir(directory)
        spec = JobSpec.model_validate_json((meta / "spec.json").read_text())
        try:
            launched = json.loads((meta / "pid").read_text())
        except FileNotFoundError:
            self._enqueue(spec, directory)
            return None
        if self._runner().adopt(
            ref.job_id,
            directory,
            launched["pid"],
            launched["started"],
            float(self.walltime_of(spec)),
        ):
            return None
        record = read_record(meta)
        if record is None:
            record = exit_record(read_exit_code(meta), launched["started"])
            write_record(meta, record)
        return record

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """States read from the jobs' directories and this process's runner."""
        return [self._status(ref) for ref in refs]

    def fetch(self, refs: Sequence[JobRef], dest: Path) -> list[JobOutputs]:
        """Link (or copy) each job's declared outputs and logs to `dest`/<job name>/."""
        root = self._root()
        return [collect_directory(ref, root / ref.job_id, dest / ref.name) for ref in refs]

    def logs(self, refs: Sequence[JobRef], limit: int = LOG_TAIL) -> list[JobLog]:
        """The ends of the jobs' stdout and stderr, written as they run."""
        root = self._root()
        return [log_tail(ref, root / ref.job_id, limit) for ref in refs]

    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Cancel queued and running jobs (their process groups get SIGTERM, then SIGKILL)."""
        runner = self._runner()
        for ref in refs:
            status = self._status(ref)
            if not status.state.is_final:
                runner.cancel(ref.job_id)
        return self.poll(refs)


def log_tail(ref: JobRef, directory: Path, limit: int, detail: str = "") -> JobLog:
    """A job's logs as its facility records them beside its folder (local, Apptainer, Docker)."""
    meta = meta_dir(directory)
    streams = [meta / "stdout", meta / "stderr"]
    times = [p.stat().st_mtime for p in streams if p.is_file()]
    return JobLog(
        ref=ref,
        stdout=read_tail(streams[0], limit),
        stderr=read_tail(streams[1], limit),
        detail=detail,
        updated=datetime.fromtimestamp(max(times), UTC) if times else None,
    )


def submitted_before(directory: Path, spec: JobSpec, facility: str) -> bool:
    """True when this very spec was submitted under its name; JobRefused for another spec.

    Names are idempotency keys: a retried flow gets its job back, a new job needs a new name.
    """
    recorded = meta_dir(directory) / "spec.json"
    if not recorded.exists():
        return False
    if recorded.read_text() != spec.model_dump_json():
        raise JobRefused(
            f"job {spec.name} was already submitted to {facility} with a different spec; "
            "give the new job another name"
        )
    return True


def prepare_directory(directory: Path, spec: JobSpec) -> bool:
    """Write the job's inputs in `directory` and its spec in its records.

    False when another submission has claimed the name first (its records exist).
    """
    meta = meta_dir(directory)
    try:
        meta.mkdir(parents=True)
    except FileExistsError:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    for item in spec.inputs:
        item.place(directory)
    write_atomic(meta / "spec.json", spec.model_dump_json())
    return True


def collect_directory(ref: JobRef, directory: Path, target: Path) -> JobOutputs:
    """A finished job's declared outputs and its logs, placed under `target`.

    Used by every facility whose jobs run in a working directory on this host. Only regular
    files inside the job's folder are taken; links, FIFOs and devices the patterns meet are
    refused by name (in `JobOutputs.refused`), never followed or opened.
    """
    meta = meta_dir(directory)
    if not (meta / "spec.json").exists():  # a lost job: nothing to collect
        return JobOutputs(ref=ref)
    spec = JobSpec.model_validate_json((meta / "spec.json").read_text())
    found = scan_outputs(directory, spec.outputs)
    files, refused = [], list(found.refused)
    for relative in found.files:
        try:
            path = place(directory, relative, target / relative)
        except UnsafeFile as exc:
            refused.append(str(exc))
            continue
        files.append(OutputFile(name=f"{ref.name}/{relative}", path=path))
    logs = {
        name: place(meta, name, target / f"{name}.txt")
        for name in ("stdout", "stderr")
        if (meta / name).exists()
    }
    return JobOutputs(
        ref=ref,
        files=files,
        stdout=logs.get("stdout"),
        stderr=logs.get("stderr"),
        missing=found.missing,
        refused=refused,
    )


def write_final(meta: Path, outcome: Outcome) -> None:
    """Record how a job ended (`FINAL` in its records): later polls read it, not the backend."""
    record = {
        "state": outcome.state.value,
        "detail": outcome.reason,
        "exit_code": outcome.exit_code,
    }
    write_json(meta / FINAL, record)
