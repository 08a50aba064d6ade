"""The DIRAC facility: bulk and parametric submission, bulk monitoring, sandboxes, kill.

Everything goes through `diracx-client`; one `jobs.search` answers a poll of any size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from azure.core.exceptions import HttpResponseError
from diracx.api.jobs import create_sandbox, download_sandbox
from diracx.client.aio import AsyncDiracClient
from diracx.client.models import BodyJobsRescheduleJobs, JobStatusUpdate
from diracx.core.models import VectorSearchOperator
from diracx.core.preferences import DiracxPreferences
from pydantic import Field, SecretStr

from blocks.dirac.connection import (
    preferences,
    run_async,
    sync_client,
    translated,
)
from blocks.dirac.jdl import JobDescription
from blocks.facility import LOG_TAIL, FacilityBlock
from core.errors import FatalError, JobRefused
from core.files import read_tail, write_json, write_secret_file
from core.job_folder import UnsafeFile, scan_outputs
from core.jobs import (
    InputFile,
    JobArray,
    JobLog,
    JobOutputs,
    JobRef,
    JobSpec,
    JobStatus,
    OutputFile,
)
from core.settings import home
from core.states import JobState, from_dirac
from core.units import Duration, Memory
from planner.models import TaskType

ENV_SCRIPT = "esap-env.sh"
"""The job's environment travels in its input sandbox: JDL is readable by many, and DIRAC
has no secret environment. The job runs `/bin/sh esap-env.sh <executable> <arguments>`."""
CONTAINER_SCRIPT = "esap-container.sh"
CONTAINER_SCRIPT_TEXT = """\
# esap-prefect: the job's command in its Apptainer image, the job's folder bound and current
command=$1 image=$2
shift 2
exec "$command" exec --containall --bind "$PWD" --pwd "$PWD" "$image" "$@"
"""
"""Jobs with an image run `/bin/sh esap-container.sh <apptainer> <image> <command...>` on the
node (a clean environment: the job's variables go in as APPTAINERENV_*)."""
MAX_PER_CALL = 20
MAX_PER_PAGE = 10000
RANGE_NOT_SATISFIABLE = 416
SANDBOX_LOGS = ("std.out", "std.err")
STATUS_FIELDS = ["JobID", "JobName", "Status", "MinorStatus", "ApplicationStatus"]


class DiracFacility(FacilityBlock):
    """Runs payload jobs on the DIRAC grid through a DiracX server.

    Credentials are a DiracX credentials file (`dirac login` writes one): give its path,
    or paste its content as a secret. With neither, `DIRACX_URL` and
    `DIRACX_CREDENTIALS_PATH` are used, as the DiracX client does.

    Example:
        ```python
        from blocks import DiracFacility

        facility = DiracFacility.load("cta-dirac")  # this block, in your code
        DiracFacility(url="https://diracx.example.org", vo="ctao",  # another one
                      output_se="CC-IN2P3-USER").save("other-grid")
        ```
    """

    _block_type_name = "DIRAC Facility"
    _description = "Runs ESAP payload jobs on the DIRAC grid through DiracX."

    kind: ClassVar[str] = "dirac"
    runtime_engine: ClassVar[str] = "DIRAC"
    url: str | None = Field(default=None, description="DiracX URL; default $DIRACX_URL.")
    credentials_path: Path | None = Field(
        default=None, description="DiracX credentials file; default $DIRACX_CREDENTIALS_PATH."
    )
    credentials: SecretStr | None = Field(
        default=None, description="Content of a DiracX credentials file (kept secret)."
    )
    vo: str | None = Field(default=None, description="Virtual organisation, e.g. ctao.")
    group: str | None = Field(default=None, description="DIRAC group the token is for.")
    sites: list[str] = Field(default_factory=list, description="Sites jobs may run at.")
    banned_sites: list[str] = Field(default_factory=list, description="Sites to avoid.")
    platform: str | None = Field(
        default=None, description="DIRAC platform of the worker nodes, e.g. x86_64-el9."
    )
    tags: list[str] = Field(
        default_factory=list, description="DIRAC tags the worker nodes must have, e.g. GPU."
    )
    priority: int | None = Field(
        default=None, ge=0, le=10, description="Job priority within the group, 0 to 10."
    )
    output_se: str | None = Field(default=None, description="Storage element for output data.")
    output_path: str | None = Field(
        default=None, description="LFN directory for output data, e.g. /ctao/user/e/esap."
    )
    parametric: bool = Field(default=True, description="Submit job arrays as parametric JDL.")
    max_cores: int = Field(default=8, ge=1, description="Most cores one job may ask for.")
    max_memory: Memory = Field(
        default="16G", validate_default=True, description="Most memory one job may ask for."
    )
    max_duration: Duration = Field(
        default="72h", validate_default=True, description="Longest CPU time one job may ask for."
    )
    preference: int = Field(default=200, description="Planner rank, lower preferred.")
    singularity: str | None = Field(
        default=None,
        description="The apptainer command on the grid nodes; set, jobs may run container "
        "images (Apptainer images the nodes can read, e.g. on CVMFS).",
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Images the nodes can read, by key (CONCORDIA: CORSIKA configuration key "
        "-> SIF path on CVMFS).",
    )

    servicetype: ClassVar[str] = "uri://dirac"

    def task_types(self) -> frozenset[TaskType]:
        """Programs; and Apptainer images when the nodes have the command."""
        extra = {TaskType.SINGULARITY} if self.singularity else set()
        return self.tasktypes | extra

    def endpoint(self) -> str | None:
        """The DiracX server."""
        return self._url()

    def _url(self) -> str:
        url = self.url or os.environ.get("DIRACX_URL")
        if not url:
            raise FatalError(
                f"facility {self.facility_name} has no DiracX URL (set url or DIRACX_URL)"
            )
        return url

    def _prefs(self) -> DiracxPreferences:
        if self.credentials is not None:
            digest = hashlib.sha256(self.credentials.get_secret_value().encode()).hexdigest()
            path = home() / "secrets" / f"diracx-{digest[:16]}.json"
            if not path.exists():
                write_secret_file(path, self.credentials.get_secret_value())
        else:
            path = self.credentials_path or Path(
                os.environ.get(
                    "DIRACX_CREDENTIALS_PATH",
                    Path.home() / ".cache" / "diracx" / "credentials.json",
                )
            )
        return preferences(self._url(), Path(path).expanduser())

    # -- submission -------------------------------------------------------------------------

    def _upload_inputs(
        self, prefs: DiracxPreferences, inputs: Sequence[InputFile], cache: dict[str, str]
    ) -> str | None:
        """Upload the inputs as one sandbox (content-addressed: shared by equal inputs)."""
        if not inputs:
            return None
        key = hashlib.sha256(
            json.dumps([i.model_dump(mode="json") for i in inputs], sort_keys=True).encode()
        ).hexdigest()
        if key in cache:
            return cache[key]
        with tempfile.TemporaryDirectory(prefix="esap-sandbox-") as tmp:
            root = Path(tmp)
            for item in inputs:
                item.place(root)
            tops = sorted({root / Path(i.name).parts[0] for i in inputs})

            async def upload() -> str:
                async with AsyncDiracClient(diracx_preferences=prefs) as client:
                    return str(await create_sandbox(tops, client=client))

            with translated("upload an input sandbox"):
                pfn = run_async(upload())
        cache[key] = pfn
        return pfn

    def _jdl_for(
        self, spec: JobSpec, sandbox: str | None, parameters: list[str] | None = None
    ) -> JobDescription:
        group_dir = spec.group or "ungrouped"
        executable, arguments = spec.executable, spec.arguments
        if spec.image is not None:
            assert self.singularity is not None  # check() refuses images otherwise
            command = [executable] if executable else []
            executable = "/bin/sh"
            arguments = [CONTAINER_SCRIPT, self.singularity, spec.image, *command, *arguments]
        if spec.env:
            executable, arguments = "/bin/sh", [ENV_SCRIPT, executable, *arguments]
        return JobDescription(
            executable=executable,
            arguments=arguments,
            job_name=spec.name,
            job_group=spec.group,
            input_sandbox=[sandbox] if sandbox else [],
            output_sandbox=["std.out", "std.err", *spec.outputs],
            output_data=[f"LFN:{self._lfn(spec, group_dir, f)}" for f in spec.output_data],
            output_se=(spec.output_se or self.output_se) if spec.output_data else None,
            cpu_time=self.walltime_of(spec),
            site=self.sites,
            banned_sites=self.banned_sites,
            platform=self.platform,
            tags=self.tags,
            number_of_processors=spec.cores,
            max_ram_mb=spec.memory // 2**20 if spec.memory else None,
            priority=self.priority,
            parameters=parameters,
        )

    def _lfn(self, spec: JobSpec, group: str, path: str) -> str:
        """Where an output-data file goes: <output path>/<group>/<job name>/<file name>."""
        directory = spec.output_path or self.output_path
        if not directory:
            raise FatalError(
                f"job {spec.name} has output data but neither it nor facility "
                f"{self.facility_name} names an output_path"
            )
        return f"{directory.rstrip('/')}/{group}/{spec.name}/{Path(path).name}"

    def _existing(self, client: Any, names: Iterable[str]) -> dict[str, str]:
        """Job ids of jobs already submitted under these names (look before submitting)."""
        wanted = sorted(set(names))
        found: dict[str, str] = {}
        if wanted:
            for row in _search(client, ["JobID", "JobName"], "JobName", wanted):
                found.setdefault(row["JobName"], str(row["JobID"]))
        return found

    def find_jobs(self, names: Sequence[str]) -> dict[str, str]:
        """Job ids by name of the jobs already on DiracX under these names (one search)."""
        with sync_client(self._prefs(), "look for submitted jobs") as client:
            return self._existing(client, names)

    def submit(self, specs: Sequence[JobSpec]) -> list[JobRef]:
        """Submit in calls of at most 20 JDLs; names already on DiracX are not submitted again."""
        for spec in specs:
            self.check(spec)
        prefs = self._prefs()
        with sync_client(prefs, "submit jobs") as client:
            ids = self._existing(client, (s.name for s in specs))
            self._same_specs(ids, specs)
            todo = [s for s in specs if s.name not in ids]
            sandboxes: dict[str, str] = {}
            jdls = [
                self._jdl_for(s, self._upload_inputs(prefs, _sandboxed(s), sandboxes)).render()
                for s in todo
            ]
            for start in range(0, len(todo), MAX_PER_CALL):
                inserted = client.jobs.submit_jdl_jobs(jdls[start : start + MAX_PER_CALL])
                for spec, job in zip(todo[start : start + MAX_PER_CALL], inserted, strict=True):
                    ids[spec.name] = str(job.job_id)
        return self._merge(ids, [], list(specs))

    def submit_array(self, array: JobArray) -> list[JobRef]:
        """Parametric JDL, at most 20 values a call; a partly submitted array is completed."""
        specs = array.expand()
        if not self.parametric:
            return self.submit(specs)
        self.check(specs[0])
        prefs = self._prefs()
        with sync_client(prefs, "submit a parametric job") as client:
            ids = self._existing(client, (s.name for s in specs))
            self._same_specs(ids, specs)
            if ids:
                missing = [s for s in specs if s.name not in ids]
                return self._merge(ids, self.submit(missing) if missing else [], specs)
            sandbox = self._upload_inputs(prefs, _sandboxed(array.template), {})
            for start in range(0, len(array.values), MAX_PER_CALL):
                chunk = array.values[start : start + MAX_PER_CALL]
                jdl = self._jdl_for(array.template, sandbox, parameters=chunk).render()
                inserted = client.jobs.submit_jdl_jobs([jdl])
                for value, job in zip(chunk, inserted, strict=True):
                    ids[array.template.name.replace("%s", value)] = str(job.job_id)
        return self._merge(ids, [], specs)

    def _merge(self, ids: dict[str, str], new: list[JobRef], specs: list[JobSpec]) -> list[JobRef]:
        ids = {**ids, **{r.name: r.job_id for r in new}}
        refs = [JobRef(facility=self.facility_name, job_id=ids[s.name], name=s.name) for s in specs]
        self._record(refs, specs)
        return refs

    def _records(self) -> Path:
        return home() / "dirac" / self.facility_name

    def _record(self, refs: Sequence[JobRef], specs: Sequence[JobSpec]) -> None:
        """Note each job's outputs, LFNs and spec digest (DiracX 0.7 cannot return the JDL)."""
        for ref, spec in zip(refs, specs, strict=True):
            lfns = [self._lfn(spec, spec.group or "ungrouped", f) for f in spec.output_data]
            record = {"outputs": spec.outputs, "lfns": lfns, "spec": _digest(spec)}
            write_json(self._records() / f"{ref.job_id}.json", record)

    def _same_specs(self, ids: dict[str, str], specs: Sequence[JobSpec]) -> None:
        """JobRefused when a name already on DiracX was submitted from here with another spec."""
        for spec in specs:
            if spec.name not in ids:
                continue
            try:
                known = json.loads((self._records() / f"{ids[spec.name]}.json").read_text())
            except FileNotFoundError:
                continue  # submitted from another home: DiracX cannot tell us the spec
            if known.get("spec", _digest(spec)) != _digest(spec):
                raise JobRefused(
                    f"job {spec.name} was already submitted to {self.facility_name} with a "
                    "different spec; give the new job another name"
                )

    # -- monitoring ---------------------------------------------------------------------------

    def _search_ids(self, client: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        return {int(r["JobID"]): r for r in _search(client, STATUS_FIELDS, "JobID", ids)}

    def poll(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """One `jobs.search` for all refs (one more per 10,000); DIRAC statuses mapped."""
        if not refs:
            return []
        with sync_client(self._prefs(), "poll jobs") as client:
            rows = self._search_ids(client, [int(r.job_id) for r in refs if r.job_id.isdigit()])
        return [self._status(ref, rows) for ref in refs]

    def _status(self, ref: JobRef, rows: dict[int, dict[str, Any]]) -> JobStatus:
        """A job's status from its search row: state, and status; minor; application status."""
        row = rows.get(int(ref.job_id)) if ref.job_id.isdigit() else None
        if row is None:
            return self.lost(ref)
        detail = "; ".join(
            str(row.get(k) or "") for k in ("Status", "MinorStatus", "ApplicationStatus")
        )
        return JobStatus(ref=ref, state=from_dirac(row["Status"]), detail=detail)

    def logs(self, refs: Sequence[JobRef], limit: int = LOG_TAIL) -> list[JobLog]:
        """DIRAC's statuses while jobs run; std.out and std.err of the output sandbox once done.

        A sandbox is downloaded once per job, into the facility's records.
        """
        if not refs:
            return []
        prefs = self._prefs()
        found = []
        with sync_client(prefs, "read job logs") as client:
            rows = self._search_ids(client, [int(r.job_id) for r in refs if r.job_id.isdigit()])
            for ref in refs:
                status = self._status(ref, rows)
                folder = self._records() / f"{ref.job_id}.sandbox"
                known = ref.job_id.isdigit() and int(ref.job_id) in rows
                if status.state.is_final and known and not folder.exists():
                    pfns = client.jobs.get_job_sandboxes(int(ref.job_id)).get("Output") or []
                    if pfns:
                        with contextlib.suppress(UnsafeFile):
                            self._download(prefs, [str(p) for p in pfns], folder, ref)
                found.append(
                    JobLog(
                        ref=ref,
                        stdout=read_tail(folder / "std.out", limit),
                        stderr=read_tail(folder / "std.err", limit),
                        detail=status.detail,
                    )
                )
        return found

    # -- outputs, cancel, reschedule --------------------------------------------------------------

    def fetch(self, refs: Sequence[JobRef], dest: Path) -> list[JobOutputs]:
        """Download each job's output sandbox (safely extracted) and list its output data.

        A sandbox with an unsafe member (an absolute path, `..`, a link leaving its folder)
        is refused for its job alone, and nothing of it is kept; the other jobs go on.
        """
        prefs = self._prefs()
        results = []
        with sync_client(prefs, "fetch outputs") as client:
            known = self._search_ids(client, [int(r.job_id) for r in refs if r.job_id.isdigit()])
            for ref in refs:
                if not ref.job_id.isdigit() or int(ref.job_id) not in known:
                    results.append(JobOutputs(ref=ref))  # a lost job: nothing to fetch
                    continue
                target = dest / ref.name
                sandboxes = client.jobs.get_job_sandboxes(int(ref.job_id))
                try:
                    self._download(
                        prefs, [str(p) for p in sandboxes.get("Output") or []], target, ref
                    )
                except UnsafeFile as exc:
                    results.append(JobOutputs(ref=ref, refused=[str(exc)]))
                    continue
                results.append(self._outputs(ref, target))
        return results

    def _download(
        self, prefs: DiracxPreferences, pfns: Sequence[str], target: Path, ref: JobRef
    ) -> None:
        """Extract the sandboxes into a fresh folder, moved to `target` only if all were safe."""

        async def download(staging: Path) -> None:
            async with AsyncDiracClient(diracx_preferences=prefs) as client:
                for pfn in pfns:
                    await download_sandbox(pfn, staging, client=client)

        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with translated(f"download the output sandbox of job {ref.job_id}"):
                run_async(download(staging))
        except tarfile.FilterError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise UnsafeFile(
                f"output sandbox of job {ref.name} ({ref.job_id}) holds an unsafe "
                f"member {exc.tarinfo.name!r}: {exc}; nothing of it was kept"
            ) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)

    def _outputs(self, ref: JobRef, target: Path) -> JobOutputs:
        """The declared outputs among the sandbox's regular files (links refused by name)."""
        spec_outputs = self._declared(ref)
        found = scan_outputs(target, spec_outputs.get("outputs", []))
        logs = {name: target / name for name in SANDBOX_LOGS if (target / name).is_file()}
        return JobOutputs(
            ref=ref,
            files=[
                OutputFile(name=f"{ref.name}/{p}", path=target / p)
                for p in found.files
                if p not in SANDBOX_LOGS
            ],
            missing=found.missing,
            refused=found.refused,
            stdout=logs.get("std.out"),
            stderr=logs.get("std.err"),
            lfns=spec_outputs.get("lfns", []),
        )

    def _declared(self, ref: JobRef) -> dict[str, list[str]]:
        """Output patterns and LFNs recorded at submission (DiracX 0.7 cannot return the JDL)."""
        path = self._records() / f"{ref.job_id}.json"
        try:
            data: dict[str, list[str]] = json.loads(path.read_text())
        except FileNotFoundError:
            return {"outputs": ["**/*"]}
        return data

    def cancel(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Set unfinished jobs to Killed (DiracX has no kill route; this is its way)."""
        live = [s.ref for s in self.poll(refs) if not s.state.is_final]
        if live:
            now = datetime.now(UTC).isoformat()
            body = {
                r.job_id: {
                    now: JobStatusUpdate(
                        status="Killed", minor_status="Cancelled from ESAP", source="esap-prefect"
                    )
                }
                for r in live
            }
            with sync_client(self._prefs(), "kill jobs") as client:
                client.jobs.set_job_statuses(body=body)
        return self.poll(refs)

    def reschedule(self, refs: Sequence[JobRef]) -> list[JobStatus]:
        """Send failed jobs back to the queue (DiracX counts and limits reschedules).

        DiracX 0.7 moves a job straight from Failed to Received, which its own state
        machine refuses; like legacy DIRAC we pass through Rescheduled first.
        """
        now = datetime.now(UTC).isoformat()
        with sync_client(self._prefs(), "reschedule jobs") as client:
            client.jobs.set_job_statuses(
                body={
                    r.job_id: {
                        now: JobStatusUpdate(
                            status="Rescheduled",
                            minor_status="Rescheduled by esap-prefect",
                            source="esap-prefect",
                        )
                    }
                    for r in refs
                }
            )
            answer = client.jobs.reschedule_jobs(
                BodyJobsRescheduleJobs(job_ids=[int(r.job_id) for r in refs])
            )
        failed = (answer or {}).get("failed") or {}
        statuses = self.poll(refs)
        stuck = [s.ref.name for s in statuses if s.state is JobState.FAILED]
        if failed or stuck:
            raise FatalError(
                f"DiracX would not reschedule {', '.join(stuck) or sorted(failed)}: "
                f"{json.dumps(failed, default=str)[:300]}"
            )
        return statuses


def _sandboxed(spec: JobSpec) -> list[InputFile]:
    """The job's inputs, its environment as a script, and an image's container script.

    The environment script exports the variables (for an image also as APPTAINERENV_*).
    """
    inputs = list(spec.inputs)
    if spec.image is not None:
        inputs.append(InputFile(name=CONTAINER_SCRIPT, content=CONTAINER_SCRIPT_TEXT))
    if not spec.env:
        return inputs
    env = dict(spec.env)
    if spec.image is not None:
        env |= {f"APPTAINERENV_{name}": value for name, value in spec.env.items()}
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    script = "\n".join(["# esap-prefect: the job's environment", *lines, 'exec "$@"', ""])
    return [*inputs, InputFile(name=ENV_SCRIPT, content=script)]


def _digest(spec: JobSpec) -> str:
    """What identifies a spec, for telling a resubmission from a reused name."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def _search(client: Any, parameters: list[str], field: str, values: list[Any]) -> list[Any]:
    """Every row of a `jobs.search` for `field` IN `values`, MAX_PER_PAGE rows a page.

    A page past the last one is answered 416 by DiracX (when the rows fill whole pages):
    that is the end, not an error.
    """
    rows: list[Any] = []
    page = 1
    while True:
        try:
            found = client.jobs.search(
                parameters=parameters,
                search=[
                    {"parameter": field, "operator": VectorSearchOperator.IN, "values": values}
                ],
                page=page,
                per_page=MAX_PER_PAGE,
            )
        except HttpResponseError as exc:
            if page > 1 and exc.status_code == RANGE_NOT_SATISFIABLE:
                return rows
            raise
        rows += found
        if len(found) < MAX_PER_PAGE:
            return rows
        page += 1
