"""The facility contract (FacilityBlock's docstring), the same cases on every facility.

Local processes, a real Docker Engine, real Apptainer, DIRAC on a real DiracX with the grid
simulator as its pilots, and Kubernetes on the stand-in API server (its pods on real
Docker). Where a backend cannot honour a case, the contract says so
and the case checks what the backend does instead.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from diracx.client.sync import SyncDiracClient
from diracx.core.models import ScalarSearchOperator

from blocks import (
    ApptainerFacility,
    DiracFacility,
    DockerFacility,
    KubernetesFacility,
    LocalFacility,
)
from blocks.facility import FacilityBlock
from core.backoff import wait_until
from core.errors import JobRefused
from core.jobs import JobOutputs, JobRef, JobSpec
from core.states import JobState
from tests.gridsim import GridSimulator
from tests.helpers import settle, wait_final, wait_running
from tests.servers.containers import DockerEngine
from tests.servers.kubelet import StandInCluster

IMAGE = "esap-test/payload:1"
SECRET = "the-local-users-bearer-token-0123456789"


@dataclass
class Subject:
    """A facility under test, and how a shell script runs on it."""

    kind: str
    facility: FacilityBlock
    image: str | None = None
    sim: GridSimulator | None = None
    names: list[str] = field(default_factory=list)

    def name(self, case: str) -> str:
        name = f"{case}-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def spec(
        self, name: str, script: str, outputs: Sequence[str] = (), **fields: object
    ) -> JobSpec:
        # no single quote: DIRAC arguments cannot carry one
        assert "'" not in script
        program = (
            {"image": self.image, "executable": "sh"} if self.image else {"executable": "/bin/sh"}
        )
        return JobSpec.model_validate(
            {
                "name": name,
                **program,
                "arguments": ["-c", script],
                "outputs": list(outputs),
                **fields,
            }
        )

    def wrong_kind(self, name: str) -> JobSpec:
        """A job of the kind this facility does not run."""
        if self.image:
            return JobSpec(name=name, executable="/bin/true")
        return JobSpec(name=name, image=IMAGE, executable="true")

    def with_limits(self, **limits: int) -> FacilityBlock:
        return self.facility.model_copy(update=limits)

    @property
    def reports_exit_codes(self) -> bool:
        # DIRAC reports statuses, not exit codes (the simulator puts it in the minor status)
        return self.kind != "dirac"

    def stderr(self, outputs: JobOutputs) -> str:
        """What a job wrote to stderr, as the facility gives it back.

        Kubernetes' pod log API gives both streams as one: stderr lands in stdout there.
        """
        stream = outputs.stdout if self.kind == "kubernetes" else outputs.stderr
        assert stream is not None
        return stream.read_text()


@pytest.fixture(params=["local", "docker", "apptainer", "dirac", "kubernetes"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    kind = request.param
    if kind == "local":
        yield Subject(kind, LocalFacility(workdir=tmp_path / "jobs", max_cores=2, kill_grace=1))
    elif kind == "docker":
        engine: DockerEngine = request.getfixturevalue("docker_engine")
        yield Subject(
            kind, DockerFacility(base_url=engine.url, workdir=tmp_path / "jobs", max_cores=2), IMAGE
        )
    elif kind == "apptainer":
        singularity: Path = request.getfixturevalue("singularity")
        sif: Path = request.getfixturevalue("sif_image")
        yield Subject(
            kind,
            ApptainerFacility(
                singularity=str(singularity), max_cores=2, workdir=tmp_path / "jobs", kill_grace=1
            ),
            str(sif),
        )
    elif kind == "kubernetes":
        kube: StandInCluster = request.getfixturevalue("kube")
        facility = KubernetesFacility(api_url=kube.url, host_path=tmp_path / "jobs", max_cores=2)
        yield Subject(kind, facility, IMAGE)
    else:
        grid: tuple[DiracFacility, GridSimulator] = request.getfixturevalue("grid")
        pilot: GridSimulator = request.getfixturevalue("pilot")
        subject = Subject(kind, grid[0], sim=pilot)
        pilot.fates = lambda name: "hold" if name.startswith("held-") else "run"
        yield subject


def test_a_job_runs_and_its_outputs_and_logs_come_back(subject: Subject, tmp_path: Path) -> None:
    name = subject.name("runs")
    script = "echo result > result.txt && echo to-stdout && echo to-stderr >&2"
    refs = subject.facility.submit([subject.spec(name, script, ["result.txt"])])
    assert [r.name for r in refs] == [name]
    [status] = settle(subject.facility, refs, 120)
    assert status.state is JobState.COMPLETED, status
    if subject.reports_exit_codes:
        assert status.exit_code == 0
    [outputs] = subject.facility.fetch(refs, tmp_path / "out")
    assert [(f.name, f.path.read_text()) for f in outputs.files] == [
        (f"{name}/result.txt", "result\n")
    ]
    assert outputs.stdout is not None and "to-stdout" in outputs.stdout.read_text()
    assert "to-stderr" in subject.stderr(outputs)
    assert outputs.missing == [] and outputs.refused == []


def test_a_failing_job_is_failed_with_its_exit_code(subject: Subject, tmp_path: Path) -> None:
    refs = subject.facility.submit([subject.spec(subject.name("fails"), "echo why >&2 && exit 3")])
    [status] = settle(subject.facility, refs, 120)
    assert status.state is JobState.FAILED, status
    if subject.reports_exit_codes:
        assert (status.exit_code, status.detail) == (3, "exit code 3")
    else:
        assert "exit 3" in status.detail
    [outputs] = subject.facility.fetch(refs, tmp_path / "out")
    assert "why" in subject.stderr(outputs)


def test_resubmitting_a_name_gives_the_same_job_back(subject: Subject) -> None:
    name = subject.name("again")
    spec = subject.spec(name, "echo again >> ran.txt", ["ran.txt"])
    first = subject.facility.submit([spec])
    settle(subject.facility, first, 120)
    assert subject.facility.submit([spec]) == first
    [status] = settle(subject.facility, first, 120)
    assert status.state is JobState.COMPLETED


def test_a_reused_name_with_another_spec_is_refused_before_anything_is_submitted(
    subject: Subject,
) -> None:
    reused, fresh = subject.name("reused"), subject.name("fresh")
    subject.facility.submit([subject.spec(reused, "true")])
    with pytest.raises(JobRefused, match=f"job {reused} was already submitted"):
        subject.facility.submit([subject.spec(fresh, "true"), subject.spec(reused, "false")])
    assert _is_lost(subject, fresh), "nothing of a refused batch is submitted"


def _is_lost(subject: Subject, name: str) -> bool:
    """Whether no job of this name was ever submitted to the facility."""
    if subject.sim is None:
        ref = JobRef(facility=subject.facility.facility_name, job_id=name, name=name)
        [status] = subject.facility.poll([ref])
        return status.state is JobState.FAILED and status.detail.startswith("lost:")
    with SyncDiracClient(diracx_preferences=subject.sim.owner_prefs) as client:
        rows = client.jobs.search(
            parameters=["JobID"],
            search=[
                {"parameter": "JobName", "operator": ScalarSearchOperator.EQUAL, "value": name}
            ],
        )
    return not rows


@pytest.mark.parametrize(
    ("limits", "fields", "named"),
    [
        ({"max_cores": 2}, {"cores": 3}, "asks for 3 cores; facility"),
        ({"max_memory": 2**30}, {"memory": "2G"}, "asks for 2G of memory; facility"),
        ({"max_duration": 3600}, {"walltime": "2h"}, "asks for 7200s wall time; facility"),
    ],
)
def test_a_job_over_the_limits_is_refused_naming_the_limit(
    subject: Subject, limits: dict[str, int], fields: dict[str, object], named: str
) -> None:
    small = subject.with_limits(**limits)
    good, big = subject.name("fits"), subject.name("too-big")
    with pytest.raises(JobRefused, match=named):
        small.submit([subject.spec(good, "true"), subject.spec(big, "true", (), **fields)])
    assert _is_lost(subject, good) and _is_lost(subject, big)
    with pytest.raises(JobRefused, match=r"runs (containers|programs)"):
        subject.facility.submit([subject.wrong_kind(subject.name("kind"))])


def test_an_unknown_ref_is_lost_and_stalls_nothing(subject: Subject, tmp_path: Path) -> None:
    refs = subject.facility.submit([subject.spec(subject.name("known"), "true")])
    unknown = JobRef(facility=subject.facility.facility_name, job_id="999999999", name="nobody")
    lost, known = subject.facility.poll([unknown, *refs])
    assert lost.state is JobState.FAILED and lost.detail.startswith("lost:")
    assert known.ref == refs[0]
    assert subject.facility.fetch([unknown], tmp_path / "out") == [JobOutputs(ref=unknown)]
    assert subject.facility.cancel([unknown])[0].detail.startswith("lost:")


def test_cancel_ends_a_running_job_and_leaves_a_finished_one(subject: Subject) -> None:
    done = subject.facility.submit([subject.spec(subject.name("done"), "true")])
    [finished] = settle(subject.facility, done, 120)
    held = subject.facility.submit([subject.spec(subject.name("held"), "sleep 60")])
    wait_running(subject.facility, held[0], 120)
    cancelled, untouched = subject.facility.cancel([*held, *done])
    assert cancelled.state is JobState.CANCELLED, cancelled
    assert untouched == finished


def test_wall_time_is_enforced_without_polling(subject: Subject) -> None:
    refs = subject.facility.submit(
        [subject.spec(subject.name("held-slow"), "sleep 60", walltime=2)]
    )
    if subject.sim is not None:
        # DIRAC enforces wall time on the worker node: the job's CPUTime says how long
        jdl = subject.sim._jdl(int(refs[0].job_id))
        assert jdl.getAttributeInt("CPUTime") == 2
        subject.facility.cancel(refs)
        return
    time.sleep(6)  # nobody polls meanwhile
    [status] = subject.facility.poll(refs)
    assert status.state is JobState.FAILED and status.detail == "wall time of 2s exceeded"


def _attack(home: Path) -> str:
    return (
        f"ln -s {home}/token leak && mkdir d && ln -s {home} d/home && ln -s / root"
        " && mkfifo pipe && echo fine > fine.txt"
    )


def _tarball(members: Sequence[tuple[str, bytes | str]]) -> bytes:
    """A tar.bz2: (name, bytes) are files, (name, "-> target") symbolic links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for name, body in members:
            member = tarfile.TarInfo(name)
            if isinstance(body, str):
                member.type, member.linkname = tarfile.SYMTYPE, body.removeprefix("-> ")
                tar.addfile(member)
            else:
                member.size = len(body)
                tar.addfile(member, io.BytesIO(body))
    return buffer.getvalue()


def test_only_regular_files_inside_the_job_folder_come_back(
    subject: Subject, tmp_path: Path
) -> None:
    home = tmp_path / "victim-home"
    home.mkdir()
    (home / "token").write_text(SECRET)
    (home / "stack.json").write_text(SECRET)
    outputs = ["leak", "d/home/stack.json", "pipe", "fine.txt", "**/*.json"]
    name = subject.name("hostile")
    if subject.sim is None:
        refs = subject.facility.submit([subject.spec(name, _attack(home), outputs)])
        refused = {
            "leak: a symbolic link",
            "d/home: a symbolic link",
            "root: a symbolic link",
            "pipe: not a regular file",
        }
    else:
        # what a pilot packs, links as links: links inside pass tar's filter, the scan
        # refuses them; a link to the host refuses the whole sandbox
        subject.sim.fates = lambda _name: "hold"
        refs = subject.facility.submit([subject.spec(name, "true", outputs)])
        # held by its pilot first: a kill racing the pilot's own status updates could lose
        wait_running(subject.facility, refs[0], 60)
        subject.sim.return_sandbox(
            int(refs[0].job_id),
            _tarball([("fine.txt", b"fine\n"), ("leak", "-> fine.txt"), ("d/home", "-> ..")]),
        )
        subject.facility.cancel(refs)
        refused = {"leak: a symbolic link", "d/home: a symbolic link"}
    wait_final(subject.facility, refs, 120)
    [found] = subject.facility.fetch(refs, tmp_path / "out")
    assert [f.name for f in found.files] == [f"{name}/fine.txt"]
    assert set(found.refused) == refused, found.refused
    for path in (tmp_path / "out").rglob("*"):
        assert path.is_symlink() or not path.is_file() or SECRET not in path.read_text()


def test_logs_show_a_job_as_it_runs_and_stay_after_it_ends(subject: Subject) -> None:
    script = "echo started $GREETING && echo warned >&2 && sleep 4 && echo finished"
    refs = subject.facility.submit(
        [subject.spec(subject.name("logs"), script, env={"GREETING": "with its environment"})]
    )
    if subject.sim is None:  # DIRAC shows statuses while a job runs, its logs once done
        [running] = wait_until(
            lambda: subject.facility.logs(refs), lambda s: "started" in s[0].stdout, 60
        )
        assert "started with its environment" in running.stdout
        assert "finished" not in running.stdout
    [status] = settle(subject.facility, refs, 120)
    assert status.state is JobState.COMPLETED, status
    [ended] = subject.facility.logs(refs)
    assert ended.ref == refs[0]
    assert "started with its environment" in ended.stdout and "finished" in ended.stdout
    assert "warned" in (ended.stdout if subject.kind == "kubernetes" else ended.stderr)
    if subject.sim is not None:
        assert ended.detail.startswith("Done; Execution Complete")
    assert subject.facility.logs(refs, limit=9)[0].stdout == "finished\n", "the end is kept"
    unknown = JobRef(facility=subject.facility.facility_name, job_id="999999998", name="nobody")
    [lost] = subject.facility.logs([unknown])
    assert (lost.stdout, lost.stderr) == ("", "")
