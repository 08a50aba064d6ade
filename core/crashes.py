"""Crashed flow runs: how often runs beat, how long a silence means a crash, how many retries.

Bootstrap's automation, the workers' retry loop and the gateway read the same values here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from core.settings import env_number

SILENCE_VARIABLE = "ESAP_PREFECT_CRASH_AFTER"
RETRIES_VARIABLE = "ESAP_PREFECT_CRASH_RETRIES"
RETRIED_LABEL = "esap.crash-retries"
"""Flow-run label: how many times a worker has sent this run back after a crash."""
CRASH_LABEL = "esap.crashed-state"
"""Flow-run label: the id of the Crashed state last counted (one crash, one retry)."""
FINAL_LABEL = "esap.crash-final"
"""Flow-run label: the id of a Crashed state no worker will send back (retries spent)."""

HOLD = timedelta(minutes=5)
"""How long the gateway waits for a worker to send a crashed run back before calling it ERROR."""


def silence() -> timedelta:
    """How long a running flow run may send no heartbeat before it is marked Crashed.

    90 s, or $ESAP_PREFECT_CRASH_AFTER (45 to 86400: more than one 30 s heartbeat apart).
    """
    return timedelta(seconds=env_number(SILENCE_VARIABLE, "90", 45, 86400))


def retries() -> int:
    """How many times a crashed run is sent back to its pool: 2, or $ESAP_PREFECT_CRASH_RETRIES."""
    return int(env_number(RETRIES_VARIABLE, "2", 0, 10, whole=True))


def retried(labels: Mapping[str, object]) -> int:
    """How many times a run was sent back after a crash, from its labels (0 for junk)."""
    text = str(labels.get(RETRIED_LABEL, "0"))
    return int(text) if text.isdigit() else 0


def will_be_retried(
    labels: Mapping[str, object],
    crash: str,
    crashed_at: datetime | None,
    moment: datetime | None = None,
) -> bool:
    """True while a worker may yet send back the run that crashed in state `crash` (its id).

    False once a worker has marked that crash final (retries spent, label FINAL_LABEL), or
    when none has sent it back within HOLD: a pool whose worker does not send runs back.
    """
    moment = moment or datetime.now(UTC)
    recent = crashed_at is None or moment - crashed_at < HOLD
    return recent and str(labels.get(FINAL_LABEL, "")) != crash
