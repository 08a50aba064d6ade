"""The gateway's database: SQLite in the home (embedded) or PostgreSQL (several gateways).

The job store and the broker's offer store share it; each keeps its own tables. Statements
are written once, with `?` marks; `open_database` picks the backend from the location.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from core.settings import POSTGRES_SCHEMES


class Cursor(Protocol):
    """What a statement inside a transaction gives back."""

    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    """Statements that all happen or none does."""

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Cursor: ...


class Database(Protocol):
    """What the stores need of a database; rows are read by column name or position."""

    lock: threading.RLock
    shared: bool  # other processes write it too: no in-memory caches of what it holds
    row_lock: str  # appended to a SELECT whose rows a transaction then writes

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...
    def column(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...
    def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...
    def transaction(self) -> AbstractContextManager[Transaction]: ...
    def next_number(self) -> int: ...
    def columns(self, table: str) -> set[str]: ...
    def leads(self) -> bool: ...
    def close(self) -> None: ...

    @property
    def version(self) -> int: ...

    @version.setter
    def version(self, value: int) -> None: ...


def open_database(location: str | Path) -> Database:
    """PostgreSQL for a `postgresql://` URL, else an SQLite file at that path."""
    text = str(location)
    if text.startswith(tuple(f"{scheme}://" for scheme in POSTGRES_SCHEMES)):
        from gateway.database_postgres import PostgresDatabase  # psycopg only when used

        return PostgresDatabase(text)
    return SqliteDatabase(Path(text))


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
    reported_phase TEXT,
    reported_error TEXT,
    json_head TEXT,
    json_tail TEXT,
    xml_head TEXT,
    xml_tail TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, creation_time);
CREATE INDEX IF NOT EXISTS jobs_owner_phase ON jobs (owner, phase);
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
CREATE TABLE IF NOT EXISTS job_numbers (n INTEGER PRIMARY KEY AUTOINCREMENT);
"""


class SqliteDatabase:
    """One SQLite connection (WAL journal) used from any thread under one re-entrant lock."""

    shared = False
    row_lock = ""  # one connection, one lock: nobody else writes in between

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)  # job tokens' hashes, parameters: the owner's only
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self.lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows a query gives."""
        with self.lock:
            return self._db.execute(sql, args).fetchall()

    def column(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The first column of a query's rows, read as plain tuples (for long lists)."""
        with self.lock:
            cursor = self._db.cursor()
            cursor.row_factory = None
            return [row[0] for row in cursor.execute(sql, args)]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement, on its own; how many rows it changed."""
        with self.lock:
            return self._db.execute(sql, args).rowcount

    def next_number(self) -> int:
        """The next of a sequence that never gives a number twice."""
        with self.transaction() as db:
            return int(db.execute("INSERT INTO job_numbers DEFAULT VALUES").lastrowid or 0)

    def columns(self, table: str) -> set[str]:
        """The names of a table's columns."""
        return {r["name"] for r in self.rows(f"PRAGMA table_info({table})")}

    def leads(self) -> bool:
        """Whether this process runs the loops that must run once (the only one does)."""
        return True

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that all happen or none does."""
        with self.lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def version(self) -> int:
        """The schema-and-rendering version written with `PRAGMA user_version`."""
        return int(self.rows("PRAGMA user_version")[0][0])

    @version.setter
    def version(self, value: int) -> None:
        self.execute(f"PRAGMA user_version = {int(value)}")

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self._db.close()
