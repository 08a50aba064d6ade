"""The Rucio store against a real Rucio 41 server: archive, checksums, rules, idempotency."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks import OutputFile, RucioStore
from core.errors import CredentialsError, FatalError
from flows.cta_mc_production import cta_mc_production
from flows.hello_world import hello_world
from tests.servers.rucio import RucioServer


@pytest.fixture
def store(rucio_store: RucioStore) -> RucioStore:
    return rucio_store


def outputs(tmp_path: Path, **contents: str) -> list[OutputFile]:
    files = []
    for name, text in contents.items():
        path = tmp_path / name
        path.write_text(text)
        files.append(OutputFile(name=f"job-0/{name}", path=path))
    return files


def raw_listing(server: RucioServer, dataset: str) -> str:
    return server.python(
        f"""
        from rucio.client import Client
        c = Client()
        for f in c.list_files("esap", {dataset!r}):
            md5 = c.get_metadata("esap", f["name"])["md5"]
            print(f["name"], f["bytes"], f["adler32"], md5)
        for r in c.list_did_rules("esap", {dataset!r}):
            print("rule", r["rse_expression"], r["state"], r["expires_at"] is not None)
        for rep in c.list_replicas([{{"scope": "esap", "name": n["name"]}}
                                    for n in c.list_files("esap", {dataset!r})]):
            print("replica", rep["name"], sorted(rep["rses"]))
    """,
        client=True,
    )


def test_outputs_are_uploaded_with_checksums_into_a_dataset_with_a_rule(
    store: RucioStore, rucio_server: RucioServer, tmp_path: Path
) -> None:
    files = outputs(tmp_path, **{"out.json": '{"a": 1}', "log.txt": "done\n"})
    archived = store.archive("hello-world/run-a", files)
    assert [a.location for a in archived] == [
        "rucio:esap:hello-world/run-a/job-0/out.json",
        "rucio:esap:hello-world/run-a/job-0/log.txt",
    ]
    listing = raw_listing(rucio_server, "hello-world.run-a")
    data = b'{"a": 1}'
    assert (
        f"hello-world/run-a/job-0/out.json 8 {zlib.adler32(data):08x} "
        f"{hashlib.md5(data).hexdigest()}"
    ) in listing
    assert "rule ESAP_ARCHIVE OK True" in listing, listing
    assert "replica hello-world/run-a/job-0/log.txt ['ESAP_ARCHIVE']" in listing
    assert archived[0].adler32 == f"{zlib.adler32(data):08x}"
    assert store.existing("hello-world/run-a") == ["job-0/log.txt", "job-0/out.json"]
    assert store.existing("hello-world/never") == []


def test_archiving_again_uploads_nothing_and_adds_no_rule(
    store: RucioStore, rucio_server: RucioServer, tmp_path: Path
) -> None:
    files = outputs(tmp_path, **{"a.dat": "1"})
    first = store.archive("retry/run-b", files)
    more = outputs(tmp_path, **{"b.dat": "2"})
    second = store.archive("retry/run-b", files + more)
    assert second[0] == first[0]
    listing = raw_listing(rucio_server, "retry.run-b")
    assert listing.count("rule ESAP_ARCHIVE") == 1
    assert "retry/run-b/job-0/b.dat 1" in listing
    (tmp_path / "a.dat").write_text("changed")
    with pytest.raises(FatalError, match="already archived with other content"):
        store.archive("retry/run-b", files)


def test_wrong_password_is_a_credentials_error(store: RucioStore, tmp_path: Path) -> None:
    bad = store.model_copy(update={"password": SecretStr("wrong")})
    with pytest.raises(CredentialsError, match="Rucio refused the credentials"):
        bad.archive("x/run-c", outputs(tmp_path, **{"a.dat": "1"}))
    assert "RUCIO_CONFIG" not in os.environ or "secrets" not in os.environ["RUCIO_CONFIG"]


@pytest.mark.usefixtures("prefect_api")
def test_hello_world_archives_to_rucio_when_asked(
    store: RucioStore, rucio_server: RucioServer
) -> None:
    store.save("lake", overwrite=True)
    result = hello_world(Parameter2=5, store="lake")
    assert result.store == "lake"
    [archived] = result.archived
    assert archived.location.startswith("rucio:esap:hello-world/")
    listing = raw_listing(rucio_server, f"hello-world.{result.flow_run_id}")
    assert "rule ESAP_ARCHIVE OK True" in listing, listing


@pytest.mark.usefixtures("prefect_api")
def test_cta_production_skips_runs_already_in_rucio(store: RucioStore) -> None:
    store.save("lake", overwrite=True)
    first = cta_mc_production(runs=2, first_run=700, showers_per_run=3, store="lake")
    assert first.simulated == [700, 701] and first.store == "lake"
    assert any(a.location.startswith("rucio:esap:cta-mc-production/") for a in first.archived)
    again = cta_mc_production(runs=3, first_run=700, showers_per_run=3, store="lake")
    assert again.already_archived == [700, 701] and again.simulated == [702]
