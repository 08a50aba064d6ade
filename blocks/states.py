"""The one state table: DIRAC job status -> JobState -> Prefect state type -> UWS phase.

Every backend maps its own statuses onto `JobState` here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum

from prefect.client.schemas.objects import StateType


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

# Docker Engine container states (`State.Status`); exited and dead are settled by the
# exit code and the facility's own cancel/wall-time marks.
DOCKER_STATUS: dict[str, JobState] = {
    "created": JobState.PENDING,
    **dict.fromkeys(("running", "paused", "restarting", "removing"), JobState.RUNNING),
    **dict.fromkeys(("exited", "dead"), JobState.FAILED),
}

PREFECT_STATE: dict[JobState, StateType] = {
    JobState.PENDING: StateType.PENDING,
    JobState.RUNNING: StateType.RUNNING,
    JobState.COMPLETED: StateType.COMPLETED,
    JobState.FAILED: StateType.FAILED,
    JobState.CANCELLED: StateType.CANCELLED,
}

UWS_PHASE: dict[JobState, UWSPhase] = {
    JobState.PENDING: UWSPhase.QUEUED,
    JobState.RUNNING: UWSPhase.EXECUTING,
    JobState.COMPLETED: UWSPhase.COMPLETED,
    JobState.FAILED: UWSPhase.ERROR,
    JobState.CANCELLED: UWSPhase.ABORTED,
}

PREFECT_TO_UWS: dict[StateType, UWSPhase] = {
    StateType.SCHEDULED: UWSPhase.QUEUED,
    StateType.PENDING: UWSPhase.QUEUED,
    StateType.RUNNING: UWSPhase.EXECUTING,
    StateType.PAUSED: UWSPhase.HELD,
    StateType.COMPLETED: UWSPhase.COMPLETED,
    StateType.FAILED: UWSPhase.ERROR,
    StateType.CRASHED: UWSPhase.ERROR,
    StateType.CANCELLING: UWSPhase.ABORTED,
    StateType.CANCELLED: UWSPhase.ABORTED,
}


def from_dirac(status: str) -> JobState:
    """The JobState of a DIRAC job status.

    Raises:
        ValueError: for a status DIRAC does not have.
    """
    try:
        return DIRAC_STATUS[status]
    except KeyError:
        raise ValueError(f"unknown DIRAC job status {status!r}") from None
