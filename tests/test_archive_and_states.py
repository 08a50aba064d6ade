"""The local archive (checksums, idempotency) and the one state table."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType

from blocks import LocalArchive, OutputFile
from core.checksums import digest
from core.states import (
    DIRAC_STATUS,
    PREFECT_STATE,
    PREFECT_TO_UWS,
    UWS_PHASE,
    JobState,
    UWSPhase,
    from_dirac,
)


def test_digest_matches_reference_implementations(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000
    path = tmp_path / "blob"
    path.write_bytes(data)
    got = digest(path)
    assert got.size == len(data)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.md5 == hashlib.md5(data).hexdigest()
    assert got.adler32 == f"{zlib.adler32(data):08x}"
    (tmp_path / "empty").write_bytes(b"")
    assert digest(tmp_path / "empty").adler32 == "00000001"


def test_archive_copies_with_checksums_and_is_idempotent(tmp_path: Path) -> None:
    source = tmp_path / "out.json"
    source.write_text('{"a": 1}')
    archive = LocalArchive(root=tmp_path / "results")
    files = [OutputFile(name="job-0/out.json", path=source)]
    [first] = archive.archive("hello-world/run-1", files)
    target = tmp_path / "results" / "hello-world" / "run-1" / "job-0" / "out.json"
    assert first.location == target.as_uri()
    assert target.read_text() == '{"a": 1}'
    assert first.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest() and first.size == 8
    mtime = target.stat().st_mtime_ns
    assert archive.archive("hello-world/run-1", files) == [first]
    assert target.stat().st_mtime_ns == mtime, "an identical re-archive must not rewrite"
    source.write_text('{"a": 2}')
    [second] = archive.archive("hello-world/run-1", files)
    assert second.sha256 != first.sha256 and target.read_text() == '{"a": 2}'
    assert not list(target.parent.glob("*.partial"))


@pytest.mark.parametrize("key", ["../outside", "/abs/path", ""])
def test_archive_refuses_keys_outside_its_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        LocalArchive(root=tmp_path).archive(key, [])


def test_every_dirac_status_has_a_state_and_phase() -> None:
    expected = {
        "Submitting": UWSPhase.QUEUED,
        "Received": UWSPhase.QUEUED,
        "Checking": UWSPhase.QUEUED,
        "Staging": UWSPhase.QUEUED,
        "Waiting": UWSPhase.QUEUED,
        "Matched": UWSPhase.QUEUED,
        "Rescheduled": UWSPhase.QUEUED,
        "Scouting": UWSPhase.QUEUED,
        "Running": UWSPhase.EXECUTING,
        "Completing": UWSPhase.EXECUTING,
        "Stalled": UWSPhase.EXECUTING,
        "Done": UWSPhase.COMPLETED,
        "Completed": UWSPhase.COMPLETED,
        "Failed": UWSPhase.ERROR,
        "Killed": UWSPhase.ABORTED,
        "Deleted": UWSPhase.ABORTED,
    }
    assert {s: UWS_PHASE[from_dirac(s)] for s in DIRAC_STATUS} == expected
    assert PREFECT_STATE[from_dirac("Matched")] == StateType.PENDING
    assert PREFECT_STATE[from_dirac("Killed")] == StateType.CANCELLED
    # every Prefect state type a flow run can have gives the UWS phase of its job
    assert set(PREFECT_TO_UWS) == {t.value for t in StateType}
    assert {s for s in DIRAC_STATUS if from_dirac(s).is_final} == {
        "Done",
        "Completed",
        "Failed",
        "Killed",
        "Deleted",
    }
    assert set(PREFECT_STATE) == set(UWS_PHASE) == set(JobState)
    with pytest.raises(ValueError, match="unknown DIRAC job status 'Teleported'"):
        from_dirac("Teleported")
