"""The one state table: backend statuses -> JobState; Prefect state types -> UWS phases.

Every backend maps its own statuses onto `JobState` here and nowhere else, and every
process or container that ended is judged by `ended`; the phase groups live here too.
"""

from __future__ import annotations

import signal
from enum import StrEnum
from typing import NamedTuple


class JobState(StrEnum):
    """The state of one payload job on any facility."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True once the job can change no more."""
        return self in FINAL_STATES


class UWSPhase(StrEnum):
    """IVOA UWS 1.1 execution phases."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

ACTIVE_PHASES = (UWSPhase.QUEUED, UWSPhase.EXECUTING, UWSPhase.HELD, UWSPhase.SUSPENDED)
"""Phases of a job whose flow run may still change."""
FINAL_PHASES = (UWSPhase.COMPLETED, UWSPhase.ERROR, UWSPhase.ABORTED, UWSPhase.ARCHIVED)
"""Phases a job never leaves (but for destruction)."""
ABORTABLE_PHASES = (UWSPhase.PENDING, *ACTIVE_PHASES)
"""Phases from which ABORT is allowed."""

DIRAC_STATUS: dict[str, JobState] = {
    **dict.fromkeys(
        (
            "Submitting",
            "Received",
            "Checking",
            "Scouting",
            "Staging",
            "Waiting",
            "Matched",
            "Rescheduled",
        ),
        JobState.PENDING,
    ),
    **dict.fromkeys(("Running", "Completing", "Stalled"), JobState.RUNNING),
    **dict.fromkeys(("Done", "Completed"), JobState.COMPLETED),
    "Failed": JobState.FAILED,
    **dict.fromkeys(("Killed", "Deleted"), JobState.CANCELLED),
}

DOCKER_STATUS: dict[str, JobState | None] = {
    "created": JobState.PENDING,
    **dict.fromkeys(("running", "paused", "restarting", "removing"), JobState.RUNNING),
    **dict.fromkeys(("exited", "dead"), None),
}
"""Docker Engine container states; None: the container ended, `ended` says how."""

KUBERNETES_STUCK = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "Unschedulable",
    }
)
"""Why a Kubernetes pod does not start that only time can tell from a wait: the job is
PENDING with the reason, then FAILED once it lasts the facility's pending limit."""


def kubernetes_job_state(status: dict[str, object]) -> JobState | None:
    """The JobState of a batch/v1 Job's status; None once it ended (`ended` says how).

    A Job with a true Complete or Failed condition has ended; one whose pod is ready runs;
    anything else (no pod yet, pod pending, image being pulled) is pending.
    """
    conditions = status.get("conditions") or []
    assert isinstance(conditions, list)
    for condition in conditions:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return None
    ready = status.get("ready") or 0
    assert isinstance(ready, int)
    return JobState.RUNNING if ready > 0 else JobState.PENDING


STATE_TABLE: dict[JobState, tuple[str, UWSPhase]] = {
    JobState.PENDING: ("PENDING", UWSPhase.QUEUED),
    JobState.RUNNING: ("RUNNING", UWSPhase.EXECUTING),
    JobState.COMPLETED: ("COMPLETED", UWSPhase.COMPLETED),
    JobState.FAILED: ("FAILED", UWSPhase.ERROR),
    JobState.CANCELLED: ("CANCELLED", UWSPhase.ABORTED),
}
"""The design's table: a job's state -> the Prefect state type (its name) -> the UWS phase."""
PREFECT_STATE = {job: prefect for job, (prefect, _) in STATE_TABLE.items()}
UWS_PHASE = {job: phase for job, (_, phase) in STATE_TABLE.items()}
PREFECT_TO_UWS: dict[str, UWSPhase] = {
    **dict(STATE_TABLE.values()),
    "SCHEDULED": UWSPhase.QUEUED,
    "PAUSED": UWSPhase.HELD,
    "CRASHED": UWSPhase.ERROR,
    "CANCELLING": UWSPhase.ABORTED,
}
"""Prefect flow-run state types (their names) -> the UWS phase: the table, and the types
a flow run has that a payload job has not."""

SIGNALS = 64
"""Exit statuses 129-192 from a shell are deaths by signals 1-64."""


class Outcome(NamedTuple):
    """How a job ended: its state, its exit code (None if unknown) and a reason."""

    state: JobState
    exit_code: int | None
    reason: str


def from_dirac(status: str) -> JobState:
    """The JobState of a DIRAC job status.

    Raises:
        ValueError: for a status DIRAC does not have.
    """
    try:
        return DIRAC_STATUS[status]
    except KeyError:
        raise ValueError(f"unknown DIRAC job status {status!r}") from None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def ended(
    exit_code: int | None,
    *,
    cancelled: bool = False,
    overtime: float | None = None,
    out_of_memory: bool = False,
    error: str = "",
) -> Outcome:
    """The outcome of a process or container that ended: the one place that decides it.

    `exit_code` is as a shell or container engine reports it: 0-255, where 129-192 is
    128 + a signal; a negative code is a signal as Python's subprocess reports it.
    Cancellation wins over everything, then a wall time of `overtime` seconds exceeded,
    then the memory limit, then the exit code.
    """
    if cancelled:
        return Outcome(JobState.CANCELLED, exit_code, "cancelled")
    if overtime is not None:
        return Outcome(JobState.FAILED, exit_code, f"wall time of {overtime:g}s exceeded")
    if out_of_memory:
        return Outcome(JobState.FAILED, exit_code, "killed: out of memory")
    if exit_code == 0:
        return Outcome(JobState.COMPLETED, 0, "exited 0")
    if exit_code is None:
        reason = error or "the job ended without recording an exit code (killed from outside?)"
    elif exit_code < 0:
        reason = f"killed by {_signal_name(-exit_code)}"
    elif 128 < exit_code <= 128 + SIGNALS:
        reason = f"killed by {_signal_name(exit_code - 128)} (exit {exit_code})"
    else:
        reason = error or f"exit code {exit_code}"
    return Outcome(JobState.FAILED, exit_code, reason)
