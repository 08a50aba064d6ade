"""A real Rucio 41 server on loopback: SQLite database, userpass root account, local RSEs.

RSEs are directories served by the posix protocol; replication is driven by Rucio's own
conveyor daemons (mock transfer tool) run in the server's environment on demand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deployments.processes import free_port, spawn, stop_group, wait_http_ok
from tests import leaks
from tests.servers.venvs import server_venv

ALEMBIC = """\
[alembic]
script_location = rucio.db.sqla:migrate_repo
sqlalchemy.url = {db}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARN
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

SERVER_CFG = """\
[common]
logdir = {root}/logs
loglevel = WARNING

[database]
default = {db}

[bootstrap]
userpass_identity = {user}
userpass_pwd = {password}
userpass_email = esap@example.org

[alembic]
cfg = {root}/alembic.ini

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash

[monitor]
enable_metrics = False

[conveyor]
transfertool = mock
scheme = file
"""


@dataclass
class RucioServer:
    """One Rucio server with its SQLite database, under `root`."""

    root: Path
    port: int = field(default_factory=free_port)
    user: str = "esap"
    password: str = field(default_factory=lambda: leaks.secret(secrets.token_urlsafe(16)))
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (also its auth URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        """The server's rucio.cfg."""
        return self.root / "server" / "rucio.cfg"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "RUCIO_CONFIG": str(self.config)}

    def python(self, code: str, client: bool = False) -> str:
        """Run Python in the server's environment (server or client configuration)."""
        bin_dir = server_venv("rucio")
        env = self._env()
        if client:
            env["RUCIO_CONFIG"] = str(self.client_config(self.root / "admin" / "rucio.cfg"))
        done = subprocess.run(
            [str(bin_dir / "python"), "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rucio server python failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def configure(self) -> None:
        """Write the configuration and build the database with a root account."""
        server = self.root / "server"
        (server / "logs").mkdir(parents=True, exist_ok=True)
        db = f"sqlite:///{server / 'rucio.db'}"
        (server / "alembic.ini").write_text(ALEMBIC.format(db=db))
        self.config.write_text(
            SERVER_CFG.format(root=server, db=db, user=self.user, password=self.password)
        )
        self.python("""
            from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
            build_database(); create_base_vo(); create_root_account()
        """)

    def start(self) -> None:
        """Configure on first start, start the server, wait for /ping."""
        if not self.config.exists():
            self.configure()
        bin_dir = server_venv("rucio")
        log = self.root / "server" / "logs" / "server.log"
        self._process = spawn(
            [
                str(bin_dir / "python"),
                "-m",
                "flask",
                "--app",
                "rucio.web.rest.flaskapi.v1.main:application",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--without-threads",
            ],
            log,
            self._env(),
        )
        try:
            wait_http_ok(f"{self.url}/ping", self._process, log, 90)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server."""
        if self._process is not None:
            stop_group(self._process)
            self._process = None

    def add_rse(self, name: str, directory: Path) -> None:
        """An RSE on a local directory (posix protocol), unlimited for root."""
        directory.mkdir(parents=True, exist_ok=True)
        self.python(
            f"""
            from rucio.client import Client
            from rucio.common.exception import Duplicate
            c = Client()
            try:
                c.add_rse({name!r})
            except Duplicate:
                pass
            else:
                c.add_protocol({name!r}, {{
                    "scheme": "file", "hostname": "localhost", "port": 0,
                    "prefix": {str(directory)!r}, "impl": "rucio.rse.protocols.posix.Default",
                    "domains": {{"lan": {{"read": 1, "write": 1, "delete": 1}},
                                "wan": {{"read": 1, "write": 1, "delete": 1,
                                        "third_party_copy_read": 1,
                                        "third_party_copy_write": 1}}}}}})
                c.set_local_account_limit("root", {name!r}, -1)
            for other in c.list_rses():
                if other["rse"] != {name!r}:
                    for a, b in (({name!r}, other["rse"]), (other["rse"], {name!r})):
                        try:
                            c.add_distance(a, b, {{"distance": 1}})
                        except Duplicate:
                            pass
            try:
                c.add_scope("root", "esap")
            except Duplicate:
                pass
        """,
            client=True,
        )

    def seed_dataset(self, dataset: str, files: dict[str, bytes], rse: str) -> None:
        """Files written straight to `rse` and registered in a new dataset `esap:<dataset>`.

        Much faster than uploading; the files are real replicas with checksums.
        """
        listing = {name: data.hex() for name, data in files.items()}
        self.python(
            f"""
            import hashlib, zlib
            from pathlib import Path
            from urllib.parse import urlparse
            from rucio.client import Client
            from rucio.rse import rsemanager
            c = Client()
            info = rsemanager.get_rse_info({rse!r})
            files = {{name: bytes.fromhex(h) for name, h in {listing!r}.items()}}
            dids = [{{"scope": "esap", "name": n}} for n in files]
            pfns = rsemanager.lfns2pfns(info, dids, operation="write")
            replicas = []
            for n, data in files.items():
                path = Path(urlparse(pfns["esap:" + n]).path)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                replicas.append({{"scope": "esap", "name": n, "bytes": len(data),
                                 "adler32": "%08x" % zlib.adler32(data),
                                 "md5": hashlib.md5(data).hexdigest()}})
            c.add_replicas({rse!r}, replicas)
            c.add_dataset("esap", {dataset!r})
            c.attach_dids("esap", {dataset!r}, dids)
        """,
            client=True,
        )

    @contextlib.contextmanager
    def conveyor(self, interval: float = 0.2) -> Iterator[None]:
        """Rucio's conveyor (mock transfer tool + file copy) cycling in the background."""
        bin_dir = server_venv("rucio")
        stop = self.root / "server" / f"conveyor-stop-{secrets.token_hex(4)}"
        process = spawn(
            [
                str(bin_dir / "python"),
                "-P",  # the script directory holds a rucio.py of its own
                str(Path(__file__).with_name("rucio_conveyor.py")),
                str(stop),
            ],
            self.root / "server" / "logs" / "conveyor.log",
            {**self._env(), "CONVEYOR_INTERVAL": str(interval)},
        )
        try:
            yield
        finally:
            stop.touch()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_group(process)

    def client_config(self, path: Path) -> Path:
        """A client rucio.cfg for the root account (userpass)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            textwrap.dedent(f"""\
            [client]
            rucio_host = {self.url}
            auth_host = {self.url}
            auth_type = userpass
            username = {self.user}
            password = {self.password}
            account = root
            auth_token_file_path = {path.parent / "token"}
            request_retries = 2
        """)
        )
        return path
