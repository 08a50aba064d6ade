"""The embedded stack: a Prefect server on SQLite, a process worker, the ESAP gateway.

Used by `esap-prefect up` (kept running) and `esap-prefect demo` (one run, then stopped).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from core.settings import CONSOLE_HANDLERS, stack_file
from deployments.processes import ProcessError, port_in_use, spawn, stop_group, wait_http_ok
from workers import WARM_TYPE

WORKER_TYPES = (WARM_TYPE, "process")
"""Worker types of the local pool: warm forks (the default), or Prefect's process worker."""


class StackError(RuntimeError):
    """The stack could not start; the message says why."""


class EmbeddedStack:
    """A Prefect server and worker started under one home directory.

    The caller must have pointed Prefect at `api_url` (PREFECT_API_URL) before importing
    Prefect, so that bootstrap talks to this server.
    """

    def __init__(
        self,
        home: Path,
        host: str = "127.0.0.1",
        port: int = 4200,
        pool: str = "local",
        gateway_port: int | None = 8600,
        report: Callable[[str], None] = lambda _line: None,
        worker_type: str | None = None,
        worker: bool = True,
    ) -> None:
        self.home, self.host, self.port, self.pool = home, host, port, pool
        self.with_worker = worker
        self.worker_type = worker_type or os.environ.get("ESAP_PREFECT_WORKER_TYPE", WARM_TYPE)
        if self.worker_type not in WORKER_TYPES:
            raise ValueError(
                f"ESAP_PREFECT_WORKER_TYPE {self.worker_type!r} must be one of "
                + ", ".join(WORKER_TYPES)
            )
        self.gateway_port = gateway_port
        self.report = report
        self.logs = home / "logs"
        self._server: subprocess.Popen[bytes] | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._gateway: subprocess.Popen[bytes] | None = None

    @property
    def gateway_url(self) -> str | None:
        """The ESAP gateway (UWS, planner) of this stack, when it runs one."""
        return None if self.gateway_port is None else f"http://{self.host}:{self.gateway_port}"

    @property
    def api_url(self) -> str:
        """The Prefect API of this stack."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The Prefect UI of this stack."""
        return f"http://{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "1"),
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_LOGGING_LEVEL": os.environ.get("ESAP_PREFECT_LOG_LEVEL", "INFO"),
            # the stack's processes write their logs to logs/*.log
            **dict.fromkeys(CONSOLE_HANDLERS, "NOTSET"),
        }

    @contextlib.contextmanager
    def _step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        self.report(f"{what} ...")
        yield
        self.report(f"{what}: {time.monotonic() - started:.1f} s")

    def start(self, deploy: bool = True) -> None:
        """Start the server, prepare it, start the worker. Stops what it started on failure."""
        for port, option in ((self.port, "--port"), (self.gateway_port, "--gateway-port")):
            if port is not None and port_in_use(self.host, port):
                raise StackError(
                    f"port {port} on {self.host} is already in use: stop what "
                    f"listens there or choose another with {option}"
                )
        prefect = str(Path(sys.executable).parent / "prefect")
        try:
            with self._step("Prefect server"):
                self._server = spawn(
                    [prefect, "server", "start", "--host", self.host, "--port", str(self.port)],
                    self.logs / "server.log",
                    self._env(),
                )
                wait_http_ok(f"{self.api_url}/health", self._server, self.logs / "server.log", 90)
            from deployments.bootstrap import apply_deployments, prepare

            with self._step("block types, default blocks, work pool"):
                prepare()
            if deploy:
                with self._step("deployments"):
                    apply_deployments()
            if self.with_worker:
                self._start_worker(prefect)
            if self.gateway_port is not None:
                with self._step("gateway"):
                    self._gateway = spawn(
                        [sys.executable, "-m", "gateway.app"],
                        self.logs / "gateway.log",
                        {
                            **self._env(),
                            "ESAP_GATEWAY_HOST": self.host,
                            "ESAP_GATEWAY_PORT": str(self.gateway_port),
                        },
                    )
                    wait_http_ok(
                        f"{self.gateway_url}/uws/availability",
                        self._gateway,
                        self.logs / "gateway.log",
                        60,
                    )
        except (ProcessError, RuntimeError, OSError) as exc:
            self.stop()
            raise StackError(f"the embedded stack did not start: {exc}") from exc
        stack_file().write_text(
            json.dumps(
                {"api_url": self.api_url, "gateway_url": self.gateway_url, "pid": os.getpid()}
            )
        )

    def _start_worker(self, prefect: str) -> None:
        with self._step("worker"):
            self._worker = spawn(
                [prefect, "worker", "start", "--pool", self.pool, "--type", self.worker_type],
                self.logs / "worker.log",
                self._env(),
            )

    def stop(self) -> None:
        """Stop the gateway, the worker, then the server (TERM, KILL later), leaving nothing."""
        for process in (self._gateway, self._worker, self._server):
            if process is not None:
                stop_group(process)
        self._gateway = self._worker = self._server = None
        path = stack_file()
        if path.exists() and json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
