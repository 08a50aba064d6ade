"""Table-driven tests of the Execution Planner core, including the seed's two examples."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner.matching import match
from planner.models import Capabilities, TaskRequest, TaskType

GIB = 1024**3

LAPTOP = Capabilities(
    facility="laptop",
    kind="local",
    tasktypes=frozenset({TaskType.EXECUTABLE}),
    maxcores=2,
    maxmemory="8G",
    maxduration="1h",
    servicetype="uri://local",
)
DOCKER_HOST = Capabilities(
    facility="docker-host",
    kind="docker",
    tasktypes=frozenset({TaskType.DOCKER}),
    maxcores=16,
    maxmemory="64G",
    maxduration="2d",
    servicetype="uri://docker-uws",
)
SMALL_DOCKER = Capabilities(
    facility="small-docker",
    kind="docker",
    tasktypes=frozenset({TaskType.DOCKER}),
    maxcores=8,
    maxmemory="16G",
    maxduration="1h",
    servicetype="uri://docker-uws",
)
K8S = Capabilities(
    facility="k8s",
    kind="kubernetes",
    tasktypes=frozenset({TaskType.HELM, TaskType.DOCKER}),
    maxcores=512,
    maxmemory="2T",
    maxduration="7d",
    servicetype="uri://k8s",
    preference=200,
)
ALL = [LAPTOP, DOCKER_HOST, SMALL_DOCKER, K8S]

SEED_DOCKER = {
    "tasktype": "uri://docker-container",
    "taskinfo": {"image": "docker.io/example:1.0"},
    "resources": {
        "mincores": 8,
        "maxcores": 8,
        "minmemory": "8G",
        "maxmemory": "8G",
        "minduration": "10m",
        "maxduration": "10m",
    },
}
SEED_HELM = {
    "tasktype": "uri://kubernetes-helm",
    "taskinfo": {"chart": "cta/simtel"},
    "resources": {"mincores": 220, "minmemory": "360G", "minduration": "9h"},
}


@pytest.mark.parametrize(
    ("request_body", "facilities", "word", "order"),
    [
        (SEED_DOCKER, ALL, "YES", ["docker-host", "small-docker", "k8s"]),
        (SEED_DOCKER, [LAPTOP], "NO", []),
        (SEED_HELM, ALL, "YES", ["k8s"]),
        (SEED_HELM, [LAPTOP, DOCKER_HOST], "NO", []),
        (
            {"tasktype": "uri://executable", "taskinfo": {"executable": "python3"}},
            ALL,
            "YES",
            ["laptop"],
        ),
        (
            {
                "tasktype": "uri://docker-container",
                "taskinfo": {"image": "x"},
                "resources": {"mincores": 4, "minduration": "2h"},
            },
            ALL,
            "YES",
            ["docker-host", "k8s"],
        ),
        (
            {"tasktype": "uri://jupyter-notebook", "taskinfo": {"notebook": "a.ipynb"}},
            ALL,
            "NO",
            [],
        ),
        (SEED_DOCKER, [], "NO", []),
    ],
)
def test_match_table(
    request_body: dict[str, object], facilities: list[Capabilities], word: str, order: list[str]
) -> None:
    answer = match(TaskRequest.model_validate(request_body), facilities)
    assert answer.reponseword == word
    assert [o.serviceinfo.facility for o in answer.offers] == order
    refused = {f.facility for f in facilities} - set(order)
    assert set(answer.reasons) == (refused or ({"*"} if not facilities else set()))
    if word == "YES":
        assert answer.servicetype == answer.offers[0].servicetype
        assert answer.serviceinfo == answer.offers[0].serviceinfo
        assert answer.resources == answer.offers[0].resources


def test_seed_docker_offer_stays_inside_request_and_facility() -> None:
    answer = match(TaskRequest.model_validate(SEED_DOCKER), ALL)
    got = answer.offers[0].resources
    assert (got.mincores, got.maxcores) == (8, 8)
    assert (got.minmemory, got.maxmemory) == (8 * GIB, 8 * GIB)
    assert (got.minduration, got.maxduration) == (600, 600)
    assert answer.model_dump(mode="json")["resources"]["maxmemory"] == "8G"


def test_open_maximum_is_filled_by_the_facility_limit() -> None:
    answer = match(TaskRequest.model_validate(SEED_HELM), ALL)
    got = answer.offers[0].resources
    assert got.maxcores == 512 and got.maxmemory == 2 * 1024**4 and got.maxduration == 7 * 86400
    assert got.mincores == 220 and got.minmemory == 360 * GIB and got.minduration == 9 * 3600


def test_seed_helm_refusals_say_why() -> None:
    answer = match(TaskRequest.model_validate(SEED_HELM), [LAPTOP, DOCKER_HOST, SMALL_DOCKER])
    assert answer.reponseword == "NO"
    assert answer.reasons["laptop"] == (
        "does not run uri://kubernetes-helm (runs uri://executable)"
    )
    assert "does not run uri://kubernetes-helm" in answer.reasons["docker-host"]
    big = K8S.model_copy(update={"facility": "small-k8s", "maxcores": 100})
    answer = match(TaskRequest.model_validate(SEED_HELM), [big])
    assert answer.reasons == {"small-k8s": "needs at least 220 cores, offers at most 100"}
    low_mem = K8S.model_copy(update={"facility": "low-mem", "maxmemory": 100 * GIB})
    assert match(TaskRequest.model_validate(SEED_HELM), [low_mem]).reasons == {
        "low-mem": "needs at least 360G memory, offers at most 100G"
    }
    short = K8S.model_copy(update={"facility": "short", "maxduration": 3600})
    assert match(TaskRequest.model_validate(SEED_HELM), [short]).reasons == {
        "short": "needs at least 9h, offers at most 1h"
    }


def test_matching_is_deterministic_whatever_the_input_order() -> None:
    request = TaskRequest.model_validate(SEED_DOCKER)
    twin = DOCKER_HOST.model_copy(update={"facility": "another-host"})
    first = match(request, [*ALL, twin])
    second = match(request, [twin, *reversed(ALL)])
    assert first == second
    assert [o.serviceinfo.facility for o in first.offers][:2] == ["another-host", "docker-host"]


def test_a_facility_close_to_the_data_is_preferred_and_told_where_to_stage() -> None:
    near = K8S.model_copy(update={"closerse": "CTAO_DESY"})
    far = DOCKER_HOST.model_copy(update={"closerse": "CERN_EOS"})
    request = TaskRequest.model_validate(SEED_DOCKER)
    assert match(request, [near, far]).offers[0].serviceinfo.facility == "docker-host"
    with_data = request.model_copy(update={"datalocations": ("CTAO_DESY", "PIC_DISK")})
    answer = match(with_data, [near, far])
    assert [o.serviceinfo.facility for o in answer.offers] == ["k8s", "docker-host"]
    assert answer.serviceinfo == answer.offers[0].serviceinfo
    assert answer.offers[0].serviceinfo.closerse == "CTAO_DESY"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tasktype": "uri://docker-container", "taskinfo": {}}, "taskinfo.image"),
        (
            {"tasktype": "uri://docker-container", "taskinfo": {"image": "x", "tag": "y"}},
            "taskinfo.tag",
        ),
        ({"tasktype": "uri://quantum-annealer"}, "tasktype"),
        (
            {
                "tasktype": "uri://executable",
                "taskinfo": {"executable": "x"},
                "resources": {"mincores": 8, "maxcores": 4},
            },
            "maxcores (4) is below mincores (8)",
        ),
        (
            {
                "tasktype": "uri://executable",
                "taskinfo": {"executable": "x"},
                "resources": {"maxmemory": "lots"},
            },
            "'lots' is not a memory size",
        ),
        (
            {
                "tasktype": "uri://executable",
                "taskinfo": {"executable": "x"},
                "resources": {"minduration": "ten"},
            },
            "'ten' is not a duration",
        ),
        (
            {
                "tasktype": "uri://executable",
                "taskinfo": {"executable": "x"},
                "resources": {"mincores": 0},
            },
            "mincores",
        ),
        ({"tasktype": "uri://executable", "taskinfo": {"executable": "x"}, "extra": 1}, "extra"),
    ],
)
def test_malformed_requests_name_the_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TaskRequest.model_validate(body)
    assert message in str(info.value)
