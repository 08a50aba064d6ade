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
    SIMPLE_COMPUTE,
    DockerContainer,
    DockerImage,
    OfferSet,
    Phase,
    ResourceList,
    Schedule,
    Session,
    SimpleCompute,
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


def test_an_accepted_offer_whose_run_cannot_be_made_leaves_no_job(
    tmp_path: Path, prefect_api: str
) -> None:
    """The session Prefect API has no run-container deployment: RUN fails, the job goes."""
    import asyncio

    import pytest
    from prefect.client.orchestration import get_client

    from gateway.errors import GatewayError
    from gateway.service import JobService
    from gateway.settings import GatewaySettings
    from gateway.store import JobStore

    db = open_database(tmp_path / "gateway.db")
    offered = _stored("OFFERED", now() + timedelta(seconds=600)).document
    compute = SimpleCompute(type=SIMPLE_COMPUTE)
    document = offered.model_copy(update={"resources": ResourceList(compute=[compute])})
    stored = StoredSession("set", "me", Phase.OFFERED, offered.expires, "local", None, document)
    offers = OfferStore(db)
    head = OfferSet(uuid="set", created=now(), href="h", result="YES")
    offers.save("me", head, [stored.document], ["local"])

    async def accept() -> JobStore:
        async with get_client() as client:
            store = JobStore(db)
            broker = Broker(offers, JobService(store, client, GatewaySettings()), list, 600)
            with pytest.raises((GatewayError, LookupError, ValueError)):
                await broker._accept("me", stored.document.uuid, stored)
            return store

    store = asyncio.run(accept())
    assert store.count("me") == 0, "the job of a run that could not be made must not stay"
    session = offers.session(stored.document.uuid)
    assert session is not None and session.phase is Phase.OFFERED and session.job_id is None
    db.close()
