"""A real DiracX 0.7 server on loopback: S3 sandbox store (moto), SQLite databases, a git CS.

It has one VO with a user group and an administrator group; tokens come from the legacy
exchange, as DIRAC itself gets them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deployments.processes import free_port, spawn, stop_group, wait_http_ok
from tests import leaks
from tests.servers.venvs import server_venv

VO = "cta"
USER_GROUP = "cta_user"
ADMIN_GROUP = "cta_admin"


@dataclass
class DiracXServer:
    """One DiracX server with its S3 store, under `root`."""

    root: Path
    port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    _secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def job_db_url(self) -> str:
        """SQLAlchemy URL of the job database (read by the grid simulator)."""
        return self._env["DIRACX_DB_URL_JOBDB"]

    def _run(self, *argv: str) -> str:
        bin_dir = server_venv("diracx")
        done = subprocess.run(
            [str(bin_dir / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **self._env},
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}\n{done.stderr}")
        return done.stdout

    def configure(self) -> None:
        """Key set, configuration repository, VO, groups, users and database URLs."""
        self.root.mkdir(parents=True, exist_ok=True)
        cs = self.root / "cs"
        self._run(
            "python",
            "-m",
            "diracx.logic",
            "rotate-jwk",
            "--jwks-path",
            str(self.root / "jwks.json"),
        )
        self._run("dirac", "internal", "generate-cs", str(cs))
        self._run(
            "dirac",
            "internal",
            "add-vo",
            str(cs),
            f"--vo={VO}",
            "--idp-url=https://idp.invalid",
            "--idp-client-id=test",
            f"--default-group={USER_GROUP}",
        )
        self._run(
            "dirac",
            "internal",
            "add-group",
            str(cs),
            f"--vo={VO}",
            f"--group={ADMIN_GROUP}",
            "--properties",
            "JobAdministrator",
            "--properties",
            "NormalUser",
        )
        self._run(
            "dirac",
            "internal",
            "add-user",
            str(cs),
            f"--vo={VO}",
            f"--group={USER_GROUP}",
            f"--sub={uuid.uuid4()}",
            "--preferred-username=esap",
        )
        self._run(
            "dirac",
            "internal",
            "add-user",
            str(cs),
            f"--vo={VO}",
            f"--group={ADMIN_GROUP}",
            f"--sub={uuid.uuid4()}",
            "--preferred-username=pilot",
        )
        (self.root / "db").mkdir(exist_ok=True)
        urls = self._run("python", "-m", "diracx.db", "generate-local-urls", str(self.root / "db"))
        for raw in urls.splitlines():
            line = raw.strip().removeprefix("export ")
            if "=" in line:
                key, _, value = line.partition("=")
                self._env[key] = value.strip("'\"")
        from cryptography.fernet import Fernet

        s3 = {
            "endpoint_url": f"http://127.0.0.1:{self.s3_port}",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        self._env.update(
            {
                "DIRACX_CONFIG_BACKEND_URL": f"git+file://{cs}",
                "DIRACX_SERVICE_AUTH_TOKEN_KEYSTORE": f"file://{self.root / 'jwks.json'}",
                "DIRACX_SERVICE_AUTH_STATE_KEY": Fernet.generate_key().decode(),
                "DIRACX_SERVICE_AUTH_TOKEN_ISSUER": self.url,
                "DIRACX_SERVICE_AUTH_ALLOWED_REDIRECTS": json.dumps(
                    [f"{self.url}/docs/oauth2-redirect"]
                ),
                "DIRACX_SANDBOX_STORE_BUCKET_NAME": "sandboxes",
                "DIRACX_SANDBOX_STORE_AUTO_CREATE_BUCKET": "true",
                "DIRACX_SANDBOX_STORE_S3_CLIENT_KWARGS": json.dumps(s3),
                "DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY": hashlib.sha256(
                    self._secret.encode()
                ).hexdigest(),
            }
        )

    def start(self) -> None:
        """Start S3 and the server (configuring on first start); wait until both are ready.

        If either does not come up, whatever was started is stopped before the error.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if not self._env:
            self.configure()
        bin_dir = server_venv("diracx")
        logs = self.root / "logs"
        env = {**os.environ, **self._env}
        if not any("moto" in str(p.args) for p in self._processes if p.poll() is None):
            moto = spawn(
                [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)],
                logs / "s3.log",
                env,
            )
            self._processes.append(moto)
            wait_http_ok(f"http://127.0.0.1:{self.s3_port}/moto-api/", moto, logs / "s3.log", 60)
        app = spawn(
            [
                str(bin_dir / "uvicorn"),
                "--factory",
                "diracx.testing.routers:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            logs / "diracx.log",
            env,
        )
        self._processes.append(app)
        wait_http_ok(f"{self.url}/api/health/ready", app, logs / "diracx.log", 120)
        wait_http_ok(f"{self.url}/.well-known/openid-configuration", app, logs / "diracx.log", 60)

    def stop_app(self) -> None:
        """Stop only the DiracX app (S3 stays), as a server restart would."""
        for process in self._processes:
            if "uvicorn" in str(process.args):
                stop_group(process)
        self._processes = [p for p in self._processes if p.poll() is None]

    def stop(self) -> None:
        """Stop everything."""
        for process in reversed(self._processes):
            stop_group(process)
        self._processes.clear()

    def token(self, username: str, group: str) -> dict[str, object]:
        """A fresh access and refresh token from the legacy exchange."""
        key = base64.urlsafe_b64encode(self._secret.encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/api/auth/legacy-exchange?preferred_username={username}"
            f"&scope=vo:{VO}%20group:{group}",
            headers={"Authorization": f"Bearer diracx:legacy:{key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            data: dict[str, object] = json.load(answer)
        return data

    def credentials(self, path: Path, username: str = "esap", group: str = USER_GROUP) -> Path:
        """Write a DiracX credentials file for `username` (as `dirac login` would)."""
        from diracx.core.models import TokenResponse
        from diracx.core.utils import write_credentials

        write_credentials(TokenResponse.model_validate(self.token(username, group)), location=path)
        return leaks.credentials_file(path)
