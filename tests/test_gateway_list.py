"""Job lists assembled from kept entries equal whole documents, whatever the jobs hold.

A real SQLite store and the same tables on a real PostgreSQL; the reference documents are
rendered from whole models in the test.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import xmlschema
from vo_models.uws import Jobs, ShortJobDescription
from vo_models.uws.types import ExecutionPhase

from core.states import UWSPhase
from gateway.documents import RENDERING, job_json, jobs_document
from gateway.records import JobRecord, JobUpdate, Result
from gateway.schemas import UWS_XSD
from gateway.store import JobStore

XSD = UWS_XSD
BASE = 'http://gw.example:8600/esap?a=1&b="2"'
HOSTILE = 'a"b<c>&d\'é ☃ \\ </uws:jobref> "url": "x" ]},{'


def job(i: int, **changes: object) -> JobRecord:
    start = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    fields: dict[str, object] = dict(
        job_id=f"{i:032x}", owner="me", workflow="hello-world", run_id=f"{HOSTILE}{i}",
        phase=UWSPhase.PENDING, parameters={"workflow": "hello-world", "Parameter1": HOSTILE},
        flow_parameters={"Parameter1": HOSTILE}, creation_time=start + timedelta(seconds=i),
        start_time=None, end_time=None, execution_duration=0,
        destruction=start + timedelta(days=30), error_type=None, error_message=None,
        results=[], flow_run_id=None, token_hash=None,
    )  # fmt: skip
    return JobRecord.model_validate({**fields, **changes})


def whole_xml(jobs: list[JobRecord]) -> str:
    document = Jobs(
        jobref=[
            ShortJobDescription(
                job_id=j.job_id,
                href=f"{BASE}/uws/jobs/{j.job_id}",
                phase=ExecutionPhase(j.phase.value),
                run_id=j.run_id,
                owner_id=j.owner,
                creation_time=j.creation_time,
            )
            for j in jobs
        ]
    )
    xml = document.to_xml(encoding="UTF-8")
    return ElementTree.canonicalize(xml.decode() if isinstance(xml, bytes) else xml)


def listed(store: JobStore, **filters: Any) -> tuple[Any, str, bytes]:
    as_json = store.listing("json", BASE, "me", **filters)
    assert as_json.body == jobs_document(store.entries("json", BASE, "me", **filters), "json")
    assert gzip.decompress(as_json.gzipped) == as_json.body
    as_xml = store.listing("xml", BASE, "me", **filters).body
    return json.loads(as_json.body), ElementTree.canonicalize(as_xml.decode()), as_xml


def test_lists_equal_whole_documents_and_follow_every_change(store_location: str) -> None:
    store = JobStore.open(store_location)
    jobs = [job(i) for i in range(5)]
    for j in jobs:
        store.insert(j)
    store.insert(job(9, owner="someone else"))
    finished = Result(id="out & <1>", href=f'{BASE}/files/1?x="y"', size=3, mime_type="text/x")
    store.update(jobs[2].job_id, JobUpdate(
        phase=UWSPhase.COMPLETED, results=[finished], run_id=HOSTILE,
        end_time=datetime(2026, 11, 21, 7, tzinfo=UTC),
    ))  # fmt: skip
    store.update(jobs[4].job_id, JobUpdate(phase=UWSPhase.ARCHIVED))

    as_json, as_xml, raw = listed(store)
    expected = store.find("me")
    assert [j.job_id for j in expected] == [jobs[i].job_id for i in (3, 2, 1, 0)]
    assert as_json == [job_json(j, BASE) for j in expected]
    assert as_xml == whole_xml(expected)
    xmlschema.XMLSchema(str(XSD)).validate(raw)
    changed = next(d for d in as_json if d["jobId"] == jobs[2].job_id)
    assert changed["phase"] == "COMPLETED" and changed["runId"] == HOSTILE
    assert changed["results"] == [
        {"key": "out & <1>", "value": finished.href, "size": 3, "mimeType": "text/x"}
    ]
    assert changed["url"] == f"{BASE}/uws/jobs/{jobs[2].job_id}/"

    as_json, as_xml, _ = listed(store, phases=[UWSPhase.ARCHIVED, UWSPhase.PENDING], last=2)
    expected = store.find("me", [UWSPhase.ARCHIVED, UWSPhase.PENDING], last=2)
    assert [j.job_id for j in expected] == [jobs[4].job_id, jobs[3].job_id]
    assert as_json == [job_json(j, BASE) for j in expected]
    assert as_xml == whole_xml(expected)
    assert listed(store, after=datetime(2030, 1, 1, tzinfo=UTC))[0] == []

    # every kind of change shows in the next list, however often it was asked for before
    changes: list[Callable[[], object]] = [
        lambda: store.update(jobs[3].job_id, JobUpdate(phase=UWSPhase.EXECUTING)),
        lambda: store.delete(jobs[1].job_id),
        lambda: store.insert(job(7)),
    ]
    for change in changes:
        before = listed(store)[0]
        change()
        as_json, as_xml, _ = listed(store)
        expected = store.find("me")
        assert as_json != before
        assert as_json == [job_json(j, BASE) for j in expected]
        assert as_xml == whole_xml(expected)
    assert [d["phase"] for d in as_json] == ["PENDING", "EXECUTING", "COMPLETED", "PENDING"]

    # another user's changes leave this user's list in memory (when no other gateway writes)
    kept = store.listing("json", BASE, "me")
    store.insert(job(11, owner="someone else"))
    store.update(job(9).job_id, JobUpdate(phase=UWSPhase.QUEUED))
    store.delete(job(11).job_id)
    again = store.listing("json", BASE, "me")
    assert again.body == kept.body and (again is kept) is store_location.endswith(".db")
    store.close()


OLD_SCHEMA = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, workflow TEXT NOT NULL, run_id TEXT,
    phase TEXT NOT NULL, parameters TEXT NOT NULL, flow_parameters TEXT NOT NULL,
    creation_time TEXT NOT NULL, start_time TEXT, end_time TEXT,
    execution_duration INTEGER NOT NULL DEFAULT 0, destruction TEXT NOT NULL,
    error_type TEXT, error_message TEXT, results TEXT NOT NULL DEFAULT '[]',
    flow_run_id TEXT, token_hash TEXT
);
"""


@pytest.mark.parametrize("count", [1, 300])
def test_a_database_from_before_list_entries_gets_them_on_opening(
    tmp_path: Path, count: int
) -> None:
    path = tmp_path / "gateway.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    for i in range(count):
        old.execute(
            "INSERT INTO jobs VALUES (?, 'me', 'hello-world', ?, 'EXECUTING', ?, '{}', ?, NULL,"
            " NULL, 0, '2027-01-01T00:00:00+00:00', NULL, NULL, '[]', NULL, NULL)",
            (f"{i:032x}", HOSTILE, json.dumps({"n": HOSTILE}), f"2026-11-21T06:{i // 60:02d}:"
             f"{i % 60:02d}+00:00"),
        )  # fmt: skip
    old.commit()
    old.close()

    store = JobStore.open(path)
    as_json, as_xml, _ = listed(store)
    expected = store.find("me")
    assert len(expected) == count and expected[0].phase is UWSPhase.EXECUTING
    assert as_json == [job_json(j, BASE) for j in expected]
    assert as_xml == whole_xml(expected)
    store.close()


def test_entries_kept_by_an_older_rendering_are_rendered_again(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = JobStore.open(path)
    store.insert(job(1))
    fresh = listed(store)[0]
    store.close()
    # as an older gateway would have left them: other entries, an older rendering version
    old = sqlite3.connect(path)
    old.execute("UPDATE jobs SET json_tail = '\"}', xml_tail = '\"/>'")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    store = JobStore.open(path)
    assert listed(store)[0] == fresh
    store.close()
    # and only once: a database at the current version is left as it is
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == RENDERING


def test_a_list_holds_the_newest_jobs_up_to_its_bound_whatever_is_asked(
    store_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No list query reads an owner's jobs whole: the newest LIST_LIMIT, even for LAST=huge."""
    monkeypatch.setattr("gateway.store.LIST_LIMIT", 3)
    store = JobStore.open(store_location)
    jobs = [job(i) for i in range(7)]
    for j in jobs:
        store.insert(j)
    newest = [jobs[i].job_id for i in (6, 5, 4)]
    for last in (None, 5, 2**31):
        entries = store.entries("json", BASE, "me", last=last)
        assert [json.loads(e)["jobId"] for e in entries] == newest, last
    assert len(store.entries("json", BASE, "me", last=2)) == 2
    assert store.count("me") == 7, "the count still says how many there are"
