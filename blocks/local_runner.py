"""Supervisor of local payload processes: a queue, core slots, wall time and cancel.

One thread per job root waits on pidfds; each job's records (`<root>/.esap/<job>/`, outside
the folder the job writes) keep its state on disk, so another process can take over jobs
whose supervisor died.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.files import write_json
from core.states import JobState, ended

META = ".esap"
# Runs the payload as a child so its exit code lands on disk even if the supervisor is gone.
_WRAPPER = 'm=$1; shift; "$@"; rc=$?; printf "%s\\n" "$rc" > "$m/exit_code"; exit "$rc"'


def meta_dir(directory: Path) -> Path:
    """Where the facility keeps a job's records: beside its folder, never inside it.

    A job writes its own folder (in a container, as another user); what the facility
    writes and trusts (spec, pid, exit code, logs, outcome) must be out of its reach.
    """
    return directory.parent / META / directory.name


@dataclass
class JobRecord:
    """A final outcome as written to `result.json` in the job's records."""

    state: JobState
    exit_code: int | None
    reason: str
    started: float | None
    finished: float


@dataclass
class _Job:
    job_id: str
    directory: Path
    argv: list[str]
    env: dict[str, str]
    cores: int
    walltime: float
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    started: float | None = None
    kill_at: float | None = None
    outcome: JobRecord | None = field(default=None)

    @property
    def meta(self) -> Path:
        return meta_dir(self.directory)


def write_record(meta: Path, record: JobRecord) -> None:
    """Persist a job's final outcome."""
    write_json(
        meta / "result.json",
        {
            "state": record.state.value,
            "exit_code": record.exit_code,
            "reason": record.reason,
            "started": record.started,
            "finished": record.finished,
        },
    )


def read_record(meta: Path) -> JobRecord | None:
    """The final outcome of a job, or None while it has none."""
    try:
        data = json.loads((meta / "result.json").read_text())
    except FileNotFoundError:
        return None
    return JobRecord(
        JobState(data["state"]),
        data["exit_code"],
        data["reason"],
        data["started"],
        data["finished"],
    )


def read_exit_code(meta: Path) -> int | None:
    """The exit code the job's wrapper recorded, or None if it recorded none."""
    try:
        return int((meta / "exit_code").read_text())
    except (FileNotFoundError, ValueError):
        return None


def exit_record(exit_code: int | None, started: float | None) -> JobRecord:
    """The final outcome of a job that ended by itself with `exit_code` (the state table's)."""
    outcome = ended(exit_code)
    return JobRecord(outcome.state, outcome.exit_code, outcome.reason, started, time.time())


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LocalRunner:
    """Runs queued jobs as process groups, at most `slots` cores' worth at a time."""

    def __init__(self, slots: int, grace: float) -> None:
        self.slots = slots
        self.grace = grace
        self._queue: deque[_Job] = deque()
        self._running: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    def where(self, job_id: str) -> Literal["queued", "running"] | None:
        """Whether this runner holds the job, and how."""
        with self._lock:
            if job_id in self._running:
                return "running"
            if any(job.job_id == job_id for job in self._queue):
                return "queued"
        return None

    def enqueue(
        self,
        job_id: str,
        directory: Path,
        argv: list[str],
        env: dict[str, str],
        cores: int,
        walltime: float,
    ) -> None:
        """Queue a prepared job directory for running."""
        job = _Job(job_id, directory, argv, env, cores, walltime)
        with self._lock:
            self._queue.append(job)
            self._ensure_thread()
        self._wake()

    def adopt(
        self, job_id: str, directory: Path, pid: int, started: float, walltime: float
    ) -> bool:
        """Take over a running job started by another process; False if it has ended."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        job = _Job(job_id, directory, [], {}, 0, walltime, pid=pid, pidfd=pidfd, started=started)
        with self._lock:
            if job_id in self._running:
                os.close(pidfd)
                return True
            self._running[job_id] = job
            self._selector.register(pidfd, selectors.EVENT_READ, job)
            self._ensure_thread()
        self._wake()
        return True

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued or running job held here; None if it is not held here."""
        with self._lock:
            for job in self._queue:
                if job.job_id == job_id:
                    self._queue.remove(job)
                    record = JobRecord(
                        JobState.CANCELLED, None, "cancelled before it started", None, time.time()
                    )
                    write_record(job.meta, record)
                    return record
            running = self._running.get(job_id)
            if running is None:
                return None
            if running.outcome is None:
                outcome = ended(None, cancelled=True)
                self._stop(
                    running,
                    JobRecord(outcome.state, None, outcome.reason, running.started, time.time()),
                )
            return running.outcome

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name="esap-local-runner", daemon=True
            )
            self._thread.start()

    def _stop(self, job: _Job, outcome: JobRecord) -> None:
        """Record the outcome first, then end the process group (TERM, KILL after grace)."""
        job.outcome = outcome
        write_record(job.meta, outcome)
        if job.pid is not None:
            _signal_group(job.pid, signal.SIGTERM)
            job.kill_at = time.monotonic() + self.grace

    def _used(self) -> int:
        return sum(job.cores for job in self._running.values())

    def _launch_ready(self) -> None:
        while self._queue and (
            not self._running or self._used() + self._queue[0].cores <= self.slots
        ):
            job = self._queue.popleft()
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        argv = ["/bin/sh", "-c", _WRAPPER, "esap-job", str(job.meta), *job.argv]
        started = time.time()
        try:
            with (job.meta / "stdout").open("wb") as out, (job.meta / "stderr").open("wb") as err:
                popen = subprocess.Popen(
                    argv,
                    cwd=job.directory,
                    env=job.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except OSError as exc:
            write_record(
                job.meta,
                JobRecord(JobState.FAILED, None, f"could not start: {exc}", None, time.time()),
            )
            return
        job.popen, job.pid, job.started = popen, popen.pid, started
        write_json(job.meta / "pid", {"pid": popen.pid, "started": started})
        job.pidfd = os.pidfd_open(popen.pid)
        self._running[job.job_id] = job
        self._selector.register(job.pidfd, selectors.EVENT_READ, job)

    def _reap(self, job: _Job) -> None:
        if job.pidfd is not None:
            self._selector.unregister(job.pidfd)
            os.close(job.pidfd)
        self._running.pop(job.job_id, None)
        if job.outcome is not None:
            if job.popen is not None:
                job.popen.wait()
            return
        if job.popen is not None:
            exit_code: int | None = job.popen.wait()
            if exit_code is not None and exit_code < 0:
                exit_code = 128 - exit_code
        else:
            exit_code = read_exit_code(job.meta)
        if read_record(job.meta) is not None:
            return  # another process decided first (it cancelled the job it took over)
        write_record(job.meta, exit_record(exit_code, job.started))

    def _enforce_limits(self) -> float | None:
        """Stop jobs past their wall time, kill those past their grace; seconds to next check."""
        now_wall, now_mono = time.time(), time.monotonic()
        next_check: float | None = None
        for job in list(self._running.values()):
            if job.outcome is None and job.started is not None:
                left = job.started + job.walltime - now_wall
                if left <= 0:
                    outcome = ended(None, overtime=job.walltime)
                    self._stop(
                        job,
                        JobRecord(outcome.state, None, outcome.reason, job.started, now_wall),
                    )
                else:
                    next_check = left if next_check is None else min(next_check, left)
            if job.kill_at is not None and job.pid is not None:
                left = job.kill_at - now_mono
                if left <= 0:
                    _signal_group(job.pid, signal.SIGKILL)
                    job.kill_at = None
                else:
                    next_check = left if next_check is None else min(next_check, left)
        return next_check

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._launch_ready()
                timeout = self._enforce_limits()
                if not self._running and not self._queue:
                    self._thread = None
                    return
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    self._reap(key.data)


_RUNNERS: dict[Path, LocalRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def runner_for(root: Path, slots: int, grace: float) -> LocalRunner:
    """The process-wide runner of a job root, created on first use."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(root)
        if runner is None:
            runner = _RUNNERS[root] = LocalRunner(slots, grace)
        runner.slots, runner.grace = slots, grace
        return runner
