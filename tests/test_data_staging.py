"""Inputs in whole workflows: hello world reads staged Rucio and VO data; the data-staging flow."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from prefect.exceptions import ParameterTypeError

from blocks import LocalFacility
from blocks.rucio import RucioStore
from core.errors import FatalError
from flows.data_staging import data_staging
from flows.hello_world import hello_world
from tests.helpers import latest_artifact
from tests.servers.rucio import RucioServer
from tests.servers.vo import VoService

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def lake(rucio_store: RucioStore) -> str:
    rucio_store.save("lake", overwrite=True)
    return "lake"


@pytest.fixture
def near_site_b() -> Iterator[str]:
    """A second local facility, declared close to SITE_B."""
    LocalFacility(close_rse="SITE_B").save("near-b", overwrite=True)
    try:
        yield "near-b"
    finally:
        LocalFacility.delete("near-b")


def test_hello_world_downloads_rucio_and_vo_inputs_when_the_facility_has_no_close_rse(
    lake: str, rucio_server: RucioServer, vo: VoService
) -> None:
    data = {"hw1/a.dat": b"alpha\n", "hw1/b.dat": b"beta\n"}
    rucio_server.seed_dataset("hw1", data, "ESAP_ARCHIVE")
    spectrum = vo.file("hw/spectrum.fits", b"SPECTRUM" * 10)
    result = hello_world(
        inputs=["esap:hw1", {"archive": "astron_vo", "record": {"access_url": spectrum}}],
        facility="local",
    )
    seen = {i["name"]: i for i in result.output["inputs"]}
    assert seen["esap:hw1/a.dat"]["adler32"] == format(zlib.adler32(b"alpha\n"), "08x")
    assert seen["esap:hw1/b.dat"]["bytes"] == 5
    assert seen["inputs/vo/2/spectrum.fits"]["bytes"] == 80
    assert "esap:hw1/a.dat" in latest_artifact("hello-world-staged-inputs")


def test_the_planner_picks_the_facility_near_the_data_and_jobs_read_pfns_there(
    lake: str, rucio_server: RucioServer, near_site_b: str
) -> None:
    rucio_server.seed_dataset("near1", {"near1/x.dat": b"close by\n"}, "SITE_B")
    result = hello_world(inputs=["esap:near1"])
    assert result.facility == near_site_b
    [seen] = result.output["inputs"]
    assert seen == {
        "name": "esap:near1/x.dat",
        "bytes": 9,
        "adler32": format(zlib.adler32(b"close by\n"), "08x"),
    }
    table = latest_artifact("hello-world-staged-inputs")
    assert "SITE_B" in table and "file://" in table


def test_data_staging_brings_a_dataset_next_to_a_facility_and_reports_it(
    lake: str, rucio_server: RucioServer, near_site_b: str, vo: VoService, tmp_path: Path
) -> None:
    files = {f"ds-flow/f{i}.dat": f"flow {i}\n".encode() for i in range(5)}
    rucio_server.seed_dataset("ds-flow", files, "ESAP_ARCHIVE")
    links = vo.datalink("flow-links.xml", [("#this", vo.file("flow/img.fits", b"IMG"), None)])
    with rucio_server.conveyor():
        result = data_staging(
            inputs=["esap:ds-flow", {"archive": "vo_reg", "record": {"datalink": links}}],
            target=near_site_b,
            lifetime="2d",
            download_to=str(tmp_path / "copy"),
            timeout=120,
        )
    assert result.rse == "SITE_B" and len(result.files) == 5
    assert [r.reused for r in result.rules] == [False]
    for item in result.files:
        assert item.pfn is not None
        assert Path(urlparse(item.pfn).path).read_bytes() == files[item.did[5:]]
        assert item.path is not None and item.path.read_bytes() == files[item.did[5:]]
    assert [v.name for v in result.vo] == ["vo/2/img.fits"]
    assert result.total_bytes == sum(map(len, files.values())) + 3
    report = latest_artifact("staging-report")
    assert "esap:ds-flow/f4.dat" in report and "img.fits" in report
    assert "SITE_B" in latest_artifact("staging-plan")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"target": "local"}, "facility 'local' declares no close RSE"),
        ({"target": "NO_SUCH_RSE"}, "Rucio has no such RSE"),
        (
            {"inputs": [{"archive": "ivoa", "record": {"access_url": "http://x/y"}}]},
            "VO basket items can only be downloaded: set download_to",
        ),
    ],
)
def test_data_staging_refuses_bad_requests_clearly(
    lake: str, kwargs: dict[str, Any], error: str
) -> None:
    arguments: dict[str, Any] = {"inputs": ["esap:whatever"], "target": "SITE_B", **kwargs}
    with pytest.raises(FatalError, match=error):
        data_staging(**arguments)


@pytest.mark.parametrize(
    ("inputs", "error"),
    [([], "at least 1 item"), (["esap:*"], "contains a wildcard")],
)
def test_inputs_no_run_could_use_are_refused_with_the_parameters(
    inputs: list[str | dict[str, Any]], error: str
) -> None:
    with pytest.raises(ParameterTypeError, match=error):
        data_staging(inputs=inputs, target="SITE_B")
