"""ExecutionBroker offers on the gateway's own database: expiry and the job-phase table.

The HTTP side, with real containers, is in test_gateway.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from core.states import UWSPhase
from gateway.broker import Broker, iso_duration
from gateway.broker_models import (
    DOCKER,
    DockerContainer,
    DockerImage,
    Phase,
    ResourceList,
    Schedule,
    Session,
)
from gateway.broker_store import OfferStore, StoredSession
from gateway.database import open_database
from gateway.service import now


def _stored(phase: str, expires: datetime) -> StoredSession:
    offered = Session(
        uuid="s", created=now(), href="h", phase=Phase.OFFERED, executable=DockerContainer(
            type=DOCKER, image=DockerImage(locations=["x"])),
        resources=ResourceList(), schedule=Schedule(),
    )  # fmt: skip
    return StoredSession("set", "me", Phase(phase), expires, "local", None, offered)


def test_an_offer_left_past_its_expiry_is_expired(tmp_path: Path) -> None:
    db = open_database(tmp_path / "gateway.db")
    broker = Broker(OfferStore(db), cast(Any, None), list, offer_seconds=1)
    assert broker._phase(_stored("OFFERED", now() + timedelta(seconds=30))) is Phase.OFFERED
    assert broker._phase(_stored("OFFERED", now() - timedelta(seconds=1))) is Phase.EXPIRED
    assert broker._phase(_stored("REJECTED", now())) is Phase.REJECTED
    db.close()


def test_every_uws_phase_has_a_session_phase() -> None:
    phases = {phase: Phase.of_job(phase) for phase in UWSPhase}
    assert phases[UWSPhase.ERROR] is Phase.FAILED
    assert phases[UWSPhase.ABORTED] is Phase.CANCELLED
    assert phases[UWSPhase.EXECUTING] is Phase.RUNNING and phases[UWSPhase.QUEUED] is Phase.WAITING


def test_iso_durations() -> None:
    assert [iso_duration(s) for s in (0, 59, 600, 5400, 90061)] == [
        "PT0S", "PT59S", "PT10M", "PT1H30M", "PT25H1M1S"
    ]  # fmt: skip
