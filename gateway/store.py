"""The gateway's job table: one row per UWS job, phases copied from Prefect by the sync loop.

Each row also keeps its job-list entries, rendered on every change (and all again when the
rendering changes), so listing is one query; whole lists are kept in memory until the next
change to one of their owner's jobs (not when other gateways share the database).
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.states import ACTIVE_PHASES, UWSPhase
from gateway.database import Database, open_database
from gateway.documents import (
    RENDERING,
    JobList,
    ListEntry,
    ListFormat,
    base_text,
    jobs_document,
    list_entry,
)
from gateway.records import JobRecord, JobUpdate, Result

LIST_CACHE_BYTES = 64 * 2**20
NO_LIMIT = 2**63 - 1
LIST_LIMIT = 10_000
"""The most entries one job list holds (newest first): no query reads an owner's jobs whole."""


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _row(row: Any) -> JobRecord:
    # rows were validated on the way in; building without validation keeps lists of
    # thousands of jobs fast
    data = {k: row[k] for k in JobRecord.model_fields}
    return JobRecord.model_construct(
        **{
            **data,
            "phase": UWSPhase(data["phase"]),
            "reported_phase": data["reported_phase"] and UWSPhase(data["reported_phase"]),
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
    """The job table, over the gateway's database; thread-safe."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = db.lock  # a list is built while its cache is locked
        self._lists: OrderedDict[tuple[Any, ...], JobList] = OrderedDict()
        self._render_again()

    @classmethod
    def open(cls, location: str | Path) -> JobStore:
        """A store on its own database (tools and tests; the app shares one)."""
        return cls(open_database(location))

    @property
    def shared(self) -> bool:
        """Whether other gateways write these tables too."""
        return self._db.shared

    def leads(self) -> bool:
        """Whether this gateway is the one that follows Prefect (see `Database.leads`)."""
        return self._db.leads()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _render_again(self) -> None:
        """Kept list entries rendered by another version of the documents: render them anew.

        Databases from before a column was added get it first (all added ones are TEXT).
        """
        if self._db.version >= RENDERING:
            return
        columns = self._db.columns("jobs")
        with self._db.transaction() as db:
            for name in (*JobRecord.model_fields, *ListEntry._fields):
                if name not in columns:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} TEXT")
            for row in db.execute("SELECT * FROM jobs").fetchall():
                db.execute(*_set_entry(_row(row)))
        self._db.version = RENDERING

    def insert(self, job: JobRecord) -> None:
        """Add a new job."""
        values = {k: _value(getattr(job, k)) for k in JobRecord.model_fields}
        values.update(list_entry(job)._asdict())
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            self._forget_lists(job.owner)
            self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", list(values.values()))

    def update(
        self, job_id: str, update: JobUpdate, when: Iterable[UWSPhase] | None = None
    ) -> JobRecord | None:
        """Apply `update` to one job (and re-render its list entries); the job after, or None.

        With `when`, only if the job is in one of those phases (else None, nothing changed):
        of two gateways asked at once, one wins.
        """
        changes = update.changes()
        # shared tables: the row lock is the only lock (the list cache is off); an outage's
        # wait for a connection must not hold this gateway's other writes
        local = contextlib.nullcontext() if self._db.shared else self._lock
        with local, self._db.transaction() as db:  # the row stays locked until written
            sql = f"SELECT * FROM jobs WHERE job_id = ?{self._db.row_lock}"
            rows = db.execute(sql, [job_id]).fetchall()
            if rows and when is not None and _row(rows[0]).phase not in set(when):
                return None
            if not rows or not changes:
                return _row(rows[0]) if rows else None
            job = _row(rows[0]).model_copy(update=changes)
            self._forget_lists(job.owner)
            values = {k: _value(v) for k, v in changes.items()} | list_entry(job)._asdict()
            sets = ", ".join(f"{name} = ?" for name in values)
            db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id])
            return job

    def get(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        rows = self._db.rows("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def delete(self, job_id: str) -> None:
        """Forget one job."""
        with self._lock:
            for (owner,) in self._db.rows("SELECT owner FROM jobs WHERE job_id = ?", (job_id,)):
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
        offset: int = 0,
    ) -> list[JobRecord]:
        """The owner's jobs, newest first; ARCHIVED ones only when asked for by phase."""
        where, args = _listed(owner, phases, after, last, offset)
        return [_row(r) for r in self._db.rows(f"SELECT * FROM jobs {where}", args)]

    def entries(
        self,
        form: ListFormat,
        base_url: str,
        owner: str,
        phases: Iterable[UWSPhase] = (),
        after: datetime | None = None,
        last: int | None = None,
        offset: int = 0,
    ) -> list[str]:
        """The job-list entries of what `find` would return, with `base_url` in their links.

        At most LIST_LIMIT of them, newest first, whatever `last` asks.
        """
        last = LIST_LIMIT if last is None else min(last, LIST_LIMIT)
        where, args = _listed(owner, phases, after, last, offset)
        sql = f"SELECT {form}_head || ? || {form}_tail FROM jobs {where}"
        return self._db.column(sql, [base_text(base_url, form), *args])

    def listing(
        self,
        form: ListFormat,
        base_url: str,
        owner: str,
        phases: Iterable[UWSPhase] = (),
        after: datetime | None = None,
        last: int | None = None,
        offset: int = 0,
    ) -> JobList:
        """The job-list document; the same one again until one of the owner's jobs changes."""
        wanted = tuple(sorted({UWSPhase(p) for p in phases}, key=lambda p: p.value))
        key = (owner, form, base_url, wanted, after, last, offset)
        if self._db.shared:  # another gateway may have changed the owner's jobs
            entries = self.entries(form, base_url, owner, wanted, after, last, offset)
            return JobList(jobs_document(entries, form))
        with self._lock:
            if (document := self._lists.get(key)) is None:
                entries = self.entries(form, base_url, owner, wanted, after, last, offset)
                document = self._lists[key] = JobList(jobs_document(entries, form))
                while (
                    sum(len(d.body) for d in self._lists.values()) > LIST_CACHE_BYTES
                    and len(self._lists) > 1
                ):
                    self._lists.popitem(last=False)
            self._lists.move_to_end(key)
            return document

    def count(self, owner: str, phases: Iterable[UWSPhase] = ()) -> int:
        """How many jobs `find` would return without a limit."""
        where, args = _listed(owner, phases, None, None, ordered=False)
        return int(self._db.rows(f"SELECT count(*) FROM jobs {where}", args)[0][0])

    def new_job_id(self) -> str:
        """The next job number, as django-uws numbers jobs (never reused)."""
        return str(self._db.next_number())

    def active(self) -> list[JobRecord]:
        """Jobs whose flow run may still change."""
        marks = ", ".join("?" for _ in ACTIVE_PHASES)
        sql = f"SELECT * FROM jobs WHERE flow_run_id IS NOT NULL AND phase IN ({marks})"
        return [_row(r) for r in self._db.rows(sql, [p.value for p in ACTIVE_PHASES])]

    def expired(self, now: datetime) -> list[JobRecord]:
        """Jobs past their destruction time."""
        sql = "SELECT * FROM jobs WHERE destruction < ?"
        return [_row(r) for r in self._db.rows(sql, (_value(now),))]


def _listed(
    owner: str,
    phases: Iterable[UWSPhase],
    after: datetime | None,
    last: int | None,
    offset: int = 0,
    ordered: bool = True,
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
    if not ordered:
        return sql, args
    sql += " ORDER BY creation_time DESC, rowid DESC"
    if last is not None or offset:
        sql += " LIMIT ? OFFSET ?"
        args += [NO_LIMIT if last is None else last, offset]
    return sql, args


def _set_entry(job: JobRecord) -> tuple[str, list[Any]]:
    entry = list_entry(job)
    sets = ", ".join(f"{name} = ?" for name in entry._fields)
    return f"UPDATE jobs SET {sets} WHERE job_id = ?", [*entry, job.job_id]
