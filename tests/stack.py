"""A whole `esap-prefect up` stack for gateway tests, and an OIDC issuer to call it with.

One stack serves every gateway test module of the session (conftest's `gateway` fixture).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pyvo.io.uws import parse_job

from deployments.processes import free_port
from tests import leaks
from tests.credential import provision
from tests.servers.vo import VoService

CLI = str(Path(sys.executable).parent / "esap-prefect")
ESAP_ORIGIN = "https://esap.example.org"  # the browser origin the session's stack allows


class Gateway:
    """A running gateway: its URL and an authenticated client."""

    def __init__(self, url: str, token: str, home: Path, process: subprocess.Popen[str]) -> None:
        self.url, self.token, self.home, self.process = url, token, home, process
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {leaks.secret(token)}"},
            timeout=120,
            event_hooks={"response": [leaks.keep_answer]},
        )

    @property
    def api(self) -> str:
        """The stack's Prefect API."""
        return str(json.loads((self.home / "stack.json").read_text())["api_url"])

    def create(self, **params: Any) -> str:
        answer = self.http.post("/uws/jobs", data={k: str(v) for k, v in params.items()})
        assert answer.status_code == 303, answer.text
        location = answer.headers["location"]
        assert location.startswith(f"{self.url}/uws/jobs/")
        return location.rsplit("/", 1)[-1]

    def wait_final(self, job_id: str, timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.http.get(f"/uws/jobs/{job_id}", params={"WAIT": 10})
            job = parse_job(io.BytesIO(answer.content))
            if job.phase in ("COMPLETED", "ERROR", "ABORTED"):
                return job
        raise AssertionError(f"job {job_id} not final after {timeout}s")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`esap-prefect ARGS` against this stack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PREFECT_API_URL": self.api, "ESAP_PREFECT_HOME": str(self.home)}
        return subprocess.run(
            [CLI, *args], capture_output=True, text=True, env=env, check=False, timeout=timeout
        )


class Issuer:
    """An OIDC issuer as ESCAPE IAM would be: an RSA key whose JWKS a VO-style server serves."""

    def __init__(self, vo: VoService) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        keys = {"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]}
        self.jwks_url = vo.file("oidc/jwks.json", json.dumps(keys).encode())
        self.issuer = "https://iam.escape.test/"
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        leaks.secret(pem.decode().splitlines()[1])  # a line of the key, as a leak would show it

    def token(
        self, subject: str, lifetime: float = 300, kid: str = "test-key", **claims: Any
    ) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": subject, "aud": "esap", "iat": now}
        body |= {"exp": now + int(lifetime), **claims}
        return leaks.secret(jwt.encode(body, self.key, algorithm="RS256", headers={"kid": kid}))

    def owner(self, subject: str) -> str:
        """The owner name the gateway gives this issuer's subject."""
        return f"{subject}@{self.issuer.rstrip('/')}"


def launch_up(
    home: Path, port: int, gateway_port: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    """`esap-prefect up` started, once it has written its stack file (or a failed assert)."""
    up = subprocess.Popen(
        [CLI, "up", "--port", str(port), "--gateway-port", str(gateway_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 180
    while not (home / "stack.json").exists():
        assert up.poll() is None, up.communicate()
        assert time.monotonic() < deadline, "up did not come up"
        time.sleep(0.5)
    return up


@contextmanager
def running_stack(home: Path, issuer: Issuer, **settings: str) -> Iterator[Gateway]:
    """`esap-prefect up` on fresh ports under `home`, trusting `issuer`; stopped after."""
    port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["ESAP_PREFECT_HOME"] = str(provision(home))
    env["ESAP_GATEWAY_SYNC_SECONDS"] = "0.2"
    env["ESAP_GATEWAY_OIDC_ISSUER"] = issuer.issuer
    env["ESAP_GATEWAY_OIDC_JWKS_URL"] = issuer.jwks_url
    env["ESAP_GATEWAY_OIDC_AUDIENCE"] = "esap"
    env |= settings
    up = launch_up(home, port, gateway_port, env)
    try:
        token = subprocess.run(
            [CLI, "token"], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        gateway = Gateway(f"http://127.0.0.1:{gateway_port}", token, home, up)
        leaks.APIS.add(gateway.api)
        yield gateway
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=120)
