"""The gateway's job table (SQLite): one row per UWS job, phases cached from Prefect.

Reads never reach Prefect: a sync loop copies flow-run states here in bulk. Each row also
keeps its job-list entries, re-rendered on every change, so listing is one query; whole
lists are kept in memory until the next change to one of their owner's jobs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.states import UWSPhase
from gateway.documents import (
    JobList,
    ListEntry,
    ListFormat,
    base_text,
    jobs_document,
    list_entry,
)
from gateway.records import JobRecord, Result

ACTIVE = (UWSPhase.QUEUED, UWSPhase.EXECUTING, UWSPhase.HELD, UWSPhase.SUSPENDED)
LIST_CACHE_BYTES = 64 * 2**20

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    workflow TEXT NOT NULL,
    run_id TEXT,
    phase TEXT NOT NULL,
    parameters TEXT NOT NULL,
    flow_parameters TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    execution_duration INTEGER NOT NULL DEFAULT 0,
    destruction TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    results TEXT NOT NULL DEFAULT '[]',
    flow_run_id TEXT,
    token_hash TEXT,
    json_head TEXT,
    json_tail TEXT,
    xml_head TEXT,
    xml_tail TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, creation_time);
CREATE INDEX IF NOT EXISTS jobs_phase ON jobs (phase);
CREATE INDEX IF NOT EXISTS jobs_destruction ON jobs (destruction);
CREATE TABLE IF NOT EXISTS offersets (
    uuid TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    uuid TEXT PRIMARY KEY,
    offerset TEXT NOT NULL,
    rank INTEGER NOT NULL,
    owner TEXT NOT NULL,
    phase TEXT NOT NULL,
    expires TEXT NOT NULL,
    facility TEXT NOT NULL,
    document TEXT NOT NULL,
    job_id TEXT
);
CREATE INDEX IF NOT EXISTS sessions_offerset ON sessions (offerset, rank);
"""


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _row(row: sqlite3.Row) -> JobRecord:
    # rows were validated on the way in; building without validation keeps lists of
    # thousands of jobs fast
    data = {k: row[k] for k in JobRecord.model_fields}
    return JobRecord.model_construct(
        **{
            **data,
            "phase": UWSPhase(data["phase"]),
            "parameters": json.loads(data["parameters"]),
            "flow_parameters": json.loads(data["flow_parameters"]),
            "results": [Result.model_construct(**r) for r in json.loads(data["results"])],
            "creation_time": _time(data["creation_time"]),
            "start_time": _time(data["start_time"]),
            "end_time": _time(data["end_time"]),
            "destruction": _time(data["destruction"]),
        }
    )


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, UWSPhase):
        return value.value
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return json.dumps([v.model_dump() if isinstance(v, BaseModel) else v for v in value])
    return value


class JobStore:
    """The job table; thread-safe, one connection, WAL journal."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)  # job tokens' hashes, parameters: the owner's only
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()  # a list is built while its cache is locked
        self._lists: OrderedDict[tuple[Any, ...], JobList] = OrderedDict()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._add_list_entries()

    def _add_list_entries(self) -> None:
        # gateway databases from before list entries were kept: add and fill the columns
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for name in ListEntry._fields:
            if name not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} TEXT")
        rows = self._db.execute("SELECT * FROM jobs WHERE xml_tail IS NULL").fetchall()
        if rows:
            self._db.execute("BEGIN")
            for row in rows:
                self._db.execute(*_set_entry(_row(row)))
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of any query on the gateway's database (the broker's tables)."""
        return [dict(r) for r in self._query(sql, args)]

    def write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements in one transaction, on the broker's tables.

        Jobs change only through insert, update and delete, which keep the kept lists right.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def insert(self, job: JobRecord) -> None:
        """Add a new job."""
        values = {k: _value(getattr(job, k)) for k in JobRecord.model_fields}
        values.update(list_entry(job)._asdict())
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            self._forget_lists(job.owner)
            self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", list(values.values()))

    def update(self, job_id: str, **changes: Any) -> None:
        """Change some fields of one job."""
        if not changes:
            return
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchall()
            if not rows:
                return
            job = _row(rows[0]).model_copy(update=changes)
            self._forget_lists(job.owner)
            values = {k: _value(v) for k, v in changes.items()} | list_entry(job)._asdict()
            sets = ", ".join(f"{name} = ?" for name in values)
            self._db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id])

    def get(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def delete(self, job_id: str) -> None:
        """Forget one job."""
        with self._lock:
            for (owner,) in self._db.execute("SELECT owner FROM jobs WHERE job_id = ?", (job_id,)):
                self._forget_lists(owner)
            self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def _forget_lists(self, owner: str) -> None:
        for key in [k for k in self._lists if k[0] == owner]:
            del self._lists[key]

    def find(
        self,
        owner: str,
        phases: Iterable[UWSPhase] = (),
        after: datetime | None = None,
        last: int | None = None,
    ) -> list[JobRecord]:
        """The owner's jobs, newest first; ARCHIVED ones only when asked for by phase."""
        where, args = _listed(owner, phases, after, last)
        return [_row(r) for r in self._query(f"SELECT * FROM jobs {where}", args)]

    def entries(
        self,
        form: ListFormat,
        base_url: str,
        owner: str,
        phases: Iterable[UWSPhase] = (),
        after: datetime | None = None,
        last: int | None = None,
    ) -> list[str]:
        """The job-list entries of what `find` would return, with `base_url` in their links."""
        where, args = _listed(owner, phases, after, last)
        sql = f"SELECT {form}_head || ? || {form}_tail FROM jobs {where}"
        with self._lock:
            return [r[0] for r in self._db.execute(sql, [base_text(base_url, form), *args])]

    def listing(
        self,
        form: ListFormat,
        base_url: str,
        owner: str,
        phases: Iterable[UWSPhase] = (),
        after: datetime | None = None,
        last: int | None = None,
    ) -> JobList:
        """The job-list document; the same one again until one of the owner's jobs changes."""
        wanted = tuple(sorted({UWSPhase(p) for p in phases}, key=lambda p: p.value))
        key = (owner, form, base_url, wanted, after, last)
        with self._lock:
            if (document := self._lists.get(key)) is None:
                entries = self.entries(form, base_url, owner, wanted, after, last)
                document = self._lists[key] = JobList(jobs_document(entries, form))
                while (
                    sum(len(d.body) for d in self._lists.values()) > LIST_CACHE_BYTES
                    and len(self._lists) > 1
                ):
                    self._lists.popitem(last=False)
            self._lists.move_to_end(key)
            return document

    def active(self) -> list[JobRecord]:
        """Jobs whose flow run may still change."""
        marks = ", ".join("?" for _ in ACTIVE)
        sql = f"SELECT * FROM jobs WHERE flow_run_id IS NOT NULL AND phase IN ({marks})"
        return [_row(r) for r in self._query(sql, [p.value for p in ACTIVE])]

    def expired(self, now: datetime) -> list[JobRecord]:
        """Jobs past their destruction time."""
        return [
            _row(r) for r in self._query("SELECT * FROM jobs WHERE destruction < ?", (_value(now),))
        ]


def _listed(
    owner: str, phases: Iterable[UWSPhase], after: datetime | None, last: int | None
) -> tuple[str, list[Any]]:
    """The WHERE, ORDER and LIMIT of a job list: newest first, ARCHIVED only when asked for."""
    wanted = [p.value for p in phases]
    sql = "WHERE owner = ?"
    args: list[Any] = [owner]
    if wanted:
        sql += f" AND phase IN ({', '.join('?' for _ in wanted)})"
        args += wanted
    else:
        sql += " AND phase != ?"
        args.append(UWSPhase.ARCHIVED.value)
    if after is not None:
        sql += " AND creation_time > ?"
        args.append(_value(after))
    sql += " ORDER BY creation_time DESC, rowid DESC"
    if last is not None:
        sql += " LIMIT ?"
        args.append(last)
    return sql, args


def _set_entry(job: JobRecord) -> tuple[str, list[Any]]:
    entry = list_entry(job)
    sets = ", ".join(f"{name} = ?" for name in entry._fields)
    return f"UPDATE jobs SET {sets} WHERE job_id = ?", [*entry, job.job_id]
