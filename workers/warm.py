"""The `warm` worker type: Prefect's process worker, whose flow runs fork from a warm parent.

Starting a flow run costs Prefect's process worker a fresh interpreter that imports Prefect
and the workflows (seconds here); this worker keeps one parent that has imported them
(`workers.forkserver`) and starts each run as `workers/warm_client.py`, which becomes a
fork of it. One OS process (and process group) per flow run, logs, cancellation, crash
detection and the cancellation hook stay the process worker's own.
"""

from __future__ import annotations

import asyncio
import builtins
import select
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessVariables,
    ProcessWorker,
    ProcessWorkerResult,
)

from workers import WARM_TYPE, warm_client
from workers.crash_retry import CrashRetry

READY_SECONDS = 120


class WarmJobConfiguration(ProcessJobConfiguration):
    """The process worker's job configuration (command, env, working directory)."""


class WarmVariables(ProcessVariables):
    """The process worker's variables: a `command` set here runs cold, as Prefect would."""


class WarmWorkerResult(ProcessWorkerResult):
    """The flow run's exit code and pid, as the process worker reports them."""


class WarmWorker(ProcessWorker):
    """Flow runs as forks of a parent that has imported Prefect and every workflow."""

    type = WARM_TYPE
    job_configuration: builtins.type[ProcessJobConfiguration] = WarmJobConfiguration
    job_configuration_variables = WarmVariables  # type: ignore[assignment]  # typed None in Prefect
    _description = (
        "esap-prefect: flow runs as local processes forked from a warm parent that has "
        "imported Prefect and the workflows: runs start in about a second, not several."
    )
    _display_name = "Warm process"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crashes = CrashRetry(self)
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._socket: Path | None = None

    async def __aenter__(self) -> WarmWorker:
        await super().__aenter__()
        await asyncio.to_thread(self._start_server)
        self._crashes.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._crashes.stop()
            await super().__aexit__(*exc_info)
        finally:
            self._stop_server()

    def _start_server(self) -> None:
        """The fork server, warm and listening (or a warning: runs then start cold)."""
        self._folder = tempfile.TemporaryDirectory(prefix="esap-warm-")
        self._socket = Path(self._folder.name) / "forkserver.sock"
        self._server = subprocess.Popen(
            [sys.executable, "-m", "workers.forkserver", str(self._socket)],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._server.stdout is not None
        ready, _, _ = select.select([self._server.stdout], [], [], READY_SECONDS)
        line = self._server.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self._logger.warning("the warm parent did not start: flow runs start cold")
            self._stop_server()
        else:
            self._logger.info("warm parent %d ready at %s", self._server.pid, self._socket)

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(20)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        self._socket = None

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        """Run the flow run as a fork of the warm parent, unless a command was configured."""
        warm = self._socket is not None and self._server is not None
        if warm and not configuration._command_configured:
            configuration.command = shlex.join([sys.executable, "-I", warm_client.__file__])
            configuration._command_configured = True  # the process worker's own switch
            configuration.env = {
                **configuration.env,
                warm_client.SOCKET_VARIABLE: str(self._socket),
                warm_client.PYTHON_VARIABLE: sys.executable,
            }
        result = await super().run(flow_run, configuration, task_status)
        return WarmWorkerResult(status_code=result.status_code, identifier=result.identifier)
