"""Helpers shared by the facility tests.

Polling a real facility until its jobs end, with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from blocks import FacilityBlock, JobRef, JobStatus


def wait_final(
    facility: FacilityBlock, refs: Sequence[JobRef], timeout: float = 60, interval: float = 0.05
) -> list[JobStatus]:
    """Poll until every job is final; fail the test with their details after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = facility.poll(refs)
        if all(s.state.is_final for s in statuses):
            return statuses
        time.sleep(interval)
    details = [f"{s.ref.name}: {s.state.value} {s.detail}" for s in facility.poll(refs)]
    raise AssertionError(f"jobs not final after {timeout}s: {details[:5]}")
