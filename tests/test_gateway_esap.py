"""ESAP's mount over real HTTP, as ESAP, its GUI and its jobs' django-uws client use it.

The session's `up` stack (conftest `gateway`, CORS allowed for ESAP_ORIGIN); Prefect is read
over its REST API to see what a run received.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import pytest
import xmlschema
from pyvo.io.uws import parse_job
from uws.client import Client

from core.backoff import wait_until
from gateway.schemas import UWS_XSD
from tests.credential import api_headers
from tests.stack import ESAP_ORIGIN, Gateway, Issuer

IMAGE = "esap-test/payload:1"
ESAP = "/esap-api/uws/jobs/"
ANY = {"Accept": "*/*"}
FINAL = {"COMPLETED", "ERROR", "ABORTED"}


def _user(gateway: Gateway, issuer: Issuer, name: str) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {issuer.token(name)}"}, timeout=60
    )


def _create(client: httpx.Client, run_id: str, **params: str) -> dict[str, Any]:
    """A job created as ESAP's GUI does: JSON to `uws/jobs/`, a 303 carrying the job."""
    body = {"runId": run_id, "parameters": [{"key": k, "value": v} for k, v in params.items()]}
    answer = client.post(ESAP, json=body, headers=ANY)
    assert answer.status_code == 303, answer.text
    job: dict[str, Any] = answer.json()
    assert answer.headers["location"] == job["url"]
    return job


def _wait(client: httpx.Client, job_id: int, phases: set[str], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"{ESAP}{job_id}/", headers=ANY).json()
        if job["phase"] in phases or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def _prefect(gateway: Gateway, path: str, body: dict[str, Any] | None = None) -> Any:
    """Prefect's REST API of the stack: GET, or POST `body`."""
    url = f"{gateway.api}{path}"
    headers = api_headers()
    answer = (
        httpx.get(url, headers=headers)
        if body is None
        else httpx.post(url, json=body, headers=headers)
    )
    answer.raise_for_status()
    return answer.json()


def _flow_run(gateway: Gateway, job_id: int) -> dict[str, Any]:
    [run] = _prefect(
        gateway, "/flow_runs/filter", {"flow_runs": {"tags": {"all_": [f"uws-job-{job_id}"]}}}
    )
    return dict(run)


def _token(gateway: Gateway, job_id: int) -> tuple[str, str]:
    """The call-back URL and token the job's payloads receive (its Secret block)."""
    path = f"/block_types/slug/secret/block_documents/name/uws-job-{job_id}?include_secrets=true"
    value = _prefect(gateway, path)["data"]["value"]
    assert value["job_id"] == str(job_id)
    return value["url"], value["token"]


def test_esap_lists_jobs_in_its_pages_with_integer_ids(gateway: Gateway, issuer: Issuer) -> None:
    pager = _user(gateway, issuer, "esap-pager")
    ids = [_create(pager, f"page-{n}", workflow="hello-world")["jobId"] for n in range(7)]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids)
    first = pager.get(ESAP, params={"page_size": 3}, headers=ANY)
    assert first.headers["content-type"] == "application/json"
    page = first.json()
    assert {k: page[k] for k in ("count", "pages", "requested_page", "requested_page_size")} == {
        "count": 7,
        "pages": 3,
        "requested_page": 1,
        "requested_page_size": 3,
    }
    assert (page["default_page_size"], page["max_page_size"]) == (50, 500)
    assert [j["jobId"] for j in page["results"]] == ids[::-1][:3], "newest first"
    assert page["links"]["previous"] is None
    second = pager.get(page["links"]["next"], headers=ANY).json()
    newest_first = ids[::-1]
    assert second["requested_page"] == 2
    assert [j["jobId"] for j in second["results"]] == newest_first[3:6]
    assert second["links"]["previous"] == f"{gateway.url}{ESAP}?page_size=3"
    last = pager.get(ESAP, params={"page_size": 3, "page": "last"}, headers=ANY).json()
    assert [j["jobId"] for j in last["results"]] == ids[:1] and last["links"]["next"] is None
    for wrong in ("4", "0", "-1", "abc", "٣", "9" * 30):
        answer = pager.get(ESAP, params={"page_size": 3, "page": wrong}, headers=ANY)
        assert answer.status_code == 404 and answer.json()["detail"] == "Invalid page.", wrong
    # page_size as DRF reads it: capped at 500, the default for anything else
    for size, read in (("100000", 500), ("-1", 50), ("x", 50), ("0", 50)):
        assert (
            pager.get(ESAP, params={"page_size": size}, headers=ANY).json()["requested_page_size"]
            == read
        )
    # both spellings, the API root, and the same id in the standard tree (XML there)
    bare = pager.get("/esap-api/uws/jobs", headers=ANY).json()
    assert bare["count"] == 7 and not isinstance(bare, list)
    assert pager.get("/esap-api/uws/", headers=ANY).json() == {
        "jobs": f"{gateway.url}/esap-api/uws/jobs/"
    }
    standard = pager.get(f"/uws/jobs/{ids[0]}", headers=ANY)
    assert standard.headers["content-type"].startswith("application/xml")
    assert parse_job(io.BytesIO(standard.content)).runid == "page-0"
    # another user sees none of them
    assert _user(gateway, issuer, "esap-other").get(ESAP, headers=ANY).json()["count"] == 0


def test_esap_workflow_file_fields_map_to_the_run_or_are_kept(
    gateway: Gateway, issuer: Issuer
) -> None:
    esap = _user(gateway, issuer, "esap-files")
    fields = {
        "workflow": "hello-world",
        "cputime": "500",
        "job_name": "hello-esap",
        "group_name": "cta-2026",
        "output_file_name": "output.tar",
        "arguement1": "kept",
        "title": 'Hello <World> & "friends"',
        "Parameter5": "from-esap",
    }
    made = _create(esap, "workflow-file", **fields, PHASE="RUN")
    job = _wait(esap, made["jobId"], FINAL)
    assert job["phase"] == "COMPLETED", job
    assert {p["key"]: p["value"] for p in job["parameters"]} == fields
    run = _flow_run(gateway, made["jobId"])
    assert (
        run["parameters"]["walltime"] == "8m20s" and run["parameters"]["Parameter5"] == "from-esap"
    )
    assert {"job:hello-esap", "group:cta-2026"} <= set(run["tags"])
    assert not {"output_file_name", "arguement1", "title", "cputime"} & set(run["parameters"])
    # the payload called back with django-uws's client, and its token died with the job
    assert job["reportedPhase"] == "COMPLETED"
    logs = esap.get(f"{ESAP}{made['jobId']}/logs/", headers=ANY).json()
    [payload] = logs["payload_jobs"]
    assert f"UWS job {made['jobId']}: calling back with django-uws" in payload["stderr"]
    assert '"Parameter5": "from-esap"' in payload["stdout"]
    gone = httpx.get(f"{gateway.api}/block_types/slug/secret/block_documents/name/"
                     f"uws-job-{made['jobId']}", headers=api_headers())  # fmt: skip
    assert gone.status_code == 404
    [result] = job["results"]
    assert (
        result["key"].endswith("output.json")
        and esap.get(result["value"]).json()["Parameter5"] == "from-esap"
    )
    # a value wrong for the field it maps to is a 400 naming the field; unknowns still are
    for name, value, said in (
        ("cputime", "abc", "parameter cputime (the workflow's walltime)"),
        ("cputime", "-5", "parameter cputime (the workflow's walltime)"),
        ("dirac_path", "../../etc", "parameter dirac_path (the workflow's output_path)"),
        ("dirac_SE", "CC IN2P3;rm", "parameter dirac_SE (the workflow's output_se)"),
        ("job_name", "x" * 200, "parameter job_name"),
        ("cpu_time", "500", "cpu_time"),
    ):
        body = {"parameters": [{"key": "workflow", "value": "hello-world"},
                               {"key": name, "value": value}]}  # fmt: skip
        answer = esap.post(ESAP, json=body, headers=ANY)
        assert answer.status_code == 400 and said in answer.json()["detail"], (name, answer.text)


def test_django_uws_client_works_unchanged_from_a_running_container(
    gateway: Gateway, issuer: Issuer, dock: str
) -> None:
    owner = _user(gateway, issuer, "esap-worker")
    script = (
        'echo "url=$ESAP_UWS_URL id=$ESAP_UWS_JOB_ID token-length=${#ESAP_UWS_JOB_TOKEN}"; '
        "echo started; sleep 25; echo done"
    )
    made = _create(
        owner,
        "call-backs",
        workflow="run-container",
        image=IMAGE,
        facility=dock,
        command=json.dumps(["sh", "-c", script]),
        PHASE="RUN",
    )
    job_id = made["jobId"]
    url, token = _token(gateway, job_id)
    assert url == f"{gateway.url}/esap-api/uws"
    client = Client(url)
    assert client.get_job(job_id, token)["jobId"] == job_id
    assert client.execute_job(job_id, token)["reportedPhase"] == "EXECUTING"
    added = client.add_results(
        job_id, [{"key": "histogram", "value": "https://data.example.org/h.fits",
                  "size": 2880, "mimeType": "application/fits"}], token,
    )  # fmt: skip
    assert added["results"][-1]["key"] == "histogram"
    # the job's environment reached the container; the owner reads its logs while it runs
    running = _wait(owner, job_id, {"EXECUTING", *FINAL}, 120)
    assert running["phase"] == "EXECUTING", running

    def tail() -> dict[str, Any]:
        return dict(owner.get(f"/uws/jobs/{job_id}/logs").json())

    def started(logs: dict[str, Any]) -> bool:
        lines = " ".join(line["message"] for line in logs["flow_run"])
        return "submitted 1 job(s)" in lines and "started" in logs["payload_jobs"][0]["stdout"]

    logs = wait_until(tail, lambda t: bool(t["payload_jobs"]) and started(t), 60)
    [payload] = logs["payload_jobs"]
    assert f"url={url} id={job_id} token-length={len(token)}" in payload["stdout"]
    assert "done" not in payload["stdout"]
    assert started(logs), logs
    newer = owner.get(f"/uws/jobs/{job_id}/logs", params={"since": logs["next_since"]}).json()
    assert len(newer["flow_run"]) < len(logs["flow_run"])
    stranger = _user(gateway, issuer, "esap-stranger")
    for path in (f"/uws/jobs/{job_id}/logs", f"{ESAP}{job_id}/logs/"):
        assert stranger.get(path).status_code == 403
        as_job = httpx.get(f"{gateway.url}{path}", headers={"Authorization": f"Token {token}"})
        assert as_job.status_code == 401, "a job token reads no logs"
    # a call-back does not end the job: the flow run does, and the failure is kept
    client.fail_job(job_id, "calibration table missing", token)
    reported = owner.get(f"{ESAP}{job_id}/", headers=ANY).json()
    assert (reported["phase"], reported["reportedPhase"]) == ("EXECUTING", "ERROR")
    assert reported["errorSummary"] == "calibration table missing"
    ended = _wait(owner, job_id, FINAL)
    assert ended["phase"] == "ERROR" and "calibration table missing" in ended["errorSummary"]
    keys = [r["key"] for r in ended["results"]]
    assert "histogram" in keys and any(k.endswith("/stdout.log") for k in keys), keys
    # the token died with the final phase, and was never written where people look
    with pytest.raises(RuntimeError, match=r"not valid|no call-back"):
        client.get_job(job_id, token)
    run = _flow_run(gateway, job_id)
    lines = _prefect(gateway, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
    artifacts = _prefect(
        gateway, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    )
    seen = json.dumps([lines, artifacts, run])
    assert lines and artifacts and token not in seen
    assert token not in (gateway.home / "gateway.db").read_bytes().decode(errors="replace")


def test_owner_changes_a_job_as_django_uws_allows(gateway: Gateway, issuer: Issuer) -> None:
    owner = _user(gateway, issuer, "esap-editor")
    job = _create(owner, "before", workflow="hello-world", Parameter1="1", Parameter2="2")
    path = f"{ESAP}{job['jobId']}/"
    patched = owner.patch(path, json={"runId": "after", "parameters": [
        {"key": "Parameter1", "value": "10"}]}, headers=ANY).json()  # fmt: skip
    params = {p["key"]: p["value"] for p in patched["parameters"]}
    assert patched["runId"] == "after" and (params["Parameter1"], params["Parameter2"]) == (
        "10",
        "2",
    )
    put = owner.put(path, json={"parameters": [{"key": "workflow", "value": "hello-world"},
                                               {"key": "Parameter3", "value": "3"}]})  # fmt: skip
    assert {p["key"] for p in put.json()["parameters"]} == {"workflow", "Parameter3"}
    assert (
        owner.patch(path, json={"parameters": [{"key": "Parameter1", "value": "x"}]}).status_code
        == 400
    )
    assert owner.patch(path, json={"errorSummary": "mine"}).status_code == 403
    # a PUT of the job as read works: read-only fields are ignored, as DRF does; others named
    as_read = owner.get(path).json()
    again = owner.put(path, json=as_read)
    assert again.status_code == 200 and again.json()["jobId"] == job["jobId"], again.text
    assert again.json()["parameters"] == as_read["parameters"]
    wrong = owner.patch(path, json={"owner": "someone"})
    assert wrong.status_code == 400 and "owner" in wrong.json()["detail"]
    other = _user(gateway, issuer, "esap-intruder")
    assert other.patch(path, json={"runId": "theirs"}).status_code == 403
    assert owner.delete(path).status_code == 204
    assert owner.get(path).status_code == 404
    assert owner.get(f"/uws/jobs/{job['jobId']}").status_code == 404


def test_cors_preflight_allows_the_configured_origin_only(gateway: Gateway) -> None:
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    allowed = httpx.options(f"{gateway.url}{ESAP}", headers={"Origin": ESAP_ORIGIN, **asked})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ESAP_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = httpx.options(
        f"{gateway.url}{ESAP}", headers={"Origin": "https://evil.example.com", **asked}
    )
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    listed = gateway.http.get(ESAP, headers={"Origin": ESAP_ORIGIN})
    assert listed.headers["access-control-allow-origin"] == ESAP_ORIGIN
    assert "location" in listed.headers["access-control-expose-headers"].lower()


HOSTILE = [
    "<script>alert(1)</script>",
    "]]><uws:phase>COMPLETED</uws:phase>",
    "&amp;&lt;\"'",
    "ünïcødé ☃ \U0001d518\U0001d51a",
    "x" * 2000,
    "{{ flow_run.id }}",
    "$(id) `id` ; rm -rf /",
    "' OR 1=1 --",
]


def test_hostile_run_ids_and_fields_keep_every_document_valid(
    gateway: Gateway, issuer: Issuer
) -> None:
    schema = xmlschema.XMLSchema(str(UWS_XSD))
    mallory = _user(gateway, issuer, "esap-mallory")
    for text in HOSTILE:
        job = _create(mallory, text, workflow="hello-world", title=text, job_name=text[:100],
                      Parameter4=text)  # fmt: skip
        assert job["runId"] == text
        document = mallory.get(f"/uws/jobs/{job['jobId']}")
        schema.validate(document.text)
        parsed = parse_job(io.BytesIO(document.content))
        assert parsed.runid == text and parsed.phase == "PENDING"
        assert {p.id_: p.content for p in parsed.parameters}["title"] == text
        mallory.delete(f"{ESAP}{job['jobId']}/")
    for bad in ("\x00", "a\x1bb", "\ud800"):
        workflow = {"key": "workflow", "value": "hello-world"}
        answer = mallory.post(ESAP, content=json.dumps({"runId": bad, "parameters": [workflow]}),
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 400 and "runId" in answer.json()["detail"], answer.text
        title = {"key": "title", "value": bad}
        answer = mallory.post(ESAP, content=json.dumps({"parameters": [workflow, title]}),
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 400 and "title" in answer.json()["detail"], answer.text
    listing = mallory.get("/uws/jobs")
    schema.validate(listing.text)


def test_esap_batch_catalogue_comes_from_prefect(gateway: Gateway) -> None:
    workflows = gateway.http.get("/esap-api/batch/workflows/search/", params={"keyword": "hello"})
    body = workflows.json()
    assert body["count"] >= 1 and body["requested_page"] == 1
    [hello] = [w for w in body["results"] if w["workflow"] == "hello-world"]
    assert hello["workflowtype"] == "prefect" and hello["filepath"].endswith("hello_world")
    assert hello["url"].startswith("http") and "/deployments/deployment/" in hello["url"]
    assert "Parameter1" in hello["parameters"]["properties"]
    everything = gateway.http.get("/esap-api/batch/workflows/search").json()
    assert everything["count"] > body["count"]
    posted = gateway.http.post("/esap-api/batch/workflows/search/", data={"keyword": "HELLO"})
    assert [w["name"] for w in posted.json()["results"]] == [w["name"] for w in body["results"]]
    assert gateway.http.get("/esap-api/batch/workflows/search",
                            params={"keyword": "no-such-thing"}).json()["count"] == 0  # fmt: skip
    facilities = gateway.http.get("/esap-api/batch/facilities/search/").json()["results"]
    [local] = [f for f in facilities if f["name"] == "local"]
    assert local["facilitytype"] == "local" and local["runtimeengine"] == "process"
    assert "uri://executable" in local["tasktypes"] and local["maxcores"] >= 1
    assert gateway.http.get("/esap-api/batch/facilities/search",
                            params={"keyword": "\x00"}).status_code == 400  # fmt: skip
    assert httpx.get(f"{gateway.url}/esap-api/batch/facilities/search").status_code == 401
