"""A real PostgreSQL server from Debian's packages, started in a folder of the test run.

As root it runs as the `postgres` system user (PostgreSQL refuses root); password auth
(scram-sha-256) on loopback, so the suite's secret scan has a database password to look for.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg

from tests import leaks


def binaries() -> Path:
    """The newest installed PostgreSQL's bin folder (`apt-get install postgresql`)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server: apt-get install postgresql")
    return Path(found[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """initdb, start, stop and restart one cluster; `url` for psycopg, `prefect_url` for Prefect."""

    def __init__(self, root: Path, user: str = "esap", database: str = "esap") -> None:
        self.root, self.user, self.database = root, user, database
        self.data, self.log = root / "data", root / "postgres.log"
        self.password = leaks.secret("pg-" + secrets.token_hex(12))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run(
            [*prefix, *command], check=check, capture_output=True, text=True, timeout=120
        )

    def initialise(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        secret = self.root / "pwfile"
        secret.write_text(self.password)
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, secret):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        secret.chmod(0o600)
        self._run(
            str(binaries() / "initdb"),
            "-D", str(self.data),
            "-U", self.user,
            "--auth=scram-sha-256",
            f"--pwfile={secret}",
            "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip
        secret.unlink()
        return self

    def start(self) -> PostgresServer:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.root} "
            "-c max_connections=300 -c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(binaries() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self

    def create_database(self) -> PostgresServer:
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [self.database]
            ).fetchall():
                conn.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def fresh_database(self) -> str:
        """The URL of a new, empty database on this server."""
        name = f"t{secrets.token_hex(6)}"
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(binaries() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
            check=False,
        )  # fmt: skip

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
