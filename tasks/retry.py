"""The retry rule every task shares: retry anything but a FatalError.

Used as Prefect's `retry_condition_fn`.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from core.errors import FatalError


def unless_fatal(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """True (retry) unless the task failed with a FatalError."""
    try:
        state.result()
    except FatalError:
        return False
    except Exception:
        return True
    return False
