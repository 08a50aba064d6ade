"""ESAP's side of the gateway without a stack: pages, settings, workflow-file fields, tails.

What ESAP sends is checked at the boundary; each hostile value here is one a user could post.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request

from core.files import read_tail
from core.jobs import LfnDirectory, StorageElement
from core.params import ParameterError
from gateway.errors import NotFound
from gateway.pages import MAX_PAGE_SIZE, page_of, paged_items
from gateway.settings import GatewaySettings
from gateway.workflows import job_parameters, run_tags


def _request(query: str) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/esap-api/uws/jobs/", "headers": [],
             "query_string": query.encode(), "server": ("127.0.0.1", 80)}  # fmt: skip
    return Request(scope)


@pytest.mark.parametrize(
    ("query", "count", "number", "size"),
    [
        ("", 0, 1, 50),
        ("", 120, 1, 50),
        ("page=3", 120, 3, 50),
        ("page=last&page_size=7", 120, 18, 7),
        ("page_size=100000", 10_000, 1, MAX_PAGE_SIZE),
        ("page_size=0", 10, 1, 50),
        ("page_size=-4", 10, 1, 50),
        ("page_size=%EF%BC%93", 10, 1, 50),  # a full-width digit is not a size
    ],
)
def test_pages_are_read_as_drf_reads_them(query: str, count: int, number: int, size: int) -> None:
    page = page_of(_request(query), count)
    assert (page.number, page.size, page.count) == (number, size, count)


@pytest.mark.parametrize("page", ["0", "4", "-1", "1.0", "x", "%D9%A3", "9" * 12, ""])
def test_a_page_that_does_not_exist_is_not_found(page: str) -> None:
    with pytest.raises(NotFound, match=r"Invalid page\."):
        page_of(_request(f"page={page}&page_size=50"), 150)


def test_paged_items_link_pages_and_keep_other_query_fields() -> None:
    items = list(range(12))
    body = paged_items(_request("keyword=x&page=2&page_size=5"), "https://esap.org", items,
                       "Things", lambda i: {"n": i})  # fmt: skip
    assert [r["n"] for r in body["results"]] == [5, 6, 7, 8, 9]
    assert (body["count"], body["pages"], body["requested_page"]) == (12, 3, 2)
    links = body["links"]
    assert links["next"] == "https://esap.org/esap-api/uws/jobs/?keyword=x&page_size=5&page=3"
    assert links["previous"] == "https://esap.org/esap-api/uws/jobs/?keyword=x&page_size=5"


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("ESAP_GATEWAY_ESAP_PREFIX", "/uws", "not one of the gateway's own trees"),
        ("ESAP_GATEWAY_ESAP_PREFIX", "/a b", "must be a path"),
        ("ESAP_GATEWAY_ESAP_PREFIX", "/../x", "must be a path"),
        ("ESAP_GATEWAY_CORS_ORIGINS", "*", "no '*'"),
        ("ESAP_GATEWAY_CORS_ORIGINS", "https://ok.org,https://x.org/path", "x.org/path"),
        ("ESAP_GATEWAY_CORS_ORIGINS", "javascript:alert(1)", "is not an origin"),
    ],
)
def test_settings_refuse_a_wrong_prefix_or_origin(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=said.replace("*", r"\*")):
        GatewaySettings()


def test_settings_read_the_prefix_and_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ESAP_GATEWAY_")]:
        monkeypatch.delenv(key)
    default = GatewaySettings()
    assert (default.esap_prefix, default.cors_origins) == ("/esap-api", ())
    assert default.uws_app_url == f"{default.base_url}/esap-api/uws"
    monkeypatch.setenv("ESAP_GATEWAY_ESAP_PREFIX", "esap/api/")
    monkeypatch.setenv("ESAP_GATEWAY_CORS_ORIGINS", "https://esap.org, http://localhost:3000/")
    monkeypatch.setenv("ESAP_GATEWAY_CALLBACK_URL", "https://gw.example.org/esap/api/uws/")
    chosen = GatewaySettings()
    assert chosen.esap_prefix == "/esap/api"
    assert chosen.cors_origins == ("https://esap.org", "http://localhost:3000")
    assert chosen.uws_app_url == "https://gw.example.org/esap/api/uws"
    monkeypatch.setenv("ESAP_GATEWAY_ESAP_PREFIX", "")
    assert GatewaySettings().esap_prefix == ""


def test_workflow_file_fields_map_where_the_flow_has_a_meaning_for_them() -> None:
    given = {"workflow": "run-container", "singularity_image": "/images/payload.sif",
             "cputime": "2h", "job_name": "corsika", "group_name": "prod-7",
             "output_file_name": "out.tar", "dirac_SE": "CC-IN2P3-USER"}  # fmt: skip
    chosen = job_parameters(given)
    assert chosen.workflow.name == "run-container"
    assert chosen.parameters["image"] == "/images/payload.sif"
    assert chosen.parameters["runtime"] == "singularity"
    assert chosen.parameters["walltime"] == "2h"
    assert "output_se" not in chosen.parameters, "run-container has no DIRAC output SE"
    assert not {"output_file_name", "job_name", "dirac_SE"} & set(chosen.parameters)
    assert run_tags(given) == ["job:corsika", "group:prod-7"]
    # the flow's own name wins over the ESAP field that maps to it
    both = job_parameters({**given, "image": "esap/payload:2", "runtime": "docker"})
    assert (both.parameters["image"], both.parameters["runtime"]) == ("esap/payload:2", "docker")
    hello = job_parameters({"type": "batch.submit", "dirac_SE": "CC-IN2P3-USER",
                            "dirac_path": "/vo.cta.in2p3.fr/user/e/esap/"})  # fmt: skip
    assert hello.parameters["output_se"] == "CC-IN2P3-USER"
    assert hello.parameters["output_path"] == "/vo.cta.in2p3.fr/user/e/esap/"
    # ESAP's CONCORDIA workflow file: its image is used as it is, cputime has no meaning
    concordia = job_parameters({"workflow": "CONCORDIA", "singularity_image": "corsika:7.7",
                                "cputime": "500", "runs": "3"})  # fmt: skip
    assert concordia.workflow.name == "concordia"
    assert concordia.parameters == {"image": "corsika:7.7", "runs": 3}
    with pytest.raises(ParameterError, match="energy range upside down"):
        job_parameters({"workflow": "CONCORDIA", "energy_range": "[1000, 10]"})


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("cputime", "forever", "parameter cputime (the workflow's walltime)"),
        ("cputime", "NaN", "parameter cputime (the workflow's walltime)"),
        ("cputime", "1e400", "parameter cputime (the workflow's walltime)"),
        ("dirac_SE", "SE;rm -rf", "parameter dirac_SE (the workflow's output_se)"),
        ("dirac_path", "relative/dir", "parameter dirac_path (the workflow's output_path)"),
        ("dirac_path", "/vo/../../etc", "parameter dirac_path (the workflow's output_path)"),
        ("group_name", "g\x07", "parameter group_name"),
        ("job_name", "j" * 129, "parameter job_name"),
        ("dirac_site", "LCG.CERN.cern", "dirac_site"),
    ],
)
def test_a_wrong_workflow_file_value_names_its_field(field: str, value: str, said: str) -> None:
    with pytest.raises(ParameterError) as raised:
        job_parameters({"workflow": "hello-world", field: value})
    assert said in str(raised.value)


@pytest.mark.parametrize("value", ["", "a" * 65, "CC IN2P3", "SE\n", "../SE"])
def test_storage_element_names_are_checked(value: str) -> None:
    with pytest.raises(ValidationError, match="storage element"):
        TypeAdapter(StorageElement).validate_python(value)


@pytest.mark.parametrize(
    "value", ["relative", "/a/../b", "/a/./b", "/a b", "/a;b", "/" + "x" * 600, "/a\x00"]
)
def test_lfn_directories_are_checked(value: str) -> None:
    with pytest.raises(ValidationError, match="LFN directory"):
        TypeAdapter(LfnDirectory).validate_python(value)


def test_log_tails_keep_the_end_and_never_follow_links_or_block(tmp_path: Path) -> None:
    log = tmp_path / "std.out"
    log.write_text("".join(f"line {n}\n" for n in range(1000)))
    assert read_tail(log, 1 << 20).count("\n") == 1000
    tail = read_tail(log, 30)
    assert tail.startswith("line 99") and tail.endswith("line 999\n") and len(tail) <= 30
    (tmp_path / "secret").write_text("do not show\n")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    assert read_tail(tmp_path / "link", 100) == ""
    os.mkfifo(tmp_path / "fifo")
    assert read_tail(tmp_path / "fifo", 100) == "", "a FIFO is not read (nor waited on)"
    assert read_tail(tmp_path / "missing", 100) == ""
    (tmp_path / "binary").write_bytes(b"\xff\xfe ok\n")
    assert read_tail(tmp_path / "binary", 100).endswith(" ok\n")
