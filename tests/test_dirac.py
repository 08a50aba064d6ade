"""The DIRAC facility against a real DiracX 0.7 server, with the grid simulator as the grid.

Nothing is mocked: calls are counted by wrapping the real client methods.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from diracx.client._generated.operations._operations import JobsOperations
from diracx.client.sync import SyncDiracClient
from prefect import flow
from pydantic import ValidationError

from blocks import DiracFacility, InputFile, JobArray, JobRef, JobSpec, JobState, JobStatus
from blocks.dirac.jdl import JDLError, JobDescription
from core.errors import CredentialsError
from flows.pipeline import job_prefix
from tasks.jobs import final_statuses, submit_jobs, wait_for_jobs
from tests.gridsim import Fate, GridSimulator
from tests.helpers import forged_credentials, task_runs_of, wait_final
from tests.servers.diracx import DiracXServer

ECHO = (
    "import json, sys; d = json.load(open('p.json')); d['run'] = sys.argv[1]; "
    "open('out.json', 'w').write(json.dumps(d)); print('ran', sys.argv[1])"
)


class Calls(Counter[str]):
    """Counts calls to real client methods, passing every call through."""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    counted = Calls()
    for name in ("submit_jdl_jobs", "search"):
        original = getattr(JobsOperations, name)

        def spy(
            self: Any, *args: Any, __name: str = name, __original: Any = original, **kwargs: Any
        ) -> Any:
            counted[__name] += 1
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(JobsOperations, name, spy)
    from diracx.client.patches.jobs.sync import JobsOperations as Patched

    original_search = Patched.search

    def patched_search(self: Any, **kwargs: Any) -> Any:
        counted["jobs.search"] += 1
        return original_search(self, **kwargs)

    monkeypatch.setattr(Patched, "search", patched_search)
    return counted


def echo_spec(name: str, run: str = "1", **fields: Any) -> JobSpec:
    return JobSpec(
        name=name,
        group=name.rsplit("-", 1)[0],
        executable="python3",
        arguments=["echo.py", run],
        inputs=[
            InputFile(name="echo.py", content=ECHO),
            InputFile(name="p.json", content='{"who": "esap"}'),
        ],
        outputs=["out.json"],
        **fields,
    )


# -- JDL, no server -------------------------------------------------------------------------


def test_jdl_carries_the_spec_and_survives_parsing(
    grid: tuple[DiracFacility, GridSimulator],
) -> None:
    facility, _ = grid
    spec = echo_spec("jdl-1", output_data=["big.dat"], cores=4, memory="2G", walltime="2h")
    jdl = facility._jdl_for(spec, "SB:SandboxSE|/S3/x/y.tar.zst").render()
    for line in (
        'Executable = "python3"',
        'Arguments = "echo.py 1"',
        'JobName = "jdl-1"',
        'JobGroup = "jdl"',
        "CPUTime = 7200",
        "NumberOfProcessors = 4",
        "MaxRAM = 2048",
        'OutputSE = "SE-TEST"',
        '"LFN:/cta/user/e/esap/jdl/jdl-1/big.dat"',
        '"SB:SandboxSE|/S3/x/y.tar.zst"',
        '"out.json"',
    ):
        assert line in jdl, line


def test_cpu_time_defaults_to_the_facility_setting(
    grid: tuple[DiracFacility, GridSimulator],
) -> None:
    facility, _ = grid
    spec = JobSpec(name="no-limit", executable="true")
    assert "CPUTime = 3600;" in facility._jdl_for(spec, None).render()
    short = facility.model_copy(update={"default_walltime": 600})
    assert "CPUTime = 600;" in short._jdl_for(spec, None).render()


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (['x"; Site = "LCG.evil.org'], "argument 1"),
        (["it's"], "argument 1"),
        (["ok", "a; b"], "argument 2"),
        (["[nested"], "argument 1"),
        (["line\nbreak"], "argument 1"),
    ],
)
def test_hostile_arguments_are_refused(arguments: list[str], problem: str) -> None:
    with pytest.raises(JDLError, match=problem):
        JobDescription(
            executable="python3", arguments=arguments, job_name="x", cpu_time=60
        ).render()


def test_shell_metacharacters_reach_the_payload_as_plain_text() -> None:
    jdl = JobDescription(
        executable="echo", arguments=["$(id)", "`id`", "a && b", "*"], job_name="x", cpu_time=60
    ).render()
    assert "Arguments = \"'$(id)' '`id`' 'a && b' '*'\"" in jdl


@pytest.mark.parametrize(
    "fields",
    [
        {"job_name": "a b"},
        {"site": ["LCG.a b"]},
        {"executable": 'x"y'},
        {"output_sandbox": ["a;b"]},
        {"job_group": "g[1]"},
        {"job_name": "n\n"},
        {"job_group": "g\n"},
    ],
)
def test_hostile_attribute_values_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JobDescription.model_validate({"executable": "x", "job_name": "n", "cpu_time": 1, **fields})


# -- a real DiracX ------------------------------------------------------------------------------


def test_one_job_runs_and_its_outputs_come_back(
    grid: tuple[DiracFacility, GridSimulator], pilot: GridSimulator, tmp_path: Path
) -> None:
    facility, _ = grid
    refs = facility.submit([echo_spec("single-0", run="42")])
    [status] = wait_final(facility, refs, timeout=120)
    assert status.state is JobState.COMPLETED
    assert status.detail.startswith("Done; Execution Complete")
    [outputs] = facility.fetch(refs, tmp_path)
    assert [f.name for f in outputs.files] == ["single-0/out.json"]
    assert json.loads(outputs.files[0].path.read_text()) == {"who": "esap", "run": "42"}
    assert outputs.stdout is not None and outputs.stdout.read_text() == "ran 42\n"


def test_environment_travels_in_the_sandbox_never_in_the_jdl(
    grid: tuple[DiracFacility, GridSimulator], pilot: GridSimulator, tmp_path: Path
) -> None:
    facility, sim = grid
    token = secrets.token_hex(20)
    spec = JobSpec(
        name="env-0",
        executable="sh",
        arguments=["-c", "echo $ESAP_UWS_JOB_TOKEN > out.txt && echo $WHO"],
        env={"ESAP_UWS_JOB_TOKEN": token, "WHO": 'it\'s $(esap) & "co"'},
        outputs=["out.txt"],
        output_data=["big.dat"],
        output_se="CC-IN2P3-USER",
        output_path="/vo.cta.in2p3.fr/user/e/esap/",
    )
    refs = facility.submit([spec])
    jdl = sim.jdl_text(int(refs[0].job_id))
    assert token not in jdl, jdl
    assert 'Arguments = "esap-env.sh sh' in jdl
    assert 'OutputSE = "CC-IN2P3-USER"' in jdl
    assert '"LFN:/vo.cta.in2p3.fr/user/e/esap/' in jdl and "/env-0/big.dat" in jdl
    assert "LFN:/cta/user" not in jdl, "the spec's path wins over the facility's"
    [status] = wait_final(facility, refs, timeout=120)
    assert status.state is JobState.COMPLETED, status
    [outputs] = facility.fetch(refs, tmp_path)
    [found] = [f.path for f in outputs.files if f.name.endswith("out.txt")]
    assert found.read_text() == f"{token}\n", "the payload saw its environment"
    assert outputs.stdout is not None
    assert outputs.stdout.read_text() == 'it\'s $(esap) & "co"\n', "values stay plain text"
    assert token not in outputs.stdout.read_text()


def test_a_thousand_jobs_go_in_calls_of_twenty_and_are_polled_in_one(
    grid: tuple[DiracFacility, GridSimulator], calls: Calls
) -> None:
    facility, _ = grid
    specs = [JobSpec(name=f"bulk-{i:04d}", group="bulk", executable="true") for i in range(1000)]
    refs = facility.submit(specs)
    assert calls["submit_jdl_jobs"] == 50
    assert len({r.job_id for r in refs}) == 1000
    calls.clear()
    statuses = facility.poll(refs)
    assert calls["jobs.search"] == 1
    assert {s.state for s in statuses} == {JobState.PENDING}
    calls.clear()
    assert facility.submit(specs) == refs, "resubmitting must find the jobs, not add more"
    assert calls["submit_jdl_jobs"] == 0
    assert {s.state for s in facility.cancel(refs)} == {JobState.CANCELLED}


def test_parametric_jobs_expand_on_the_server(
    grid: tuple[DiracFacility, GridSimulator], pilot: GridSimulator, calls: Calls, tmp_path: Path
) -> None:
    facility, _ = grid
    template = echo_spec("param-%s", run="%s")
    array = JobArray(
        template=template.model_copy(update={"group": "param"}),
        values=[str(1000 + i) for i in range(25)],
    )
    refs = facility.submit_array(array)
    assert calls["submit_jdl_jobs"] == 2, "25 runs: one parametric JDL of 20, one of 5"
    assert [r.name for r in refs] == [f"param-{1000 + i}" for i in range(25)]
    statuses = wait_final(facility, refs, timeout=120)
    assert {s.state for s in statuses} == {JobState.COMPLETED}
    outputs = facility.fetch(refs[-2:], tmp_path)
    assert [json.loads(o.files[0].path.read_text())["run"] for o in outputs] == ["1023", "1024"]
    again = facility.submit_array(array)
    assert again == refs


def test_cancel_kills_the_jobs(grid: tuple[DiracFacility, GridSimulator]) -> None:
    facility, _ = grid
    refs = facility.submit([echo_spec(f"cancel-{i}") for i in range(3)])
    statuses = facility.cancel(refs[:2])
    assert [s.state for s in statuses] == [JobState.CANCELLED] * 2
    assert "Killed" in statuses[0].detail
    assert facility.poll(refs[2:])[0].state is JobState.PENDING


@flow
def watch(facility: DiracFacility, specs: list[JobSpec], reschedules: int = 0) -> list[JobStatus]:
    refs = submit_jobs(facility, specs)
    waited = wait_for_jobs(
        facility, refs, min_interval=0.2, max_interval=1.0, max_reschedules=reschedules,
        return_state=True,
    )  # fmt: skip
    return final_statuses(waited)


@pytest.mark.usefixtures("prefect_api")
def test_failed_jobs_are_rescheduled_up_to_the_limit(
    grid: tuple[DiracFacility, GridSimulator], pilot: GridSimulator
) -> None:
    facility, _ = grid
    attempts: Counter[str] = Counter()

    def fate(name: str) -> Fate:
        attempts[name] += 1
        if name == "resched-always":
            return "fail"
        return "fail" if attempts[name] == 1 else "run"

    pilot.fates = fate
    statuses = watch(facility, [echo_spec("resched-once"), echo_spec("resched-always")], 2)
    by_name = {s.ref.name: s for s in statuses}
    assert by_name["resched-once"].state is JobState.COMPLETED
    assert by_name["resched-once"].reschedules == 1
    assert by_name["resched-always"].state is JobState.FAILED
    assert by_name["resched-always"].reschedules == 2
    assert attempts["resched-always"] == 3


@pytest.mark.usefixtures("prefect_api")
def test_monitoring_survives_a_server_restart(
    grid: tuple[DiracFacility, GridSimulator], diracx_server: DiracXServer
) -> None:
    facility, sim = grid
    sim.fates = lambda _name: "hold"
    refs = facility.submit([echo_spec(f"restart-{i}") for i in range(3)])
    sim.run_once()
    result: dict[str, Any] = {}

    def run_flow() -> None:
        @flow
        def watch_refs() -> list[JobStatus]:
            return wait_for_jobs(facility, refs, min_interval=0.2, max_interval=1.0)

        result["statuses"] = watch_refs()

    watcher = threading.Thread(target=run_flow)
    watcher.start()
    time.sleep(2)
    diracx_server.stop_app()
    time.sleep(3)
    diracx_server.start()
    sim.fates = lambda _name: "run"
    with SyncDiracClient(diracx_preferences=sim.prefs) as client:
        for ref in refs:
            sim.finish(client, int(ref.job_id), ref.name, "run")
    watcher.join(timeout=120)
    assert not watcher.is_alive()
    assert [s.state for s in result["statuses"]] == [JobState.COMPLETED] * 3


def test_stalled_and_lost_jobs(grid: tuple[DiracFacility, GridSimulator]) -> None:
    facility, sim = grid
    sim.fates = lambda name: "stall" if name.endswith("stall") else "lose"
    refs = facility.submit([echo_spec("fate-stall"), echo_spec("fate-lose")])
    sim.run_once()
    stalled, lost = facility.poll(refs)
    assert stalled.state is JobState.RUNNING and stalled.detail.startswith("Stalled")
    assert lost.state is JobState.RUNNING
    sim.fail_lost(["fate-lose"])
    assert facility.poll(refs[1:])[0].state is JobState.FAILED
    sim.fates = lambda _name: "run"


def test_refused_credentials_give_one_clear_error(
    grid: tuple[DiracFacility, GridSimulator], tmp_path: Path
) -> None:
    facility, _ = grid
    bad = forged_credentials(facility, tmp_path)
    with pytest.raises(
        CredentialsError, match="DiracX refused the credentials while trying to submit jobs"
    ):
        bad.submit([echo_spec("forged-0")])
    with pytest.raises(CredentialsError, match="does not exist"):
        facility.model_copy(update={"credentials_path": tmp_path / "none.json"}).submit([])


@flow
def submit_with(facility: DiracFacility) -> list[JobRef]:
    return submit_jobs(facility, [echo_spec("forged-1")])


@pytest.mark.usefixtures("prefect_api")
def test_refused_credentials_are_not_retried(
    grid: tuple[DiracFacility, GridSimulator], tmp_path: Path
) -> None:
    facility, _ = grid
    state = submit_with(forged_credentials(facility, tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(CredentialsError, match="log in again"):
        state.result()
    runs = task_runs_of(state.state_details.flow_run_id)
    assert [r.run_count for r in runs] == [1], "refused credentials must not be retried"


def test_an_output_sandbox_escaping_its_folder_is_refused(
    grid: tuple[DiracFacility, GridSimulator], tmp_path: Path
) -> None:
    facility, sim = grid
    [ref] = facility.submit([echo_spec("evil-0")])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        member = tarfile.TarInfo("../../escaped.txt")
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))
    sim.return_sandbox(int(ref.job_id), buffer.getvalue())
    [outputs] = facility.fetch([ref], tmp_path / "dest")
    assert outputs.files == [] and len(outputs.refused) == 1
    assert "unsafe member '../../escaped.txt'" in outputs.refused[0]
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "dest").iterdir()) == [], "nothing of a refused sandbox is kept"
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_name_cannot_be_reused_across_flows_by_accident(
    grid: tuple[DiracFacility, GridSimulator],
) -> None:
    facility, _ = grid
    assert job_prefix("x").startswith("x-")
    first = facility.submit([echo_spec("reuse-0")])
    assert facility.submit([echo_spec("reuse-0")]) == first


def test_searches_that_fill_whole_pages_end_at_diracx_416(
    grid: tuple[DiracFacility, GridSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 jobs (a page exactly) once failed: the empty page after it is answered 416."""
    facility, _ = grid
    monkeypatch.setattr("blocks.dirac.facility.MAX_PER_PAGE", 2)
    specs = [echo_spec(f"pages-{i}") for i in range(4)]
    refs = facility.submit(specs)
    assert [s.state for s in facility.poll(refs)] == [JobState.PENDING] * 4
    assert facility.find_jobs([s.name for s in specs]) == {r.name: r.job_id for r in refs}
    assert facility.submit(specs) == refs, "looked up across both full pages: none again"
