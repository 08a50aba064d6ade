"""A grid simulator for tests: it plays DIRAC's optimizers and pilots against a real DiracX.

DiracX 0.7 moves no job by itself. This walks waiting jobs through the statuses with an
administrator token, runs each payload in a scratch directory as a pilot would (input
sandboxes in, `Executable Arguments` through the shell), uploads and assigns the output
sandbox, and can fail, stall or lose chosen jobs. It reads JDL read-only from the server's
job database, because DiracX 0.7 has no route that returns it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from DIRACCommon.WorkloadManagementSystem.DB.JobDBUtils import extractJDL
from diracx.api.jobs import create_sandbox, download_sandbox
from diracx.client.aio import AsyncDiracClient
from diracx.client.models import JobStatusUpdate, SandboxInfo
from diracx.client.sync import SyncDiracClient
from diracx.core.models import ScalarSearchOperator, VectorSearchOperator
from diracx.core.preferences import DiracxPreferences

from blocks.dirac.connection import run_async
from blocks.dirac.jdl import parse

Fate = Literal["run", "fail", "stall", "lose", "hold"]
EQUAL = ScalarSearchOperator.EQUAL
WAITING = ["Submitting", "Received", "Checking", "Waiting", "Matched", "Rescheduled"]
PATH_TO_RUNNING = ["Checking", "Waiting", "Matched", "Running"]


@dataclass
class GridSimulator:
    """Moves the jobs of a DiracX server the way DIRAC's agents and pilots would."""

    url: str
    admin_credentials: Path
    owner_credentials: Path
    job_db_url: str
    fates: Callable[[str], Fate] = field(default=lambda _name: "run")
    run_payloads: bool = True
    ran: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    before_done: Callable[[list[str]], None] | None = None
    """Without payloads: called with the job names before they are set Done (a benchmark
    plays the nodes' flow runs there)."""

    @property
    def prefs(self) -> DiracxPreferences:
        return DiracxPreferences(url=self.url, credentials_path=self.admin_credentials)

    @property
    def owner_prefs(self) -> DiracxPreferences:
        """Pilots move sandboxes with the job owner's delegated credentials."""
        return DiracxPreferences(url=self.url, credentials_path=self.owner_credentials)

    def jdl_text(self, job_id: int) -> str:
        """The JDL as DiracX stored it for the job."""
        path = self.job_db_url.split(":///", 1)[1]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT JDL FROM JobJDLs WHERE JobID = ?", (job_id,)).fetchone()
        return str(extractJDL(row[0]))

    def _jdl(self, job_id: int) -> Any:
        return parse(self.jdl_text(job_id))

    @staticmethod
    def _steps(
        statuses: list[tuple[str, str]], app: str | None = None
    ) -> dict[str, JobStatusUpdate]:
        start = datetime.now(UTC)
        last = len(statuses) - 1
        return {
            (start + timedelta(milliseconds=i)).isoformat(): JobStatusUpdate(
                status=status,
                minor_status=minor,
                source="gridsim",
                application_status=app if i == last else None,
            )
            for i, (status, minor) in enumerate(statuses)
        }

    def waiting(self, client: SyncDiracClient) -> list[dict[str, Any]]:
        """Every job not yet running."""
        return list(
            client.jobs.search(
                parameters=["JobID", "JobName", "Status"],
                search=[
                    {"parameter": "Status", "operator": VectorSearchOperator.IN, "values": WAITING}
                ],
                per_page=10000,
            )
        )

    def start(self, client: SyncDiracClient, jobs: list[dict[str, Any]]) -> None:
        """Match and start jobs in one bulk call (Checking -> ... -> Running)."""
        body = {
            str(j["JobID"]): self._steps(
                ([("Received", "Job accepted")] if j["Status"] == "Submitting" else [])
                + [(s, "Simulated pilot") for s in PATH_TO_RUNNING]
            )
            for j in jobs
        }
        for start in range(0, len(body), 500):
            chunk = dict(list(body.items())[start : start + 500])
            client.jobs.set_job_statuses(body=chunk)

    def finish(self, client: SyncDiracClient, job_id: int, name: str, fate: Fate) -> None:
        """Run one started job to its end according to its fate."""
        if fate in ("lose", "hold"):
            return
        if fate == "stall":
            client.jobs.set_job_statuses(
                body={str(job_id): self._steps([("Stalled", "Job stalled: pilot not running")])}
            )
            return
        code = self._execute(client, job_id) if self.run_payloads else 0
        if code is None:
            return
        if fate == "fail" or code != 0:
            final = [
                ("Completing", "Uploading outputs"),
                ("Failed", f"Application Finished With Errors (exit {code})"),
            ]
        else:
            final = [("Completing", "Uploading outputs"), ("Done", "Execution Complete")]
        app = "Simulated failure" if fate == "fail" else f"Exited with {code}"
        client.jobs.set_job_statuses(body={str(job_id): self._steps(final, app)})
        self.ran.append(name)

    def _watch(
        self, client: SyncDiracClient, job_id: int, payload: subprocess.Popen[bytes]
    ) -> int | None:
        """The payload's exit code; None when the job was killed meanwhile (its group killed,
        as DIRAC's job agent does when it sees the job Killed)."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                return payload.wait(1)
            except subprocess.TimeoutExpired:
                rows = client.jobs.search(
                    parameters=["Status"],
                    search=[
                        {
                            "parameter": "JobID",
                            "operator": ScalarSearchOperator.EQUAL,
                            "value": job_id,
                        }
                    ],
                )
                if rows and rows[0]["Status"] == "Killed":
                    os.killpg(payload.pid, signal.SIGKILL)
                    payload.wait()
                    self.killed.append(job_id)
                    return None
        os.killpg(payload.pid, signal.SIGKILL)
        return payload.wait()

    def _execute(self, client: SyncDiracClient, job_id: int) -> int | None:
        jdl = self._jdl(job_id)
        with tempfile.TemporaryDirectory(prefix="gridsim-") as tmp:
            work = Path(tmp)
            for pfn in jdl.getListFromExpression("InputSandbox"):
                run_async(self._download(pfn, work))
            command = (
                f"{jdl.getAttributeString('Executable')} "
                f"{jdl.getAttributeString('Arguments') or ''}"
            )
            stdout = jdl.getAttributeString("StdOutput") or "std.out"
            stderr = jdl.getAttributeString("StdError") or "std.err"
            with (work / stdout).open("wb") as out, (work / stderr).open("wb") as err:
                payload = subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    cwd=work,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
                code = self._watch(client, job_id, payload)
            if code is None:
                return None
            wanted = jdl.getListFromExpression("OutputSandbox")
            files = sorted(
                {
                    p
                    for p in work.rglob("*")
                    if p.is_file()
                    and any(fnmatch.fnmatch(p.relative_to(work).as_posix(), w) for w in wanted)
                }
            )
            if files:
                pfn = run_async(self._upload(files))
                client.jobs.assign_sandbox_to_job(job_id, f'"{pfn}"')
        return code

    async def _download(self, pfn: str, work: Path) -> None:
        async with AsyncDiracClient(diracx_preferences=self.owner_prefs) as client:
            await download_sandbox(pfn, work, client=client)

    def return_sandbox(self, job_id: int, data: bytes) -> None:
        """Assign `data` (a tar.bz2 made by hand) as the job's output sandbox.

        A pilot tars what the payload left, links as links; this plays a hostile one.
        """
        with SyncDiracClient(diracx_preferences=self.owner_prefs) as client:
            answer = client.jobs.initiate_sandbox_upload(
                SandboxInfo(
                    checksum_algorithm="sha256",
                    checksum=hashlib.sha256(data).hexdigest(),
                    size=len(data),
                    format="tar.bz2",
                )
            )
            if answer.url:
                httpx.post(
                    answer.url, data=answer.fields, files={"file": ("file", data)}
                ).raise_for_status()
        with SyncDiracClient(diracx_preferences=self.prefs) as client:
            client.jobs.assign_sandbox_to_job(job_id, f'"{answer.pfn}"')

    async def _upload(self, files: list[Path]) -> str:
        async with AsyncDiracClient(diracx_preferences=self.owner_prefs) as client:
            return str(await create_sandbox(files, client=client))

    def run_once(self) -> int:
        """One pilot cycle: start every waiting job and run each to its fate; how many."""
        with SyncDiracClient(diracx_preferences=self.prefs) as client:
            jobs = self.waiting(client)
            if not jobs:
                return 0
            self.start(client, jobs)
            if not self.run_payloads:
                self.finish_bulk(client, jobs)
                return len(jobs)
            for job in jobs:
                self.finish(client, int(job["JobID"]), job["JobName"], self.fates(job["JobName"]))
        return len(jobs)

    def finish_bulk(self, client: SyncDiracClient, jobs: list[dict[str, Any]]) -> None:
        """Complete started jobs without running payloads, 500 per call (for benchmarks)."""
        if self.before_done is not None:
            self.before_done([j["JobName"] for j in jobs])
        done = [("Completing", "Uploading outputs"), ("Done", "Execution Complete")]
        body = {str(j["JobID"]): self._steps(done, "Exited with 0") for j in jobs}
        items = list(body.items())
        for start in range(0, len(items), 500):
            client.jobs.set_job_statuses(body=dict(items[start : start + 500]))
        self.ran.extend(j["JobName"] for j in jobs)

    def fail_lost(self, names: list[str]) -> None:
        """What DIRAC's stalled-job agent does at last: lost jobs become Failed."""
        with SyncDiracClient(diracx_preferences=self.prefs) as client:
            rows = client.jobs.search(
                parameters=["JobID"],
                search=[
                    {"parameter": "JobName", "operator": VectorSearchOperator.IN, "values": names}
                ],
            )
            client.jobs.set_job_statuses(
                body={
                    str(r["JobID"]): self._steps([("Failed", "Job stalled: pilot not running")])
                    for r in rows
                }
            )
