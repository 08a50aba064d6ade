"""The gateway's tables in PostgreSQL, in their own schema, shared by every gateway process.

A connection pool (psycopg) that checks connections before use, so a database restart costs
one failed request at most; one advisory lock elects the gateway that follows Prefect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.database import SCHEMA
from gateway.errors import DatabaseUnavailable

SCHEMA_NAME = "esap_gateway"
LEADER_KEY = 0x6573_6170_6777  # "esapgw": the advisory lock the following gateway holds
DDL_KEY = LEADER_KEY + 1
POOL_SIZE = 10
POOL_WAIT = 5.0  # seconds a request waits for a working connection before its 503

TABLES = (
    SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    .replace("job_id TEXT PRIMARY KEY,", "job_id TEXT PRIMARY KEY,\n    rowid BIGSERIAL,", 1)
    .replace("execution_duration INTEGER", "execution_duration BIGINT")
)
META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)"


class Row(Sequence[Any]):
    """A row read by column name (as sqlite3.Row) or by position."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names, self._values = names, values

    def __getitem__(self, key: Any) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._names)


def _rows(cursor: Any) -> Any:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(names, values)


@lru_cache(maxsize=512)
def _marks(sql: str) -> str:
    """`?` marks as psycopg's `%s` (no statement of ours has a `?` or `%` in a literal)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Transaction:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self._connection.execute(_marks(sql), list(args))


class PostgresDatabase:
    """The gateway's tables in schema `esap_gateway` of the database the URL names."""

    shared = True
    row_lock = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.lock = threading.RLock()
        self._url = url
        options = {"autocommit": True, "options": f"-c search_path={SCHEMA_NAME}"}
        self._create_schema()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={**options, "row_factory": _rows},
            check=ConnectionPool.check_connection,
            open=True,
            name="esap-gateway",
        )
        self._leader: psycopg.Connection[Any] | None = None
        self._leading = False
        self._leader_lock = threading.Lock()

    def _create_schema(self) -> None:
        """Schema and tables, once even when several gateways start together."""
        with psycopg.connect(self._url, autocommit=True) as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", [DDL_KEY])
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME}")
            connection.execute(f"SET LOCAL search_path = {SCHEMA_NAME}")
            for statement in (*TABLES.split(";"), META):
                if statement.strip():
                    connection.execute(statement)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, checked; the database away is DatabaseUnavailable (503)."""
        try:
            with self._pool.connection(timeout=POOL_WAIT) as connection:
                yield connection
        except (psycopg.OperationalError, PoolTimeout):
            raise DatabaseUnavailable("the job database does not answer; try again") from None

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows a query gives."""
        with self._connection() as connection:
            return connection.execute(_marks(sql), list(args)).fetchall()

    def column(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The first column of a query's rows."""
        return [row[0] for row in self.rows(sql, args)]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement, on its own; how many rows it changed."""
        with self._connection() as connection:
            return connection.execute(_marks(sql), list(args)).rowcount

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """Statements that all happen or none does."""
        with self._connection() as connection, connection.transaction():
            yield _Transaction(connection)

    def next_number(self) -> int:
        """The next of a sequence that never gives a number twice."""
        rows = self.rows("INSERT INTO job_numbers DEFAULT VALUES RETURNING n")
        return int(rows[0][0])

    def columns(self, table: str) -> set[str]:
        """The names of a table's columns."""
        sql = (
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?"
        )
        return set(self.column(sql, [SCHEMA_NAME, table]))

    def leads(self) -> bool:
        """Whether this gateway holds the advisory lock of the following loop (taken if free).

        The lock lives with one connection: a gateway that dies, or loses the database,
        lets another take over at its next cycle.
        """
        with self._leader_lock:
            try:
                if self._leader is None:  # one connection a gateway, kept while it lives
                    self._leader = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
                if self._leading:
                    self._leader.execute("SELECT 1")
                    return True
                sql = "SELECT pg_try_advisory_lock(%s)"
                row = self._leader.execute(sql, [LEADER_KEY]).fetchone()
            except psycopg.Error:
                self._drop_leader()  # with it goes the lock, if it held it
                return False
            self._leading = bool(row is not None and row[0])
            return self._leading

    def _drop_leader(self) -> None:
        if self._leader is not None:
            self._leader.close()
            self._leader = None
        self._leading = False

    @property
    def version(self) -> int:
        """The schema-and-rendering version (0 for new tables)."""
        rows = self.rows("SELECT value FROM meta WHERE name = 'version'")
        return int(rows[0][0]) if rows else 0

    @version.setter
    def version(self, value: int) -> None:
        self.execute(
            "INSERT INTO meta (name, value) VALUES ('version', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [int(value)],
        )

    def close(self) -> None:
        """Close the pool and give up the lead."""
        with self._leader_lock:
            self._drop_leader()
        self._pool.close()
