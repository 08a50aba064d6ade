"""The ESAP gateway over real HTTP, with a real Prefect server, worker and deployments behind it.

One `esap-prefect up` for the module; clients: httpx, pyvo's UWS parser and AsyncTAPJob.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from xml.etree import ElementTree

import httpx
import pytest
import requests
import schemathesis
import xmlschema
from diracx.client.sync import SyncDiracClient
from diracx.core.models import ScalarSearchOperator
from diracx.core.preferences import DiracxPreferences
from hypothesis import HealthCheck, given, settings
from pyvo.dal.tap import AsyncTAPJob
from pyvo.io.uws import parse_job, parse_job_list

from core.backoff import wait_until
from gateway.schemas import UWS_XSD
from tests.credential import api_headers
from tests.servers.diracx import DiracXServer
from tests.stack import CLI, Gateway, Issuer

XSD = UWS_XSD  # IVOA UWS 1.1, offline


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def test_every_request_needs_a_valid_bearer_token(gateway: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        answer = httpx.get(f"{gateway.url}/uws/jobs", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert (gateway.home / "token").stat().st_mode & 0o077 == 0


def test_hello_world_runs_as_a_uws_job_and_every_document_validates(
    gateway: Gateway, schema: xmlschema.XMLSchema
) -> None:
    long_value = "from-uws-" + "x" * 6000  # makes documents and the output file over 4 KiB
    job_id = gateway.create(
        workflow="hello-world", Parameter1=7, parameter4=long_value, PHASE="RUN"
    )
    job = gateway.wait_final(job_id)
    assert job.phase == "COMPLETED", gateway.http.get(f"/uws/jobs/{job_id}/error").text
    document = gateway.http.get(f"/uws/jobs/{job_id}")
    schema.validate(document.text)
    assert document.headers["content-type"].startswith("application/xml")
    params = {p.id_: p.content for p in job.parameters}
    assert params["workflow"] == "hello-world" and params["Parameter1"] == "7"
    [result] = job.results
    assert result.id_.endswith("/output.json")
    output = gateway.http.get(result.href)
    assert output.status_code == 200
    assert output.json()["Parameter1"] == 7 and output.json()["Parameter4"] == long_value
    assert output.json()["type"] == "batch.submit"
    # documents are gzip-compressed for clients that accept it; result files never are
    gzip_only = {"Accept-Encoding": "gzip"}
    assert "content-encoding" not in output.headers
    assert int(output.headers["content-length"]) == len(output.content) > 4096
    assert (
        gateway.http.get(f"/uws/jobs/{job_id}", headers=gzip_only).headers["content-encoding"]
        == "gzip"
    )
    for encoding, sent in (("gzip", "gzip"), ("identity", None)):
        answer = gateway.http.get("/uws/jobs", headers={"Accept-Encoding": encoding})
        assert answer.headers.get("content-encoding") == sent
        assert job_id in [j.jobid for j in parse_job_list(io.BytesIO(answer.content))]
    for part in ("parameters", "results"):
        schema.validate(gateway.http.get(f"/uws/jobs/{job_id}/{part}").text)
    assert gateway.http.get(f"/uws/jobs/{job_id}/phase").text == "COMPLETED"
    assert gateway.http.get(f"/uws/jobs/{job_id}/owner").text == job.ownerid
    listing = gateway.http.get("/uws/jobs", params={"PHASE": "COMPLETED"})
    schema.validate(listing.text)
    assert job_id in [j.jobid for j in parse_job_list(io.BytesIO(listing.content))]


def test_bad_parameters_are_refused_with_the_name_and_nothing_starts(gateway: Gateway) -> None:
    before = gateway.http.get("/uws/jobs").text
    cases = [
        ({"workflow": "hello-world", "Parameter1": "many"}, "Parameter1"),
        ({"workflow": "hello-world", "Parameter9": "x"}, "Parameter9"),
        ({"workflow": "no-such-flow"}, "unknown workflow 'no-such-flow'"),
        ({"Parameter1": "3"}, "parameter workflow (or ESAP's type)"),
    ]
    for params, message in cases:
        answer = gateway.http.post("/uws/jobs", data={**params, "PHASE": "RUN"})
        assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
    assert gateway.http.get("/uws/jobs").text == before


def test_phases_change_only_as_the_standard_allows(gateway: Gateway) -> None:
    job_id = gateway.create(type="batch.submit")
    assert gateway.http.get(f"/uws/jobs/{job_id}/phase").text == "PENDING"
    assert (
        gateway.http.post(
            f"/uws/jobs/{job_id}/executionduration", data={"EXECUTIONDURATION": "600"}
        ).status_code
        == 303
    )
    assert gateway.http.get(f"/uws/jobs/{job_id}/executionduration").text == "600"
    assert (
        gateway.http.post(f"/uws/jobs/{job_id}/parameters", data={"Parameter2": "9"}).status_code
        == 303
    )
    assert (
        gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "COMPLETE"}).status_code
        == 400
    )
    assert gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "RUN"}).status_code == 303
    assert gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "RUN"}).status_code == 400
    job = gateway.wait_final(job_id)
    assert job.phase == "COMPLETED"
    assert (
        gateway.http.post(f"/uws/jobs/{job_id}/parameters", data={"Parameter2": "1"}).status_code
        == 400
    )
    assert (
        gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "ABORT"}).status_code == 400
    )
    result = gateway.http.get(job.results[0].href).json()
    assert result["Parameter2"] == 9


def test_wait_blocks_until_the_phase_changes(gateway: Gateway) -> None:
    job_id = gateway.create(workflow="hello-world")
    started = time.monotonic()
    pending = gateway.http.get(f"/uws/jobs/{job_id}", params={"WAIT": 3})
    assert time.monotonic() - started < 5  # PENDING waits too, up to WAIT
    assert parse_job(io.BytesIO(pending.content)).phase == "PENDING"
    gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "RUN"})
    started = time.monotonic()
    moved = gateway.http.get(f"/uws/jobs/{job_id}", params={"WAIT": 60, "PHASE": "QUEUED"})
    assert parse_job(io.BytesIO(moved.content)).phase != "QUEUED"
    assert time.monotonic() - started < 55
    final = gateway.wait_final(job_id)
    started = time.monotonic()
    again = gateway.http.get(f"/uws/jobs/{job_id}", params={"WAIT": 30})
    assert time.monotonic() - started < 2, "a final job answers at once"
    assert parse_job(io.BytesIO(again.content)).phase == final.phase


def test_pyvo_asynctapjob_runs_waits_reads_and_deletes(gateway: Gateway) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {gateway.token}"
    job_id = gateway.create(workflow="hello-world", Parameter5="pyvo")
    job = AsyncTAPJob(f"{gateway.url}/uws/jobs/{job_id}", session=session)
    assert job.phase == "PENDING"
    job.run()
    job.wait(timeout=180)
    assert job.phase == "COMPLETED"
    [uri] = job.result_uris
    assert session.get(uri).json()["Parameter5"] == "pyvo"
    job.delete()
    assert gateway.http.get(f"/uws/jobs/{job_id}").status_code == 404


def test_delete_and_action_delete_send_the_client_to_the_list(gateway: Gateway) -> None:
    first, second = gateway.create(workflow="hello-world"), gateway.create(workflow="hello-world")
    gone = gateway.http.delete(f"/uws/jobs/{first}")
    assert gone.status_code == 303 and gone.headers["location"] == f"{gateway.url}/uws/jobs"
    posted = gateway.http.post(f"/uws/jobs/{second}", data={"ACTION": "DELETE"})
    assert posted.status_code == 303
    for job_id in (first, second):
        assert gateway.http.get(f"/uws/jobs/{job_id}").status_code == 404
    assert gateway.http.post(f"/uws/jobs/{first}", data={"ACTION": "RUN"}).status_code == 404


def test_job_list_filters_after_and_last(gateway: Gateway) -> None:
    ids = [gateway.create(workflow="hello-world") for _ in range(3)]
    last_two = parse_job_list(io.BytesIO(gateway.http.get("/uws/jobs", params={"LAST": 2}).content))
    assert [j.jobid for j in last_two] == [ids[2], ids[1]]

    def listed(**params: str) -> set[str]:
        answer = gateway.http.get("/uws/jobs", params=params)
        return {j.jobid for j in parse_job_list(io.BytesIO(answer.content))}

    created = parse_job(io.BytesIO(gateway.http.get(f"/uws/jobs/{ids[0]}").content)).creationtime
    before = (created.datetime - timedelta(seconds=1)).isoformat() + "Z"
    assert set(ids) <= listed(AFTER=before, PHASE="PENDING")
    assert not set(ids) & listed(AFTER="2999-01-01T00:00:00Z")
    assert not set(ids) & listed(PHASE="COMPLETED")
    assert gateway.http.get("/uws/jobs", params={"AFTER": "yesterday"}).status_code == 400
    assert gateway.http.get("/uws/jobs", params={"PHASE": "SLEEPING"}).status_code == 400


def test_the_django_uws_json_dialect(gateway: Gateway) -> None:
    answer = gateway.http.post(
        "/uws/jobs/",
        json={
            "parameters": [
                {"key": "type", "value": "batch.submit"},
                {"key": "Parameter3", "value": "5"},
            ]
        },
    )
    assert answer.status_code == 303
    job = answer.json()
    assert job["phase"] == "PENDING" and "jobToken" not in job
    assert {
        "jobId",
        "runId",
        "ownerId",
        "creationTime",
        "startTime",
        "endTime",
        "executionDuration",
        "destruction",
        "errorSummary",
        "parameters",
        "results",
    } <= set(job)
    assert {"key": "Parameter3", "value": "5", "byReference": False, "isPost": True} in job[
        "parameters"
    ]
    job_id = job["jobId"]
    ran = gateway.http.post(f"/uws/jobs/{job_id}/phase/", json={"PHASE": "RUN"})
    assert ran.status_code == 303 and ran.json()["phase"] == "QUEUED"
    gateway.wait_final(job_id)
    done = gateway.http.get(f"/uws/jobs/{job_id}/", headers={"Accept": "application/json"}).json()
    assert done["phase"] == "COMPLETED" and done["results"][0]["mimeType"] == "application/json"
    listed = gateway.http.get("/uws/jobs/", headers={"Accept": "application/json"}).json()
    assert job_id in [j["jobId"] for j in listed]
    assert (
        gateway.http.post(
            "/uws/jobs/", content=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )


def test_a_job_token_that_was_never_issued_is_refused_and_tells_nothing(gateway: Gateway) -> None:
    job_id = gateway.create(workflow="hello-world")
    answers = []
    for target in (job_id, "999999", "no-such-job"):
        forged = httpx.post(
            f"{gateway.url}/uws/jobs/{target}/phase/",
            json={"PHASE": "COMPLETE"},
            headers={"Authorization": "Token " + "0" * 40},
        )
        answers.append((forged.status_code, forged.json()))
    # a pending job (no call-back yet), a missing one and a malformed id: one answer
    assert answers == [(401, {"detail": "the job token is not valid"})] * 3
    assert gateway.http.get(f"/uws/jobs/{job_id}/phase").text == "PENDING"


def test_a_parameter_given_twice_in_any_case_is_refused_and_nothing_is_made(
    gateway: Gateway,
) -> None:
    before = gateway.http.get("/uws/jobs").text.count("<uws:jobref")
    bodies = [
        {"data": {"workflow": "hello-world", "Parameter3": "1", "parameter3": "2"}},
        {"data": {"workflow": "hello-world", "Parameter3": ["1", "2"]}},
        {"json": {"parameters": [{"key": "workflow", "value": "hello-world"},
                                 {"key": "Parameter3", "value": "1"},
                                 {"key": "PARAMETER3", "value": "2"}]}},
        {"json": {"workflow": "hello-world", "Parameter3": 1,
                  "parameters": [{"key": "parameter3", "value": "2"}]}},
    ]  # fmt: skip
    for body in bodies:
        answer = gateway.http.post("/uws/jobs", **body)  # type: ignore[arg-type]
        assert answer.status_code == 400, (body, answer.text)
        assert "is given more than once" in answer.json()["detail"], answer.text
        assert "parameter3" in answer.json()["detail"].lower()
    assert gateway.http.get("/uws/jobs").text.count("<uws:jobref") == before
    job_id = gateway.create(workflow="hello-world")
    twice = gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "RUN", "phase": "x"})
    assert twice.status_code == 400
    assert gateway.http.get(f"/uws/jobs/{job_id}/phase").text == "PENDING"


def test_availability_and_openapi(gateway: Gateway) -> None:
    answer = httpx.get(f"{gateway.url}/uws/availability")
    assert answer.status_code == 200
    root = ElementTree.fromstring(answer.content)
    vosi = "{http://www.ivoa.net/xml/VOSIAvailability/v1.0}"
    assert root.tag == f"{vosi}availability"
    assert root.findtext(f"{vosi}available") == "true"
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert {"/uws/jobs", "/uws/jobs/{job_id}", "/uws/jobs/{job_id}/phase"} <= set(spec["paths"])


def test_oidc_users_see_and_touch_only_their_own_jobs(gateway: Gateway, issuer: Issuer) -> None:
    def client(token: str) -> httpx.Client:
        return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {token}"})

    alice, bob = client(issuer.token("alice")), client(issuer.token("bob"))
    made = alice.post("/uws/jobs", data={"workflow": "hello-world"})
    assert made.status_code == 303
    job_id = made.headers["location"].rsplit("/", 1)[-1]
    assert alice.get(f"/uws/jobs/{job_id}/owner").text == issuer.owner("alice")
    for other in (bob, gateway.http):
        listed = parse_job_list(io.BytesIO(other.get("/uws/jobs").content))
        assert job_id not in {j.jobid for j in listed}
    for answer in (
        bob.get(f"/uws/jobs/{job_id}"),
        bob.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "RUN"}),
        bob.delete(f"/uws/jobs/{job_id}"),
        gateway.http.get(f"/uws/jobs/{job_id}/parameters"),
    ):
        assert answer.status_code == 403, answer.text
    assert alice.get(f"/uws/jobs/{job_id}/phase").text == "PENDING"
    for bad in (
        issuer.token("alice", lifetime=-60),
        issuer.token("alice", aud="someone-else"),
        issuer.token("alice", iss="https://evil.test/"),
        issuer.token("alice")[:-4] + "AAAA",
    ):
        assert client(bad).get("/uws/jobs").status_code == 401
    assert alice.delete(f"/uws/jobs/{job_id}").status_code == 303


def test_abort_cancels_the_flow_run_and_reaches_the_dirac_jobs(
    gateway: Gateway, diracx_server: DiracXServer, tmp_path: Path
) -> None:
    creds = diracx_server.credentials(tmp_path / "creds.json")
    api = json.loads((gateway.home / "stack.json").read_text())["api_url"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_API_URL": api, "ESAP_PREFECT_HOME": str(gateway.home)}
    added = subprocess.run(
        [CLI, "facilities", "add", "dirac", "held-grid", "--url", diracx_server.url,
         "--credentials", str(creds), "--embed", "--overwrite"],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # No pilot runs in this test, so the DIRAC job waits and the flow waits on it.
    job_id = gateway.create(workflow="hello-world", facility="held-grid", PHASE="RUN")
    running = gateway.http.get(f"/uws/jobs/{job_id}", params={"WAIT": 60, "PHASE": "QUEUED"})
    assert parse_job(io.BytesIO(running.content)).phase == "EXECUTING"
    group = _dirac_group(api)
    with SyncDiracClient(
        diracx_preferences=DiracxPreferences(url=diracx_server.url, credentials_path=creds)
    ) as client:
        statuses = wait_until(lambda: _statuses(client, group), bool, 60)
        assert set(statuses) <= {"Submitting", "Received", "Checking", "Waiting"}
        aborted = gateway.http.post(f"/uws/jobs/{job_id}/phase", data={"PHASE": "ABORT"})
        assert aborted.status_code == 303
        assert gateway.http.get(f"/uws/jobs/{job_id}/phase").text == "ABORTED"
        killed = wait_until(lambda: _statuses(client, group), lambda s: s == ["Killed"], 90)
    assert killed == ["Killed"]
    cancelled = wait_until(
        lambda: httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": ["CANCELLED"]}}}},
            headers=api_headers(),
        ).json(),
        bool,
        60,
    )
    assert [r["id"][:8] for r in cancelled] == [group.removeprefix("hello-world-")]


def _dirac_group(api: str) -> str:
    """The JobGroup of the one running hello-world flow run: hello-world-<run id[:8]>."""
    runs = wait_until(
        lambda: httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}},
            headers=api_headers(),
        ).json(),
        lambda found: len(found) == 1,
        60,
    )
    return f"hello-world-{runs[0]['id'][:8]}"


def _statuses(client: SyncDiracClient, group: str) -> list[str]:
    rows = client.jobs.search(
        parameters=["JobID", "Status"],
        search=[{"parameter": "JobGroup", "operator": ScalarSearchOperator.EQUAL, "value": group}],
    )
    return sorted(r["Status"] for r in rows)


def test_the_planner_answers_over_http_and_its_endpoint_takes_jobs(gateway: Gateway) -> None:
    docker = {
        "tasktype": "uri://docker-container",
        "taskinfo": {"image": "docker.io/example:1.0"},
        "resources": {"mincores": 8, "maxcores": 8, "minmemory": "8G", "minduration": "10m"},
    }
    refused = gateway.http.post("/planner", json=docker).json()
    assert refused["reponseword"] == "NO"
    assert "does not run uri://docker-container" in refused["reasons"]["local"]
    executable = {"tasktype": "uri://executable", "taskinfo": {"executable": "python3"}}
    answer = gateway.http.post("/planner", json=executable).json()
    assert answer["reponseword"] == "YES"
    best = answer["serviceinfo"]
    assert best == answer["offers"][0]["serviceinfo"] and best["facility"] == "local"
    assert best["endpoint"] == f"{gateway.url}/uws/jobs?facility=local"
    made = gateway.http.post(best["endpoint"], data={"workflow": "hello-world"})
    assert made.status_code == 303
    params = gateway.http.get(made.headers["location"] + "/parameters").text
    assert 'id="facility"' in params
    bad = gateway.http.post("/planner", json={"tasktype": "uri://executable", "taskinfo": {}})
    assert bad.status_code == 400 and "taskinfo.executable" in bad.json()["detail"]
    assert httpx.post(f"{gateway.url}/planner", json=executable).status_code == 401


def test_no_generated_request_makes_the_gateway_fail(gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def no_server_error(case: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {gateway.token}"}
            if "WAIT" in (case.query or {}):
                case.query["WAIT"] = 0  # keep generated long polls short
            response = case.call(timeout=30)
            assert response.status_code < 500, (case.method, case.path, response.text[:300])

        no_server_error()


def test_a_failed_run_is_an_error_with_its_reason(
    gateway: Gateway, schema: xmlschema.XMLSchema
) -> None:
    # the planner has no facility for a docker container on the stack's own facilities
    job_id = gateway.create(workflow="run-container", image="x", facility="local", PHASE="RUN")
    job = gateway.wait_final(job_id)
    assert job.phase == "ERROR"
    document = gateway.http.get(f"/uws/jobs/{job_id}")
    schema.validate(document.text)
    summary = ElementTree.fromstring(document.content).find(
        "{http://www.ivoa.net/xml/UWS/v1.0}errorSummary"
    )
    assert summary is not None and summary.get("type") == "fatal"
    error = gateway.http.get(f"/uws/jobs/{job_id}/error").text
    assert error.startswith("no facility can run uri://docker-container: local: does not run")
    assert job.results == []


def test_unknown_facilities_and_stores_are_refused_before_a_run(gateway: Gateway) -> None:
    for field, value, what in (("facility", "nowhere", "facility"), ("store", "attic", "store")):
        answer = gateway.http.post(
            "/uws/jobs", data={"workflow": "hello-world", field: value, "PHASE": "RUN"}
        )
        assert answer.status_code == 400
        assert answer.json()["detail"] == f"parameter {field}: no {what} named {value!r}"


def test_the_api_docs_work_offline_and_declare_the_bearer_scheme(gateway: Gateway) -> None:
    page = httpx.get(f"{gateway.url}/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 3 and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        assert httpx.get(f"{gateway.url}{asset}").status_code == 200, asset
    assert "cdn" not in page.text.lower()
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/uws/availability"]["get"]["security"] == []


EB = "https://www.purl.org/ivoa.net/EB/schema/types"
DOCKER_EXE = f"{EB}/executables/docker-container-1.0"
SIF_EXE = f"{EB}/executables/singularity-container-1.0"
COMPUTE = f"{EB}/resources/compute/simple-compute-resource-1.0"


def _add_facility(gateway: Gateway, *args: str) -> None:
    api = json.loads((gateway.home / "stack.json").read_text())["api_url"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_API_URL": api, "ESAP_PREFECT_HOME": str(gateway.home)}
    added = subprocess.run(
        [CLI, "facilities", "add", *args, "--overwrite"],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def _offers(gateway: Gateway, executable: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {
        "name": "broker test",
        "executable": executable,
        "resources": {
            "compute": [
                {
                    "type": COMPUTE,
                    "name": "cpu",
                    "cores": {"requested": {"min": 1, "max": 2}},
                    "memory": {"requested": {"min": 1}},
                }
            ]
        },
        "schedule": {"requested": {"duration": "PT10M"}},
        **extra,
    }
    answer = gateway.http.post("/offersets", json=body)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    assert answer.headers["location"] == document["href"]
    return document


def _session_until(gateway: Gateway, href: str, phases: set[str]) -> dict[str, Any]:
    session: dict[str, Any] = wait_until(
        lambda: gateway.http.get(href).json(), lambda s: s["phase"] in phases, 180
    )
    return session


def _accept(gateway: Gateway, href: str) -> dict[str, Any]:
    update = {"update": {"type": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}}
    answer = gateway.http.post(href, json=update)
    assert answer.status_code == 200, answer.text
    session: dict[str, Any] = answer.json()
    return session


def _uws_job(session: dict[str, Any]) -> str:
    href = next(m["values"]["href"] for m in session["messages"] if "href" in m["values"])
    return str(href).rsplit("/", 1)[-1]


def test_the_execution_broker_offers_and_runs_docker_and_singularity_containers(
    gateway: Gateway, docker_engine: Any, singularity: Path, sif_image: Path
) -> None:
    _add_facility(gateway, "docker", "dock", "--url", docker_engine.url, "--max-cores", "2")
    _add_facility(gateway, "apptainer", "sif", "--singularity", str(singularity))
    docker = {"type": DOCKER_EXE, "image": {"locations": ["esap-test/payload:1"]},
              "environment": {"GREETING": "salut"}}  # fmt: skip
    offerset = _offers(gateway, docker)
    assert offerset["result"] == "YES"
    [offer] = offerset["offers"]
    assert offer["phase"] == "OFFERED" and offer["expires"] > offer["created"]
    assert offer["executable"]["image"]["locations"] == ["esap-test/payload:1"]
    compute = offer["resources"]["compute"][0]
    assert compute["cores"] == {"requested": {"min": 1, "max": 2}, "offered": {"min": 1, "max": 2}}
    assert offer["schedule"]["executing"]["duration"] == "PT10M"
    assert "facility dock" in offer["messages"][0]["message"]
    assert gateway.http.get(f"/offersets/{offerset['uuid']}").json() == offerset

    accepted = _accept(gateway, offer["href"])
    assert accepted["phase"] in ("WAITING", "RUNNING")
    done = _session_until(gateway, offer["href"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["phase"] == "COMPLETED", done
    job_id = _uws_job(done)
    results = gateway.http.get(f"/uws/jobs/{job_id}", headers={"Accept": "application/json"})
    stdout = next(r for r in results.json()["results"] if r["key"].endswith("stdout.log"))
    log = gateway.http.get(stdout["value"]).text
    assert log.startswith("hello from run-container-") and "salut" in log
    again = gateway.http.post(offer["href"], json={"update": {
        "type": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}})  # fmt: skip
    assert again.status_code == 409 and "COMPLETED" in again.json()["detail"]

    sif = _offers(gateway, {"type": SIF_EXE, "location": str(sif_image)})
    [sif_offer] = sif["offers"]
    assert "facility sif" in sif_offer["messages"][0]["message"]
    _accept(gateway, sif_offer["href"])
    finished = _session_until(gateway, sif_offer["href"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert finished["phase"] == "COMPLETED", finished


def test_the_execution_broker_cancels_rejects_and_refuses(
    gateway: Gateway, docker_engine: Any, issuer: Issuer
) -> None:
    _add_facility(gateway, "docker", "dock", "--url", docker_engine.url, "--max-cores", "2")
    slow = {"type": DOCKER_EXE, "image": {"locations": ["esap-test/payload:1"]},
            "environment": {"PAUSE": "120"}}  # fmt: skip
    offer = _offers(gateway, slow)["offers"][0]
    _accept(gateway, offer["href"])
    _session_until(gateway, offer["href"], {"RUNNING"})
    cancel = {"update": {"type": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}}
    assert gateway.http.post(offer["href"], json=cancel).json()["phase"] == "CANCELLED"
    with contextlib.closing(docker_engine.client()) as client:
        gone = wait_until(
            lambda: client.containers.list(filters={"label": "esap-prefect.job"}), not_, 90
        )
    assert gone == []

    rejected = _offers(gateway, slow)["offers"][0]
    reject = {"update": {"type": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}}
    assert gateway.http.post(rejected["href"], json=reject).json()["phase"] == "REJECTED"
    late = gateway.http.post(
        rejected["href"], json={"update": {**reject["update"], "value": "ACCEPTED"}}
    )
    assert late.status_code == 409

    notebook = _offers(gateway, {"type": f"{EB}/executables/jupyter-notebook-1.0"})
    assert notebook["result"] == "NO" and notebook["offers"] == []
    assert "is not run here" in notebook["messages"][0]["message"]
    privileged = _offers(gateway, {**slow, "privileged": True})
    assert privileged["result"] == "NO"
    huge = _offers(gateway, slow, resources={"compute": [
        {"type": COMPUTE, "cores": {"requested": {"min": 64}}}]})  # fmt: skip
    assert huge["result"] == "NO" and "64 cores" in huge["messages"][0]["message"]

    for body, needle in (
        ({"executable": {"type": DOCKER_EXE, "image": {"locations": []}}}, "executable"),
        ({"executable": slow, "schedule": {"requested": {"duration": "soon"}}}, "duration"),
        ({"executable": slow, "colour": "red"}, "colour"),
    ):
        bad = gateway.http.post("/offersets", json=body)
        assert bad.status_code == 400 and needle in bad.json()["detail"], bad.text
    xml = gateway.http.post("/offersets", content=b"<offers-request/>",
                            headers={"Content-Type": "application/xml"})  # fmt: skip
    assert xml.status_code == 415
    rename = {"update": {"type": "uri:string-value-update", "path": "name", "value": "x"}}
    odd = gateway.http.post(rejected["href"], json=rename)
    assert odd.status_code == 400 and "enum-value-update" in odd.json()["detail"]
    assert gateway.http.get("/sessions/0000").status_code == 404
    other = {"Authorization": f"Bearer {issuer.token('someone-else')}"}
    assert httpx.get(offer["href"], headers=other).status_code == 403
    assert httpx.get(offer["href"]).status_code == 401


def not_(value: Any) -> bool:
    return not value
