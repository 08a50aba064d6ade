"""Stage-in from a real Rucio 41 server: rules, Rucio's own conveyor, PFNs and downloads."""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pydantic import SecretStr

from blocks.rucio import RucioStore, StageProgress, StagingError
from core.backoff import wait_until
from core.errors import CredentialsError, FatalError, TransientError
from tests.servers.rucio import RucioServer


def seed(
    server: RucioServer, dataset: str, count: int, rse: str = "ESAP_ARCHIVE"
) -> dict[str, bytes]:
    files = {f"{dataset}/f{i:03d}.dat": f"{dataset} file {i}\n".encode() for i in range(count)}
    server.seed_dataset(dataset, files, rse)
    return files


def rules_of(server: RucioServer, dataset: str) -> list[str]:
    out = server.python(
        f"""
        from rucio.client import Client
        for r in Client().list_did_rules("esap", {dataset!r}):
            print(r["rse_expression"], r["state"])
        """,
        client=True,
    )
    return sorted(out.split("\n")[:-1])


def test_a_dataset_of_100_files_is_replicated_and_handed_over_as_pfns(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    files = seed(rucio_server, "stage100", 100)
    seen: list[StageProgress] = []
    with rucio_server.conveyor():
        staged = rucio_store.stage_in(
            ["esap:stage100"], "SITE_B", timeout=120, poll_interval=0.5, progress=seen.append
        )
    assert staged.rse == "SITE_B" and len(staged.files) == 100
    assert [r.reused for r in staged.rules] == [False]
    assert seen[0].total == 100 and seen[-1].ok == 100 and seen[-1].replicating == 0
    for item in staged.files:
        data = files[item.did.removeprefix("esap:")]
        assert item.rse == "SITE_B" and item.size == len(data)
        assert item.adler32 == f"{zlib.adler32(data):08x}"
        assert item.pfn is not None and "rse-site-b" in item.pfn
        assert Path(urlparse(item.pfn).path).read_bytes() == data
    assert rules_of(rucio_server, "stage100") == ["SITE_B OK"]

    again = rucio_store.stage_in(["stage100"], "SITE_B", timeout=5)
    assert [r.reused for r in again.rules] == [True]
    assert again.rules[0].rule_id == staged.rules[0].rule_id
    assert rules_of(rucio_server, "stage100") == ["SITE_B OK"]


def test_download_mode_puts_verified_copies_in_the_directory(
    rucio_store: RucioStore, rucio_server: RucioServer, tmp_path: Path
) -> None:
    files = seed(rucio_server, "stagedl", 3)
    staged = rucio_store.stage_in(
        ["esap:stagedl"], "ESAP_ARCHIVE", timeout=10, download_to=tmp_path / "in"
    )
    for item in staged.files:
        assert item.path is not None and item.path.is_relative_to(tmp_path / "in")
        data = files[item.did.removeprefix("esap:")]
        assert item.path.read_bytes() == data
        assert item.md5 == hashlib.md5(data).hexdigest()
    again = rucio_store.stage_in(["esap:stagedl"], "ESAP_ARCHIVE", download_to=tmp_path / "in")
    assert [f.path for f in again.files] == [f.path for f in staged.files]


def test_a_rule_that_never_becomes_ok_times_out_and_a_later_stage_reuses_it(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    seed(rucio_server, "stageslow", 4)
    with pytest.raises(StagingError, match=r"did not finish within 1\.5 s \(0 of 4") as caught:
        rucio_store.stage_in(["esap:stageslow"], "SITE_B", timeout=1.5, poll_interval=0.5)
    assert sorted(caught.value.files) == [f"esap:stageslow/f{i:03d}.dat" for i in range(4)]
    assert rules_of(rucio_server, "stageslow") == ["SITE_B REPLICATING"]
    with rucio_server.conveyor():
        staged = rucio_store.stage_in(["esap:stageslow"], "SITE_B", timeout=60, poll_interval=0.5)
    assert [r.reused for r in staged.rules] == [True] and len(staged.files) == 4
    assert rules_of(rucio_server, "stageslow") == ["SITE_B OK"]


def test_staging_waits_out_a_rucio_outage_and_carries_on(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    seed(rucio_server, "stageaway", 3)
    seen: list[StageProgress] = []
    warned: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        staging = pool.submit(
            rucio_store.stage_in, ["esap:stageaway"], "SITE_B", timeout=240, poll_interval=0.5,
            outage_limit=120, progress=seen.append, warn=warned.append,
        )  # fmt: skip
        wait_until(lambda: len(seen), bool, 60)  # its rule made, and waited on
        rucio_server.stop()
        away = time.monotonic()
        wait_until(lambda: len(warned), bool, 30)
        time.sleep(3)
        rucio_server.start()
        back = time.monotonic()
        with rucio_server.conveyor():
            staged = staging.result(timeout=180)
    assert len(staged.files) == 3 and [r.reused for r in staged.rules] == [False]
    assert warned[0].startswith("Rucio cannot be reached (for ")
    assert warned[0].endswith("staging to SITE_B waits")
    assert rules_of(rucio_server, "stageaway") == ["SITE_B OK"], "one rule, still the first"
    print(f"\nRucio away {back - away:.1f} s; staging waited and finished, {len(warned)} warnings")


def test_a_rucio_outage_past_the_limit_is_a_transient_error_and_the_rule_stays(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    seed(rucio_server, "stagegone", 2)
    seen: list[StageProgress] = []
    with ThreadPoolExecutor(1) as pool:
        staging = pool.submit(
            rucio_store.stage_in, ["esap:stagegone"], "SITE_B", timeout=240, poll_interval=0.5,
            outage_limit=2, progress=seen.append,
        )  # fmt: skip
        wait_until(lambda: len(seen), bool, 60)
        rucio_server.stop()
        try:
            with pytest.raises(TransientError) as caught:
                staging.result(timeout=120)
        finally:
            rucio_server.start()
    assert re.fullmatch(
        r"Rucio could not be reached for \d+ s while waiting for staging to SITE_B \(limit 2 s\); "
        r"the rules stay, so staging again picks them up",
        str(caught.value),
    ), caught.value
    assert rules_of(rucio_server, "stagegone") == ["SITE_B REPLICATING"]


def test_a_missing_replica_makes_the_rule_stuck_and_is_named(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    seed(rucio_server, "stagelost", 3)
    [lost] = [p for p in rucio_server.root.rglob("stagelost/f001.dat") if p.is_file()]
    lost.unlink()
    with rucio_server.conveyor(), pytest.raises(StagingError) as caught:
        rucio_store.stage_in(["esap:stagelost"], "SITE_B", timeout=120, poll_interval=0.5)
    assert caught.value.files == ["esap:stagelost/f001.dat"]
    assert "cannot reach SITE_B (rule STUCK: TRANSFER source file does not exist)" in str(
        caught.value
    )


def test_containers_and_single_files_resolve_to_their_files(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    seed(rucio_server, "part1", 2)
    seed(rucio_server, "part2", 2)
    rucio_server.python(
        """
        from rucio.client import Client
        c = Client()
        c.add_container("esap", "whole")
        c.attach_dids("esap", "whole", [{"scope": "esap", "name": "part1"},
                                        {"scope": "esap", "name": "part2"}])
        """,
        client=True,
    )
    staged = rucio_store.stage_in(["esap:whole", "esap:part1/f000.dat"], "ESAP_ARCHIVE", timeout=10)
    assert [f.did for f in staged.files] == [
        "esap:part1/f000.dat",
        "esap:part1/f001.dat",
        "esap:part2/f000.dat",
        "esap:part2/f001.dat",
    ]


@pytest.fixture(scope="module")
def known(rucio_server: RucioServer) -> str:
    seed(rucio_server, "refusals", 1)
    return "esap:refusals"


@pytest.mark.parametrize(
    ("dids", "error"),
    [
        (["{known}", "esap:refus*"], "'esap:refus\\*' contains a wildcard"),
        (
            ["{known}", "esap:nothing-here", "nor-here"],
            "no such data identifier: esap:nothing-here, esap:nor-here$",
        ),
        (["{known}", "bad scope:x"], "'bad scope:x' is not a data identifier"),
        ([], "no data identifiers given"),
    ],
)
def test_bad_identifiers_are_refused_before_any_rule(
    rucio_store: RucioStore, rucio_server: RucioServer, known: str, dids: list[str], error: str
) -> None:
    with pytest.raises(FatalError, match=error):
        rucio_store.stage_in([d.format(known=known) for d in dids], "SITE_B", timeout=1)
    assert rules_of(rucio_server, "refusals") == []


def test_a_bearer_token_is_used_and_a_refused_one_fails_at_once(
    rucio_store: RucioStore, rucio_server: RucioServer
) -> None:
    seed(rucio_server, "stagetoken", 1)
    token = rucio_server.python(
        "from rucio.client import Client; print(Client().auth_token)", client=True
    ).strip()
    with_token = RucioStore(
        rucio_host=rucio_server.url,
        account="root",
        auth_type="token",
        token=SecretStr(token),
        archive_rse="ESAP_ARCHIVE",
    )
    staged = with_token.stage_in(["esap:stagetoken"], "ESAP_ARCHIVE", timeout=10)
    assert len(staged.files) == 1
    refused = with_token.model_copy(update={"token": SecretStr("not-a-token")})
    with pytest.raises(CredentialsError, match="bearer token was refused") as caught:
        refused.stage_in(["esap:stagetoken"], "ESAP_ARCHIVE", timeout=10)
    assert "not-a-token" not in str(caught.value)


def test_with_no_host_the_standard_rucio_config_is_used(
    rucio_server: RucioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(rucio_server, "stagecfg", 2)
    monkeypatch.setenv("RUCIO_CONFIG", str(rucio_server.client_config(tmp_path / "rucio.cfg")))
    plain = RucioStore(archive_rse="ESAP_ARCHIVE")
    assert plain.locations(["esap:stagecfg"]) == ["ESAP_ARCHIVE"]
    fetched = plain.fetch(["esap:stagecfg"], tmp_path / "got")
    assert [f.path for f in fetched.files] == [
        tmp_path / "got" / "esap" / "stagecfg" / "f000.dat",
        tmp_path / "got" / "esap" / "stagecfg" / "f001.dat",
    ]
    assert fetched.rules == []
    assert rules_of(rucio_server, "stagecfg") == []
