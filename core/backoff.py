"""How long to wait between two polls: one backoff for every polling loop of the project.

Jobs, Rucio rules, containers and the tests all poll through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """Poll intervals: from `initial`, growing by `factor` up to `maximum` while quiet.

    A cycle that saw a change halves the interval (not below `initial`). The first
    `steady` cycles all wait `initial`, since a quick answer is likely then.
    """

    initial: float
    maximum: float
    factor: float = 1.5
    steady: int = 0
    interval: float = field(init=False)
    cycles: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.interval = self.initial

    def step(self, changed: bool = False) -> float:
        """The wait after this cycle, given whether it saw a change."""
        self.cycles += 1
        if changed:
            self.interval = max(self.initial, self.interval / 2)
        elif self.cycles > self.steady:
            self.interval = min(self.maximum, self.interval * self.factor)
        return self.interval


@dataclass
class Outage:
    """How long a polled service has been unreachable, against a limit (seconds)."""

    limit: float
    since: float | None = None

    def away(self) -> float:
        """Note a failed poll: seconds since the first failure of this outage."""
        self.since = self.since or time.monotonic()
        return time.monotonic() - self.since

    def over(self) -> None:
        """Note a poll that was answered: the outage, if any, has ended."""
        self.since = None


def wait_until(
    check: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    backoff: Backoff | None = None,
) -> T:
    """Call `check` until `done` says its value will do, or `timeout` seconds passed.

    Returns the last value either way; the caller decides what a timeout means.
    """
    pause = backoff or Backoff(0.05, 1.0)
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(min(pause.step(), max(0.0, deadline - time.monotonic())))
