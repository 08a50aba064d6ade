"""ExecutionBroker offers on the gateway's own database: expiry and the job-phase table.

The HTTP side, with real containers, is in test_gateway.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from core.states import UWSPhase
from gateway.broker import JOB_PHASES, Broker, iso_duration
from gateway.broker_models import Phase
from gateway.service import now
from gateway.store import JobStore


def test_an_offer_left_past_its_expiry_is_expired(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "gateway.db")
    broker = Broker(store, cast(Any, None), list, offer_seconds=1)
    row = {"phase": "OFFERED", "job_id": None}
    assert broker._phase({**row, "expires": (now() + timedelta(seconds=30)).isoformat()}) is (
        Phase.OFFERED
    )
    assert broker._phase({**row, "expires": (now() - timedelta(seconds=1)).isoformat()}) is (
        Phase.EXPIRED
    )
    assert broker._phase({**row, "phase": "REJECTED", "expires": now().isoformat()}) is (
        Phase.REJECTED
    )
    store.close()


def test_every_uws_phase_has_a_session_phase() -> None:
    assert set(JOB_PHASES) == set(UWSPhase)
    assert JOB_PHASES[UWSPhase.ERROR] is Phase.FAILED
    assert JOB_PHASES[UWSPhase.ABORTED] is Phase.CANCELLED


def test_iso_durations() -> None:
    assert [iso_duration(s) for s in (0, 59, 600, 5400, 90061)] == [
        "PT0S", "PT59S", "PT10M", "PT1H30M", "PT25H1M1S"
    ]  # fmt: skip
