"""The gateway's sync loop against a real Prefect API: phases, vanished runs, one call per cycle."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.states import Completed, Crashed, Running

from core import crashes
from core.states import UWSPhase
from gateway.records import JobRecord
from gateway.service import JobService
from gateway.settings import GatewaySettings
from gateway.store import JobStore
from gateway.sync import PhaseSync

pytestmark = pytest.mark.usefixtures("prefect_api")


@flow(name="gateway-sync-probe")
def probe() -> None:
    """Only its flow runs are used."""


def record(job_id: str, flow_run_id: str) -> JobRecord:
    now = datetime.now(UTC).replace(microsecond=0)
    return JobRecord(
        job_id=job_id, owner="me", workflow="hello-world", run_id=None,
        phase=UWSPhase.QUEUED, parameters={}, flow_parameters={}, creation_time=now,
        start_time=None, end_time=None, execution_duration=0,
        destruction=now + timedelta(days=1), error_type=None, error_message=None,
        results=[], flow_run_id=flow_run_id, token_hash=None,
    )  # fmt: skip


class CountingClient:
    """The real client, counting flow-run reads."""

    def __init__(self, client: PrefectClient) -> None:
        self.client, self.reads = client, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.client, name)

    async def read_flow_runs(self, **kwargs: object) -> object:
        self.reads += 1
        return await self.client.read_flow_runs(**kwargs)  # type: ignore[arg-type]


def test_phases_follow_flow_runs_in_bulk_and_a_deleted_run_is_an_error(tmp_path: Path) -> None:
    async def scenario() -> dict[str, JobRecord | None]:
        store = JobStore.open(tmp_path / "gateway.db")
        async with get_client() as real:
            client = CountingClient(real)
            runs = [await real.create_flow_run(probe) for _ in range(250)]
            for i, run in enumerate(runs):
                store.insert(record(f"job{i:03d}", str(run.id)))
            await real.set_flow_run_state(runs[0].id, Running())
            await real.set_flow_run_state(runs[1].id, Running())
            await real.set_flow_run_state(runs[1].id, Completed())
            await real.delete_flow_run(runs[2].id)
            service = JobService(store, client, GatewaySettings(database=tmp_path / "x.db"))  # type: ignore[arg-type]
            await PhaseSync(service).once()
            reads = client.reads
            found = {j: store.get(j) for j in ("job000", "job001", "job002", "job003")}
        store.close()
        assert reads == 2, "250 active jobs are read in two bulk calls"
        return found

    found = asyncio.run(scenario())
    assert found["job000"] is not None and found["job000"].phase is UWSPhase.EXECUTING
    assert found["job001"] is not None and found["job001"].phase is UWSPhase.COMPLETED
    gone = found["job002"]
    assert gone is not None and gone.phase is UWSPhase.ERROR
    assert gone.error_message == "the Prefect flow run of this job was deleted"
    assert found["job003"] is not None and found["job003"].phase is UWSPhase.QUEUED


def test_a_crashed_run_with_retries_left_stays_executing_until_they_are_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker may send a crashed run back: not ERROR meanwhile.

    A crash a worker marked final (retries spent, label esap.crash-final naming that Crashed
    state), or no worker sending it back within HOLD, make it ERROR (transient).
    """

    async def scenario() -> list[dict[str, UWSPhase | None]]:
        store = JobStore.open(tmp_path / "gateway.db")
        seen = []
        async with get_client() as client:
            runs = [await client.create_flow_run(probe) for _ in range(2)]
            for i, run in enumerate(runs):
                store.insert(record(f"job{i}", str(run.id)).model_copy(
                    update={"phase": UWSPhase.EXECUTING}
                ))  # fmt: skip
                await client.set_flow_run_state(run.id, Running())
                await client.set_flow_run_state(run.id, Crashed(message="no heartbeat for 90 s"))
            crashed = await client.read_flow_run(runs[1].id)
            assert crashed.state is not None
            await client.update_flow_run_labels(
                runs[1].id, {crashes.FINAL_LABEL: str(crashed.state.id)}
            )
            # a label naming an earlier crash is not this one's
            await client.update_flow_run_labels(runs[0].id, {crashes.FINAL_LABEL: "an-old-crash"})
            service = JobService(store, client, GatewaySettings(database=tmp_path / "x.db"))
            for hold in (crashes.HOLD, timedelta(0)):  # then no worker came within HOLD
                monkeypatch.setattr(crashes, "HOLD", hold)
                await PhaseSync(service).once()
                seen.append(
                    {j: (r.phase if (r := store.get(j)) else None) for j in ("job0", "job1")}
                )
            spent = store.get("job1")
        store.close()
        assert spent is not None and spent.error_type == "transient"
        assert spent.error_message == "no heartbeat for 90 s"
        return seen

    first, later = asyncio.run(scenario())
    assert first == {"job0": UWSPhase.EXECUTING, "job1": UWSPhase.ERROR}
    assert later == {"job0": UWSPhase.ERROR, "job1": UWSPhase.ERROR}
