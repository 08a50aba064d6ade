"""The local facility with real processes: outputs, logs, wall time, cancel, queueing, take-over."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from blocks import InputFile, JobRef, JobSpec, JobState, LocalFacility
from blocks.local_runner import meta_dir
from core.backoff import wait_until
from tests.helpers import wait_final


@pytest.fixture
def facility(tmp_path: Path) -> LocalFacility:
    return LocalFacility(workdir=tmp_path / "jobs", max_cores=2, kill_grace=1)


def py(name: str, code: str, **fields: object) -> JobSpec:
    body = {
        "name": name,
        "executable": sys.executable,
        "arguments": ["-c", textwrap.dedent(code)],
        **fields,
    }
    return JobSpec.model_validate(body)


def jobs(facility: LocalFacility) -> Path:
    assert facility.workdir is not None
    return facility.workdir


def test_job_runs_with_inputs_and_returns_outputs_and_logs(
    facility: LocalFacility, tmp_path: Path
) -> None:
    source = tmp_path / "data.txt"
    source.write_text("from a file")
    spec = py(
        "echo",
        """
        import pathlib
        text = pathlib.Path("in/params.txt").read_text() + "+" + open("data.txt").read()
        pathlib.Path("out").mkdir()
        pathlib.Path("out/result.txt").write_text(text)
        print("to stdout"); import sys; print("to stderr", file=sys.stderr)
    """,
        inputs=[
            InputFile(name="in/params.txt", content="inline"),
            InputFile(name="data.txt", source=source),
        ],
        outputs=["out/*.txt", "never-made.dat"],
    )
    refs = facility.submit([spec])
    [status] = wait_final(facility, refs)
    assert status.state is JobState.COMPLETED and status.exit_code == 0
    [outputs] = facility.fetch(refs, tmp_path / "fetched")
    assert [f.name for f in outputs.files] == ["echo/out/result.txt"]
    assert outputs.files[0].path.read_text() == "inline+from a file"
    assert outputs.files[0].path.is_relative_to(tmp_path / "fetched" / "echo")
    assert outputs.missing == ["never-made.dat"]
    assert outputs.stdout is not None and outputs.stdout.read_text() == "to stdout\n"
    assert outputs.stderr is not None and outputs.stderr.read_text() == "to stderr\n"


def test_non_zero_exit_is_a_failure_with_its_code(facility: LocalFacility) -> None:
    refs = facility.submit([py("fails", "raise SystemExit(3)")])
    [status] = wait_final(facility, refs)
    assert (status.state, status.exit_code, status.detail) == (JobState.FAILED, 3, "exit code 3")


def test_missing_executable_fails_cleanly(facility: LocalFacility) -> None:
    refs = facility.submit([JobSpec(name="nope", executable="no-such-program-esap")])
    [status] = wait_final(facility, refs)
    assert status.state is JobState.FAILED and status.exit_code == 127


def _grandchild_pid(directory: Path) -> int:
    pid_file = directory / "grandchild.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(pid_file.read_text())


SPAWNS_GRANDCHILD = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open("grandchild.pid", "w").write(str(child.pid))
    time.sleep(120)
"""


def _gone(pid: int, timeout: float = 10) -> bool:
    """True once the process has ended (a zombie awaiting its reaper counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_wall_time_kills_the_whole_process_group(facility: LocalFacility) -> None:
    refs = facility.submit([py("slow", SPAWNS_GRANDCHILD, walltime=2)])
    grandchild = _grandchild_pid(jobs(facility) / "slow")
    started = time.monotonic()
    [status] = wait_final(facility, refs)
    assert status.state is JobState.FAILED
    assert status.detail == "wall time of 2s exceeded"
    assert time.monotonic() - started < 10
    assert _gone(grandchild)


def test_jobs_without_a_wall_time_get_the_facility_default(tmp_path: Path) -> None:
    facility = LocalFacility(workdir=tmp_path / "jobs", default_walltime=1, kill_grace=1)
    refs = facility.submit([py("default-limit", "import time; time.sleep(60)")])
    [status] = wait_final(facility, refs, timeout=20)
    assert status.detail == "wall time of 1s exceeded"


def test_cancel_kills_the_whole_process_group(facility: LocalFacility) -> None:
    refs = facility.submit([py("victim", SPAWNS_GRANDCHILD)])
    grandchild = _grandchild_pid(jobs(facility) / "victim")
    [status] = facility.cancel(refs)
    assert status.state is JobState.CANCELLED
    assert _gone(grandchild)
    assert facility.poll(refs)[0].state is JobState.CANCELLED


def test_term_ignoring_job_is_killed_after_the_grace(facility: LocalFacility) -> None:
    refs = facility.submit(
        [
            py(
                "stubborn",
                """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open("ready", "w").close()
        time.sleep(120)
    """,
            )
        ]
    )
    ready = jobs(facility) / "stubborn" / "ready"
    while not ready.exists():
        time.sleep(0.05)
    pid = json.loads((meta_dir(ready.parent) / "pid").read_text())["pid"]
    facility.cancel(refs)
    assert _gone(pid, timeout=facility.kill_grace + 5)


def test_queued_jobs_respect_the_core_slots(tmp_path: Path) -> None:
    facility = LocalFacility(workdir=tmp_path / "jobs", max_cores=1)
    code = """
        import time, pathlib
        pathlib.Path("start").write_text(repr(time.time())); time.sleep(0.3)
        pathlib.Path("end").write_text(repr(time.time()))
    """
    refs = facility.submit([py(f"slot-{i}", code) for i in range(3)])
    assert facility.poll(refs)[2].state is JobState.PENDING
    assert [s.state for s in wait_final(facility, refs)] == [JobState.COMPLETED] * 3
    spans = sorted(
        (
            float((jobs(facility) / r.name / "start").read_text()),
            float((jobs(facility) / r.name / "end").read_text()),
        )
        for r in refs
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two jobs ran at once on one core"


def test_cancel_of_a_queued_job_never_starts_it(tmp_path: Path) -> None:
    facility = LocalFacility(workdir=tmp_path / "jobs", max_cores=1)
    refs = facility.submit(
        [py("blocker", "import time; time.sleep(1)"), py("queued", "open('ran', 'w').close()")]
    )
    assert facility.cancel(refs[1:])[0].state is JobState.CANCELLED
    wait_final(facility, refs)
    assert not (tmp_path / "jobs" / "queued" / "ran").exists()


def test_resubmitting_a_name_does_not_run_it_twice(facility: LocalFacility) -> None:
    spec = py("once", "open('count', 'a').write('x')")
    first = facility.submit([spec])
    wait_final(facility, first)
    assert facility.submit([spec]) == first
    wait_final(facility, first)
    assert (jobs(facility) / "once" / "count").read_text() == "x"
    with pytest.raises(ValueError, match=r"already submitted .* with a different spec"):
        facility.submit([py("once", "print('something else')")])


def test_a_new_process_takes_over_jobs_of_a_dead_one(tmp_path: Path) -> None:
    """A flow process dies after submitting; the next one finds the jobs and their ends."""
    workdir = tmp_path / "jobs"
    script = f"""
        from blocks import LocalFacility, JobSpec
        import sys
        f = LocalFacility(workdir={str(workdir)!r}, max_cores=2)
        f.submit([
            JobSpec(name="quick", executable=sys.executable, arguments=["-c", "print(1)"]),
            JobSpec(name="later", executable=sys.executable,
                    arguments=["-c", "import time; time.sleep(1.5)"]),
            JobSpec(name="bad", executable=sys.executable, arguments=["-c", "raise SystemExit(4)"]),
        ])
        import time; time.sleep(0.5)
        import os; os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=60)
    facility = LocalFacility(workdir=workdir, max_cores=2)
    refs = [JobRef(facility="local", job_id=n, name=n) for n in ("quick", "later", "bad")]
    statuses = wait_final(facility, refs)
    assert [(s.state, s.exit_code) for s in statuses] == [
        (JobState.COMPLETED, 0),
        (JobState.COMPLETED, 0),
        (JobState.FAILED, 4),
    ]


def test_a_cancel_from_another_process_stands_while_the_submitter_lives(tmp_path: Path) -> None:
    """A worker cancels the jobs of a flow process that still supervises them: CANCELLED."""
    workdir = tmp_path / "jobs"
    facility = LocalFacility(workdir=workdir, kill_grace=1)
    [ref] = facility.submit([py("held", "import time; time.sleep(60)")])
    wait_until(lambda: facility.poll([ref])[0].state, lambda s: s is JobState.RUNNING, 30)
    script = f"""
        from blocks import LocalFacility, JobRef
        f = LocalFacility(workdir={str(workdir)!r}, kill_grace=1)
        print(f.cancel([JobRef(facility="local", job_id="held", name="held")])[0].state.value)
    """
    said = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert said.stdout.split() == ["CANCELLED"]
    [status] = wait_final(facility, [ref])
    assert status.state is JobState.CANCELLED, "the submitter's reaper kept the cancel"


def test_unknown_job_is_lost(facility: LocalFacility) -> None:
    [status] = facility.poll([JobRef(facility="local", job_id="ghost", name="ghost")])
    assert status.state is JobState.FAILED
    assert status.detail == "lost: facility local does not know job ghost"


def test_jobs_get_a_minimal_environment(
    facility: LocalFacility, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_KEY", "must-not-leak")
    spec = py(
        "env",
        "import os, json; json.dump(dict(os.environ), open('env.json', 'w'))",
        env={"MY_SETTING": "on"},
        outputs=["env.json"],
    )
    refs = facility.submit([spec])
    wait_final(facility, refs)
    env = (jobs(facility) / "env" / "env.json").read_text()
    assert "must-not-leak" not in env
    assert '"MY_SETTING": "on"' in env and '"ESAP_JOB_NAME": "env"' in env


def test_requests_beyond_the_facility_are_refused(facility: LocalFacility) -> None:
    with pytest.raises(ValueError, match="asks for 64 cores; facility local has 2"):
        facility.submit([py("big", "pass", cores=64)])
    with pytest.raises(ValueError, match="wall time"):
        facility.submit([py("long", "pass", walltime="30d")])
    assert not (jobs(facility) / "big").exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "../escape"}, "job name"),
        ({"name": "a b"}, "job name"),
        ({"outputs": ["/etc/passwd"]}, "relative path"),
        ({"outputs": ["../../x"]}, "relative path"),
        ({"inputs": [{"name": "../x", "content": "y"}]}, "relative path"),
        ({"inputs": [{"name": "x"}]}, "exactly one of content or source"),
        ({"env": {"BAD NAME": "x"}}, "environment variable name"),
        ({"walltime": "forever"}, "not a duration"),
    ],
)
def test_hostile_job_specs_are_refused(fields: dict[str, object], message: str) -> None:
    body = {"name": "ok", "executable": "true", **fields}
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(body)
