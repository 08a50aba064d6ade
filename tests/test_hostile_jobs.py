"""Jobs that attack the host through what they leave in their folders.

Links, FIFOs, hard links and forged records are refused by name: nothing is followed, opened
or written outside a job's folder. The case every facility must pass is in the contract
suite (tests/test_facility_contract.py); these are the rest.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect import flow

from blocks import ApptainerFacility, DockerFacility, JobSpec, JobState, LocalFacility
from blocks.facility import FacilityBlock
from blocks.local_runner import meta_dir
from core.errors import FatalError
from core.job_folder import UnsafeFile, glob_match, place, scan_outputs
from flows.pipeline import PipelineResult, execute, job_prefix
from planner.models import PlanResponse, TaskRequest, TaskType
from tests.helpers import settle
from tests.servers.containers import DockerEngine

SECRET = "the-local-users-bearer-token-0123456789"
IMAGE = "esap-test/payload:1"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """What a hostile job would like to read: the local user's token and stack file."""
    home = tmp_path / "victim-home"
    home.mkdir()
    (home / "token").write_text(SECRET)
    (home / "stack.json").write_text(f'{{"token": "{SECRET}"}}')
    return home


Runner = Callable[[str, str, list[str]], JobSpec]


def on_host(name: str, script: str, outputs: list[str]) -> JobSpec:
    return JobSpec(name=name, executable="/bin/sh", arguments=["-c", script], outputs=outputs)


def in_image(image: str) -> Runner:
    def spec(name: str, script: str, outputs: list[str]) -> JobSpec:
        return JobSpec(
            name=name, image=image, executable="sh", arguments=["-c", script], outputs=outputs
        )

    return spec


@pytest.fixture(params=["local", "docker", "apptainer"])
def facility(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FacilityBlock, Runner]:
    """A facility whose jobs run in a folder on this host, and how to run a script there."""
    kind = request.param
    if kind == "local":
        return LocalFacility(workdir=tmp_path / "jobs", max_cores=2), on_host
    if kind == "docker":
        engine: DockerEngine = request.getfixturevalue("docker_engine")
        return DockerFacility(base_url=engine.url, workdir=tmp_path / "jobs"), in_image(IMAGE)
    singularity: Path = request.getfixturevalue("singularity")
    sif: Path = request.getfixturevalue("sif_image")
    return (
        ApptainerFacility(singularity=str(singularity), workdir=tmp_path / "jobs", kill_grace=1),
        in_image(str(sif)),
    )


def test_a_job_cannot_forge_its_own_outcome(
    facility: tuple[FacilityBlock, Runner], home: Path
) -> None:
    chosen, spec = facility
    forged = (
        "mkdir -p .esap ../.esap/forged && "
        'echo \'{"state": "COMPLETED", "exit_code": 0, "reason": "", "started": 0, '
        '"finished": 0}\' | tee .esap/result.json > ../.esap/forged/result.json; exit 3'
    )
    refs = chosen.submit([spec("forged-1", forged, [])])
    [status] = settle(chosen, refs)
    assert status.state is JobState.FAILED and status.exit_code == 3, status


def test_a_hard_link_to_a_host_file_is_refused(home: Path, tmp_path: Path) -> None:
    local = LocalFacility(workdir=tmp_path / "jobs")
    refs = local.submit([on_host("hard-1", f"ln {home}/token copy", ["copy"])])
    assert settle(local, refs)[0].state is JobState.COMPLETED
    [outputs] = local.fetch(refs, tmp_path / "collected")
    assert outputs.files == []
    assert outputs.refused == ["copy: a hard link (2 names)"]
    assert not (tmp_path / "collected" / "hard-1" / "copy").exists()


def test_collecting_twice_takes_the_same_files_again(tmp_path: Path) -> None:
    local = LocalFacility(workdir=tmp_path / "jobs")
    refs = local.submit([on_host("twice-1", "echo a > a.txt", ["a.txt"])])
    settle(local, refs)
    first = local.fetch(refs, tmp_path / "collected")
    assert local.fetch(refs, tmp_path / "collected") == first
    assert first[0].files[0].path.read_text() == "a\n"


@flow
def two_jobs(home: str) -> PipelineResult:
    def specs(_: PlanResponse) -> list[JobSpec]:
        prefix = job_prefix("hostile")
        return [
            on_host(f"{prefix}-0", f"ln -s {home}/token out.txt", ["out.txt"]),
            on_host(f"{prefix}-1", "echo honest > out.txt", ["out.txt"]),
        ]

    request = TaskRequest(tasktype=TaskType.EXECUTABLE, taskinfo={"executable": "sh"})
    return execute("hostile", request, specs, None, None)


@pytest.mark.usefixtures("prefect_api")
def test_refused_outputs_fail_their_job_and_the_others_are_archived(home: Path) -> None:
    result = two_jobs(str(home))
    [failure] = result.failures
    assert failure.startswith("hostile-") and "-0: outputs refused" in failure
    assert "out.txt: a symbolic link" in failure
    assert [a.name.rsplit("-", 1)[-1] for a in result.archived] == ["1/out.txt"]
    assert all(
        SECRET not in Path(a.location[len("file://") :]).read_text() for a in result.archived
    )


def test_the_folder_scan_never_follows_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    (folder / "sub" / "deep").mkdir(parents=True)
    (folder / "a.json").write_text("{}")
    (folder / "sub" / "deep" / "b.json").write_text("{}")
    (folder / ".hidden.json").write_text("{}")
    (folder / "everything").symlink_to("/")
    (folder / "loop").symlink_to(folder)
    os.mkfifo(folder / "pipe.json")
    os.mknod(folder / "null.json", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (folder / "bad\x1bname.json").write_text("{}")
    found = scan_outputs(folder, ["**/*.json", "*.txt"])
    assert found.files == ["a.json", "sub/deep/b.json"]
    assert set(found.refused) == {
        "everything: a symbolic link",
        "loop: a symbolic link",
        "pipe.json: not a regular file",
        "null.json: not a regular file",
        "bad\ufffdname.json: a name with control characters",
    }
    assert found.missing == ["*.txt"]
    with pytest.raises(UnsafeFile, match="everything: a symbolic link"):
        place(folder, "everything/etc/passwd", tmp_path / "out")
    with pytest.raises(UnsafeFile, match=r"pipe\.json: not a regular file"):
        place(folder, "pipe.json", tmp_path / "out")
    with pytest.raises(UnsafeFile, match="not a relative path"):
        place(folder, "../job/a.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_glob_patterns_keep_their_shell_meaning() -> None:
    assert glob_match("out/a.txt", "out/*")
    assert not glob_match("out/a/b.txt", "out/*")
    assert glob_match("out/a/b.txt", "out/**/*.txt") and glob_match("out/b.txt", "out/**/*.txt")
    assert not glob_match(".secret", "*") and glob_match(".secret", ".*")
    assert glob_match("d/home", "d/home/stack.json", below=True)
    assert not glob_match("e", "d/home/stack.json", below=True)
    # many stars cost little: the match is memoised
    assert not glob_match("/".join(["a"] * 60), "/".join(["**"] * 60) + "/b")


def test_a_folder_of_too_many_entries_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.job_folder as job_folder

    monkeypatch.setattr(job_folder, "MAX_ENTRIES", 50)
    folder = tmp_path / "job"
    folder.mkdir()
    for i in range(60):
        (folder / f"{i}.dat").write_text("x")
    with pytest.raises(FatalError, match="more than 50 entries"):
        scan_outputs(folder, ["*.dat"])


def test_the_facility_records_live_outside_the_job_folder(tmp_path: Path) -> None:
    local = LocalFacility(workdir=tmp_path / "jobs")
    refs = local.submit([on_host("records-1", "ls -a", [])])
    settle(local, refs)
    folder = tmp_path / "jobs" / "records-1"
    assert sorted(p.name for p in folder.iterdir()) == []
    assert (meta_dir(folder) / "result.json").exists()
    assert (meta_dir(folder) / "stdout").read_text().split() == [".", ".."]
