"""Two gateways on one PostgreSQL: the same jobs, numbers never given twice, one leader.

Two stores on a real PostgreSQL stand for two gateway processes (each its own pool of
connections); every change one makes is what the other reads next.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from core.settings import DATABASE_VARIABLE, database_url, prefect_database_url
from core.states import UWSPhase
from gateway.database_postgres import SCHEMA_NAME
from gateway.records import JobRecord, JobUpdate, Result
from gateway.store import JobStore
from tests.helpers import CLI
from tests.servers.postgres import PostgresServer


def _job(i: int) -> JobRecord:
    start = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    return JobRecord.model_validate(
        {
            "job_id": f"{i:032x}", "owner": "me", "workflow": "hello-world", "run_id": None,
            "phase": UWSPhase.PENDING, "parameters": {"workflow": "hello-world"},
            "flow_parameters": {}, "creation_time": start + timedelta(seconds=i),
            "start_time": None, "end_time": None, "execution_duration": 0,
            "destruction": start + timedelta(days=30), "error_type": None,
            "error_message": None, "results": [], "flow_run_id": None, "token_hash": None,
        }
    )  # fmt: skip


@pytest.fixture
def two(postgres: PostgresServer) -> tuple[JobStore, JobStore]:
    url = postgres.fresh_database()
    with ThreadPoolExecutor(2) as pool:  # both gateways start at once: the schema made once
        first, second = pool.map(JobStore.open, [url, url])
    return first, second


def test_what_one_gateway_writes_the_other_lists_at_once(two: tuple[JobStore, JobStore]) -> None:
    a, b = two
    for i in range(3):
        a.insert(_job(i))
    listed = b.listing("json", "http://b", "me")
    assert [e["jobId"] for e in json.loads(listed.body)] == [_job(i).job_id for i in (2, 1, 0)]
    b.update(_job(1).job_id, JobUpdate(phase=UWSPhase.QUEUED))
    assert a.get(_job(1).job_id).phase is UWSPhase.QUEUED  # type: ignore[union-attr]
    assert b'"QUEUED"' in a.listing("json", "http://a", "me").body, "no stale list kept"
    a.delete(_job(0).job_id)
    assert b.get(_job(0).job_id) is None and b.count("me") == 2


def test_job_numbers_from_both_gateways_never_repeat(two: tuple[JobStore, JobStore]) -> None:
    a, b = two
    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(lambda i: (a, b)[i % 2].new_job_id(), range(400)))
    assert len(set(numbers)) == 400


def test_concurrent_changes_to_one_job_from_both_gateways_all_stay(
    two: tuple[JobStore, JobStore],
) -> None:
    a, b = two
    job = _job(7)
    a.insert(job)
    results = [Result(id=f"r{i}", href=f"http://x/{i}") for i in range(40)]
    barrier = threading.Barrier(2)

    def reporter() -> None:  # gateway A takes a call-back's phase and error, over and over
        barrier.wait()
        for i in range(40):
            a.update(job.job_id, JobUpdate(reported_error=f"error {i}"))

    def archiver() -> None:  # gateway B adds results one by one, reading what is there
        barrier.wait()
        for result in results:
            current = b.get(job.job_id)
            assert current is not None
            b.update(job.job_id, JobUpdate(results=[*current.results, result]))

    threads = [threading.Thread(target=reporter), threading.Thread(target=archiver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = a.get(job.job_id)
    assert final is not None
    assert [r.id for r in final.results] == [r.id for r in results]
    assert final.reported_error == "error 39"
    (entry,) = json.loads(b.listing("json", "http://b", "me").body)
    assert len(entry["results"]) == 40, "the kept list entry was rendered from the last row"


def test_one_gateway_leads_and_another_takes_over_when_it_is_gone(
    two: tuple[JobStore, JobStore],
) -> None:
    a, b = two
    assert a.leads() and not b.leads(), "one leader"
    assert a.leads() and not b.leads(), "and it stays so"
    a.close()  # the leader's process ends: its connection, and so its lock, goes
    assert b.leads()
    b.close()


def test_the_tables_live_in_their_own_schema_beside_prefect(postgres: PostgresServer) -> None:
    url = postgres.fresh_database()
    JobStore.open(url).close()
    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [SCHEMA_NAME],
        ).fetchall()
        public = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert {t for (t,) in tables} >= {"jobs", "offersets", "sessions", "job_numbers", "meta"}
    assert public == (0,), "nothing of the gateway's in Prefect's schema"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("sqlite:///tmp/x.db", "must be postgresql://user:password@host:port/database"),
        ("postgresql://:secretpw@db.example:5432/esap", "needs a user, a host and a database"),
        ("postgresql://esap:secretpw@db.example:5432/", "needs a user, a host and a database"),
        ("postgresql://esap:secretpw@db.example:99999/esap", "is not a URL (its port?)"),
    ],
)
def test_a_database_url_that_is_not_postgresql_is_refused_without_its_password(
    value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_VARIABLE, value)
    with pytest.raises(ValueError, match=r"ESAP_PREFECT_DATABASE_URL") as caught:
        database_url()
    assert said in str(caught.value) and "secretpw" not in str(caught.value)


def test_prefect_opens_the_same_database_with_asyncpg() -> None:
    url = "postgresql://esap:pw@db.example:5432/esap"
    assert prefect_database_url(url) == "postgresql+asyncpg://esap:pw@db.example:5432/esap"


@pytest.mark.parametrize("command", [["server", "--port", "1"], ["gateway", "--port", "1"]])
def test_server_and_gateway_refuse_a_bad_database_url_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ESAP_"))}
    env |= {
        "ESAP_PREFECT_HOME": str(tmp_path),
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
        DATABASE_VARIABLE: "mysql://esap:topsecret@db.example/esap",
    }
    done = subprocess.run([CLI, *command], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ESAP_PREFECT_DATABASE_URL must be postgresql://")
    assert "topsecret" not in done.stderr + done.stdout
