"""The `apptainer` worker type: each flow run executes in the runtime image with `apptainer exec`.

Prefect's process worker underneath (one process group per run, its kill, crash detection,
cancellation); `workers/apptainer_launch.py` turns the run into the container command.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio.abc
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessVariables,
    ProcessWorker,
    ProcessWorkerResult,
)
from pydantic import Field, PositiveInt

from blocks.apptainer import is_sif
from core.settings import home
from workers import APPTAINER_TYPE, apptainer_launch
from workers.background import every, stop
from workers.crash_retry import CrashRetry

ENGINE_COMMAND = ["python", "-m", "prefect.engine"]
POLL_VARIABLE = "ESAP_APPTAINER_WORKER_POLL_SECONDS"
IMAGE_HELP = (
    "The runtime image on the worker's host: a SIF file (`esap-prefect images build "
    "--apptainer` makes one; `esap-prefect up` sets it here) or a sandbox folder."
)
SINGULARITY_HELP = "The apptainer (or singularity) command on the worker's host."
BINDS_HELP = "More host paths visible in the container, as `host[:container[:ro]]`."
WALLTIME_HELP = "Seconds a flow run may take; then its container is stopped and the run crashed."
SHARE_HOME_HELP = (
    "Bind the worker's $ESAP_PREFECT_HOME at its own path, so the local archive and job "
    "folders of the run land on the host (off: the container's private /tmp, lost at exit)."
)


def _kill_group(pgid: int, wait: float = 30) -> None:
    """SIGKILL the process group and wait (up to `wait` seconds) for its leader to go.

    Not SIGTERM: an engine signalled without its own worker's word on the control channel
    reports its run Crashed, over the Cancelled the user asked for.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            os.kill(pgid, 0)
            time.sleep(0.1)


class ApptainerJobConfiguration(ProcessJobConfiguration):
    """The process worker's configuration plus the image, the command, binds and wall time."""

    image: str = Field(default="", description=IMAGE_HELP)
    singularity: str = Field(default="apptainer", description=SINGULARITY_HELP)
    binds: list[str] = Field(default_factory=list, description=BINDS_HELP)
    walltime: PositiveInt | None = Field(default=None, description=WALLTIME_HELP)
    share_home: bool = Field(default=True, description=SHARE_HOME_HELP)


class ApptainerVariables(ProcessVariables):
    """What an operator sets on the pool (or a deployment) for runs in Apptainer."""

    image: str = Field(default="", description=IMAGE_HELP)
    singularity: str = Field(default="apptainer", description=SINGULARITY_HELP)
    binds: list[str] = Field(default_factory=list, description=BINDS_HELP)
    walltime: PositiveInt | None = Field(default=None, description=WALLTIME_HELP)
    share_home: bool = Field(default=True, description=SHARE_HOME_HELP)


class ApptainerWorkerResult(ProcessWorkerResult):
    """The container's exit code and the pid of its process group's leader."""


class NoApptainer(RuntimeError):
    """The pool's command or image is missing on this host."""


def check_runtime(singularity: str, image: str) -> None:
    """The command runs and the image is a SIF file or a sandbox folder.

    Raises:
        NoApptainer: with what is missing and how to get it.
    """
    if shutil.which(singularity) is None:
        raise NoApptainer(f"{singularity} is not a command on this host (the pool's singularity)")
    if not image:
        raise NoApptainer("the pool names no image: run `esap-prefect images build --apptainer`")
    path = Path(image)
    if not (path.is_absolute() and (is_sif(path) or (path / ".singularity.d").is_dir())):
        raise NoApptainer(f"the pool's image {image} is not a SIF file or sandbox on this host")


def records() -> Path:
    """Where launched runs note their pid (this host's home): how a new worker finds them."""
    return home() / "apptainer-runs"


def launched_here(pid: int, flow_run_id: UUID) -> bool:
    """Whether `pid` still is the process launched for this run (not a pid reused since)."""
    record = records() / f"{flow_run_id}.json"
    try:
        noted = json.loads(record.read_text())
        return bool(noted["pid"] == pid and apptainer_launch.start_time(pid) == noted["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _launch_pid(run: FlowRun) -> int | None:
    """The pid a run's infrastructure id names (`<host>:<pid>` or a bare pid), if any."""
    pid = str(run.infrastructure_pid or "").rpartition(":")[2]
    return int(pid) if pid.isdigit() else None


class ApptainerWorker(ProcessWorker):
    """Flow runs as `apptainer exec --containall` of the runtime image, one process group each.

    Runs this worker started are cancelled through Prefect's control channel; runs another
    (a crashed predecessor on this host) started are found by the pid their launcher noted
    in the home, and their process group stopped.
    """

    type = APPTAINER_TYPE
    job_configuration: builtins.type[ProcessJobConfiguration] = ApptainerJobConfiguration
    job_configuration_variables = ApptainerVariables  # type: ignore[assignment]  # typed None in Prefect
    _description = (
        "esap-prefect: each flow run executes in the esap-prefect runtime image with "
        "`apptainer exec --containall` on the worker's host."
    )
    _display_name = "Apptainer"
    _documentation_url = "https://apptainer.org/docs/user/latest/"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crashes = CrashRetry(self)
        self._own: set[UUID] = set()
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ApptainerWorker:
        await super().__aenter__()
        variables = (self._work_pool.base_job_template if self._work_pool else {}).get(
            "variables", {}
        )
        defaults = {k: v.get("default") for k, v in variables.get("properties", {}).items()}
        try:
            check_runtime(
                str(defaults.get("singularity") or "apptainer"), str(defaults.get("image") or "")
            )
        except NoApptainer as exc:
            self._logger.error("the apptainer worker cannot start: %s", exc)
            await super().__aexit__(None, None, None)
            raise SystemExit(1) from None
        seconds = float(os.environ.get(POLL_VARIABLE, "5"))
        self._watch = every(
            seconds, self._cancel_orphans, self._logger, "looking for earlier workers' runs"
        )
        self._crashes.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await stop(self._watch)
        await self._crashes.stop()
        await super().__aexit__(*exc_info)

    async def _cancel_orphans(self) -> None:
        """Stop the containers of Cancelling runs that a previous worker here started."""
        if self._work_pool is None:
            return
        runs = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.CANCELLING, StateType.CRASHED])
                )
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool.name])),
        )
        for run in runs:
            record = records() / f"{run.id}.json"
            # a run without a record here was launched on another host (or has none to stop)
            if run.id in self._own or not record.exists():
                continue
            if run.state is not None and run.state.is_crashed():
                # its engine saw the cancel first and reported the signal as a crash
                states = await self.client.read_flow_run_states(run.id)
                if not any(s.type is StateType.CANCELLING for s in states[-3:]):
                    pid = _launch_pid(run)
                    if pid is None or not launched_here(pid, run.id):
                        record.unlink(missing_ok=True)  # a crash of its own, and over
                    continue
            # Cancelled first, then the whole group killed: nothing is left to report a crash
            await self._mark_flow_run_as_cancelled(run)
            logger = self.get_flow_run_logger(run)
            pid = _launch_pid(run)
            if pid is not None and await asyncio.to_thread(launched_here, pid, run.id):
                await asyncio.to_thread(_kill_group, pid)
                logger.info("container of a previous worker stopped (process group %s)", pid)
            # the flow's own cancellation hook died with it: cancel its facility jobs here
            # (imported here: every `prefect` command imports this module, not the flows)
            from flows.pipeline import cancel_recorded_jobs

            said = await asyncio.to_thread(cancel_recorded_jobs, str(run.id))
            if said is not None:
                logger.info("%s", said)
            record.unlink(missing_ok=True)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        """Run the flow run in the pool's image (the run's own variables as APPTAINERENV_*)."""
        assert isinstance(configuration, ApptainerJobConfiguration)
        logger = self.get_flow_run_logger(flow_run)
        try:
            await asyncio.to_thread(check_runtime, configuration.singularity, configuration.image)
        except NoApptainer as exc:
            logger.error("cannot start the flow run in Apptainer: %s", exc)
            return ApptainerWorkerResult(status_code=1, identifier="")
        launch = {
            "singularity": configuration.singularity,
            "image": configuration.image,
            "binds": configuration.binds,
            "walltime": configuration.walltime,
            "home": str(home()) if configuration.share_home else None,
            "records": str(records()),
            "command": ENGINE_COMMAND,
            "env": [k for k, v in configuration.env.items() if os.environ.get(k) != v],
        }
        configuration.command = shlex.join([sys.executable, "-I", apptainer_launch.__file__])
        configuration._command_configured = True
        configuration.env = {
            **configuration.env,
            apptainer_launch.LAUNCH_VARIABLE: json.dumps(launch),
        }
        started = time.monotonic()
        self._own.add(flow_run.id)
        try:
            result = await super().run(flow_run, configuration, task_status)
        finally:
            self._own.discard(flow_run.id)
            (records() / f"{flow_run.id}.json").unlink(missing_ok=True)
        # the engine may end cleanly on `timeout`'s SIGTERM (exit 0), so the clock decides
        if configuration.walltime and time.monotonic() - started >= configuration.walltime:
            logger.error(
                "wall time of %d s exceeded: the container was stopped", configuration.walltime
            )
        return ApptainerWorkerResult(status_code=result.status_code, identifier=result.identifier)
