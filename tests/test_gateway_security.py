"""The gateway as a hostile user finds it: each attack of the security review, and its answer.

Against the whole `up` stack (conftest's `gateway`), over real HTTP, with two identities:
the local user's token and OIDC users of a key set served on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
import pytest
from prefect import flow

from core.states import UWSPhase
from deployments.processes import free_port, wait_http_ok
from gateway.records import JobRecord
from gateway.service import JobService
from gateway.settings import GatewaySettings
from gateway.store import JobStore
from gateway.sync import PhaseSync
from tests.credential import api_credential
from tests.stack import Gateway, Issuer

IMAGE = "esap-test/payload:1"
JSON = {"Accept": "application/json"}


def _client(gateway: Gateway, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _wait_phase(client: httpx.Client, job_id: str, phases: set[str], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/uws/jobs/{job_id}", params={"WAIT": 5}, headers=JSON).json()
        if job["phase"] in phases or time.monotonic() > deadline:
            return job


def test_a_container_cannot_read_the_host_through_links_in_its_outputs(
    gateway: Gateway, issuer: Issuer, dock: str
) -> None:
    mallory = _client(gateway, issuer.token("mallory"))
    home = gateway.home
    script = f"ln -s {home}/token leak; mkdir d; ln -s {home} d/home; echo done"
    made = mallory.post(
        "/uws/jobs",
        data={
            "workflow": "run-container",
            "runtime": "docker",
            "image": IMAGE,
            "facility": dock,
            "command": json.dumps(["sh", "-c", script]),
            "outputs": json.dumps(["leak", "d/home/stack.json"]),
            "PHASE": "RUN",
        },
    )
    assert made.status_code == 303, made.text
    job_id = made.headers["location"].rsplit("/", 1)[-1]
    job = _wait_phase(mallory, job_id, {"COMPLETED", "ERROR", "ABORTED"}, 180)
    assert job["phase"] == "ERROR", job
    summary = job["errorSummary"]
    assert "outputs refused" in summary and "leak: a symbolic link" in summary
    assert "d/home: a symbolic link" in summary
    assert str(home) not in summary, "an error summary shows no host path"
    token = (home / "token").read_text().strip()
    for result in job["results"]:
        assert not result["key"].endswith(("leak", "stack.json"))
        assert token not in mallory.get(result["value"]).text
    archived = [p for p in (home / "results").rglob("*") if p.is_file()]
    assert all(token not in p.read_text(errors="replace") for p in archived)


def test_yaml_aliases_are_refused_before_they_multiply(gateway: Gateway) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):
        prev, name = chr(ord("a") + n - 1), chr(ord("a") + n)
        levels.append(f"{name}: &{name} [{', '.join(f'*{prev}' for _ in range(10))}]")
    bomb = ("\n".join(levels) + "\nexecutable: *i\n").encode()
    assert len(bomb) < 1024
    size = (gateway.home / "gateway.db").stat().st_size
    started = time.monotonic()
    answer = gateway.http.post(
        "/offersets", content=bomb, headers={"Content-Type": "application/yaml"}
    )
    assert answer.status_code == 400 and "aliases" in answer.json()["detail"]
    assert time.monotonic() - started < 2
    assert (gateway.home / "gateway.db").stat().st_size < size + 1_000_000
    plain = "executable: {type: x}\nresources: {}\n"
    fine = gateway.http.post("/offersets", content=plain, headers={"Content-Type": "text/yaml"})
    assert fine.status_code == 200 and fine.json()["result"] == "NO"


def test_execution_durations_are_checked_and_limits_hold_for_everyone(
    gateway: Gateway, issuer: Issuer, dock: str
) -> None:
    mallory = _client(gateway, issuer.token("mallory"))
    theirs = mallory.post("/uws/jobs", data={"workflow": "hello-world"})
    their_job = theirs.headers["location"].rsplit("/", 1)[-1]
    for hostile in ("1000000000000000", "²", "٣", "9" * 20, "9" * 5000, "-1", "1e3", " "):
        answer = mallory.post(
            f"/uws/jobs/{their_job}/executionduration", data={"EXECUTIONDURATION": hostile}
        )
        assert answer.status_code == 400, (hostile[:20], answer.text)
        assert "EXECUTIONDURATION must be a whole number" in answer.json()["detail"]
    assert mallory.get(f"/uws/jobs/{their_job}/executionduration").text == "0"
    # a job with a 3 s limit is stopped on time, whatever another user sent
    mine = gateway.create(
        workflow="run-container",
        runtime="docker",
        image=IMAGE,
        facility=dock,
        environment=json.dumps({"PAUSE": "120"}),
    )
    assert (
        gateway.http.post(
            f"/uws/jobs/{mine}/executionduration", data={"EXECUTIONDURATION": "3"}
        ).status_code
        == 303
    )
    gateway.http.post(f"/uws/jobs/{mine}/phase", data={"PHASE": "RUN"})
    running = _wait_phase(gateway.http, mine, {"EXECUTING", "ERROR", "COMPLETED"}, 120)
    assert running["phase"] == "EXECUTING", running
    started = time.monotonic()
    ended = _wait_phase(gateway.http, mine, {"ABORTED", "ERROR", "COMPLETED"}, 60)
    assert ended["phase"] == "ABORTED" and "executionduration of 3 s" in ended["errorSummary"]
    assert time.monotonic() - started < 20


@flow
def never_run() -> None:
    """A flow whose runs are only created, to stand behind gateway jobs."""


@pytest.mark.usefixtures("prefect_api")
def test_one_bad_job_does_not_stop_the_time_limits_of_the_others(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    store = JobStore.open(tmp_path / "gateway.db")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)

    def executing(job_id: str, limit: int, run: str) -> JobRecord:
        return JobRecord(
            job_id=job_id, owner="u", workflow="hello-world", run_id=None,
            phase=UWSPhase.EXECUTING, parameters={}, flow_parameters={},
            creation_time=start, start_time=start, end_time=None,
            execution_duration=limit, destruction=start + timedelta(days=1),
            error_type=None, error_message=None, results=[], flow_run_id=run,
            token_hash=None,
        )  # fmt: skip

    async def cycle() -> None:
        async with get_client() as client:
            runs = [await client.create_flow_run(never_run) for _ in range(2)]
            # an old database may hold a limit no clock can add; it must not stop the loop
            store.insert(executing("huge", 10**15, str(runs[0].id)))
            store.insert(executing("short", 3, str(runs[1].id)))
            service = JobService(store, client, GatewaySettings(database=tmp_path / "g.db"))
            await PhaseSync(service).expire()

    asyncio.run(cycle())
    short, huge = store.get("short"), store.get("huge")
    assert short is not None and short.phase is UWSPhase.ABORTED
    assert huge is not None and huge.phase is UWSPhase.EXECUTING
    store.close()


@pytest.mark.usefixtures("prefect_api")
def test_a_job_aborted_while_its_flow_run_is_being_made_stays_aborted(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.objects import StateType

    from flows.registry import WORKFLOWS
    from gateway.records import JobUpdate

    store = JobStore.open(tmp_path / "gateway.db")

    class AbortedMeanwhile(JobService):
        async def _give_token(self, job: JobRecord) -> str:
            self.store.update(job.job_id, JobUpdate(phase=UWSPhase.ABORTED))  # another request
            return await super()._give_token(job)

    async def scenario() -> tuple[JobRecord, list[StateType | None]]:
        async with get_client() as client:
            deployment = await (await never_run.ato_deployment(name="abort-window")).aapply()
            settings = GatewaySettings(database=tmp_path / "g.db")
            service = AbortedMeanwhile(store, client, settings)
            service._deployments[WORKFLOWS["hello-world"].deployment] = deployment
            start = datetime.now(UTC)
            job = JobRecord(
                job_id="w", owner="u", workflow="hello-world", run_id=None,
                phase=UWSPhase.PENDING, parameters={}, flow_parameters={},
                creation_time=start, start_time=None, end_time=None, execution_duration=0,
                destruction=start + timedelta(days=1), error_type=None, error_message=None,
                results=[], flow_run_id=None, token_hash=None,
            )  # fmt: skip
            store.insert(job)
            after = await service.run(job)
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
            )
            return after, [run.state_type for run in runs]

    after, states = asyncio.run(scenario())
    assert after.phase is UWSPhase.ABORTED and after.flow_run_id is None and not after.token_hash
    assert states == [StateType.CANCELLED], "the flow run made meanwhile is cancelled"
    store.close()


@pytest.mark.usefixtures("prefect_api")
def test_result_files_are_served_only_from_under_an_archive_root(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from blocks.archive import LocalArchive
    from gateway.errors import NotFound
    from gateway.records import Result

    root = tmp_path / "shared results"
    LocalArchive(root=root).save("served-test", overwrite=True)
    kept = root / "run a" / "out.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("archived")
    outside = tmp_path / "private.txt"
    outside.write_text("never served")
    (root / "escape").symlink_to(tmp_path)  # a folder link inside the root, out of it
    linked = root / "escape" / "private.txt"
    start = datetime.now(UTC)
    job = JobRecord(
        job_id="j", owner="u", workflow="hello-world", run_id=None, phase=UWSPhase.COMPLETED,
        parameters={}, flow_parameters={}, creation_time=start, start_time=start,
        end_time=start, execution_duration=0, destruction=start + timedelta(days=1),
        error_type=None, error_message=None, flow_run_id=None, token_hash=None,
        results=[
            Result(id=str(i), href=f"http://gw/{i}", location=path.as_uri())
            for i, path in enumerate([kept, outside, linked])
        ],
    )  # fmt: skip

    async def serve() -> list[str]:
        async with get_client() as client:
            settings = GatewaySettings(database=tmp_path / "g.db")
            service = JobService(JobStore.open(tmp_path / "g.db"), client, settings)
            answers = []
            for index in range(3):
                try:
                    answers.append((await service.result_file(job, index)).read_text())
                except NotFound as exc:
                    answers.append(str(exc))
            return answers

    try:
        served, refused, through_link = asyncio.run(serve())
    finally:
        LocalArchive.delete("served-test")
    assert served == "archived", "a path with a space, under the saved archive's root"
    assert refused == "result 1 of job j is not served here"
    assert through_link == "result 2 of job j is not served here"


class _SlowIssuer(http.server.BaseHTTPRequestHandler):
    """A key-set endpoint that takes its time, or fails, and counts how often it is asked."""

    delay = 3.0
    failing = False
    asked = 0
    body = b"{}"

    def do_GET(self) -> None:
        type(self).asked += 1
        time.sleep(self.delay)
        if self.failing:
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _lone_gateway(gateway: Gateway, tmp_path: Path, **env: str) -> Iterator[str]:
    """A second gateway process on the stack's Prefect API, with its own home and settings."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment |= {
        "PREFECT_API_URL": gateway.api,
        "ESAP_PREFECT_HOME": str(tmp_path / "home"),
        "ESAP_GATEWAY_PORT": str(port),
        **api_credential(),
        **env,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "gateway.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.app"],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/uws/availability", process, log, 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)


def test_a_slow_or_failing_issuer_stalls_nobody(
    gateway: Gateway, issuer: Issuer, vo: Any, tmp_path: Path
) -> None:
    keys = httpx.get(issuer.jwks_url).content
    handler: type[_SlowIssuer] = type("Slow", (_SlowIssuer,), {"body": keys, "asked": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/jwks.json"
    try:
        with _lone_gateway(
            gateway, tmp_path, ESAP_GATEWAY_OIDC_ISSUER=issuer.issuer,
            ESAP_GATEWAY_OIDC_JWKS_URL=url, ESAP_GATEWAY_OIDC_AUDIENCE="esap",
            ESAP_GATEWAY_JWKS_COOLDOWN="30",
        ) as base:  # fmt: skip
            forged = issuer.token("mallory", kid="no-such-key")
            results: dict[str, Any] = {}

            def attack() -> None:
                results["forged"] = httpx.post(
                    f"{base}/planner", json={}, headers={"Authorization": f"Bearer {forged}"},
                    timeout=30,
                )  # fmt: skip

            thread = threading.Thread(target=attack)
            thread.start()
            time.sleep(0.3)  # the key set is being fetched
            quick = []
            for _ in range(5):
                started = time.monotonic()
                assert httpx.get(f"{base}/uws/availability").status_code == 200
                quick.append(time.monotonic() - started)
            thread.join()
            assert max(quick) < 0.5, quick
            assert results["forged"].status_code == 401
            assert results["forged"].json()["detail"] == "the bearer token is not valid"
            assert handler.asked == 1
            # more forged key ids within the cool-down: refused at once, the issuer not asked
            for _ in range(5):
                again = httpx.post(
                    f"{base}/planner", json={}, headers={"Authorization": f"Bearer {forged}"}
                )
                assert again.status_code == 401
            assert handler.asked == 1
            # a good token of a known key works without asking again
            good = httpx.get(
                f"{base}/uws/jobs", headers={"Authorization": f"Bearer {issuer.token('alice')}"}
            )
            assert good.status_code == 200 and handler.asked == 1
        handler.failing, handler.delay, handler.asked = True, 0.0, 0
        with _lone_gateway(
            gateway, tmp_path / "failing", ESAP_GATEWAY_OIDC_ISSUER=issuer.issuer,
            ESAP_GATEWAY_OIDC_JWKS_URL=url, ESAP_GATEWAY_JWKS_COOLDOWN="30",
        ) as base:  # fmt: skip
            for _ in range(5):
                refused = httpx.get(
                    f"{base}/uws/jobs", headers={"Authorization": f"Bearer {issuer.token('a')}"}
                )
                assert refused.status_code == 401
            assert handler.asked == 1, "a failing issuer is asked once per cool-down"
    finally:
        server.shutdown()


def _gateway_rss(gateway: Gateway) -> int:
    up = psutil.Process(gateway.process.pid)
    [process] = [p for p in up.children(recursive=True) if "gateway.app" in " ".join(p.cmdline())]
    return int(process.memory_info().rss)


def _raw_post(gateway: Gateway, path: str, head: dict[str, str], body: Iterator[bytes]) -> int:
    """POST over a bare socket, sending the body only while the server has not answered.

    The status the server answered, once it did; a server that reads bodies it refuses
    would take all 50 MB first.
    """
    host, port = gateway.url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n" not in answer:
            answer += sock.recv(4096)
    return int(answer.split(b" ", 2)[1])


def test_bodies_are_capped_and_never_read_before_authentication(gateway: Gateway) -> None:
    job_id = gateway.create(workflow="hello-world")
    before = _gateway_rss(gateway)
    path, size = f"/uws/jobs/{job_id}/phase", 50 * 2**20
    token = {"Authorization": f"Bearer {gateway.token}"}

    def megabytes(count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield b"1000000\r\n" + b"x" * 2**20 + b"\r\n"  # chunks of 1 MiB

    started = time.monotonic()
    # a declared 50 MB: refused before a byte of it is read
    declared = {"Content-Type": "application/json", "Content-Length": str(size)}
    assert _raw_post(gateway, path, declared, iter([])) == 413
    # a streamed 50 MB without a token: refused before it is read
    streamed = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    assert _raw_post(gateway, path, streamed, megabytes(50)) == 401
    # with a token: cut off at the limit
    assert _raw_post(gateway, path, {**streamed, **token}, megabytes(50)) == 413
    assert time.monotonic() - started < 20
    assert _gateway_rss(gateway) - before < 30 * 2**20
    assert gateway.http.get(f"/uws/jobs/{job_id}/phase").text == "PENDING"


def test_a_nan_wait_is_refused_and_long_polls_keep_their_time(
    gateway: Gateway, issuer: Issuer
) -> None:
    mallory = _client(gateway, issuer.token("mallory"))
    theirs = mallory.post("/uws/jobs", data={"workflow": "hello-world"})
    their_job = theirs.headers["location"].rsplit("/", 1)[-1]
    for hostile in ("nan", "NaN", "inf", "-inf", "-2", "1e999"):
        answer = mallory.get(f"/uws/jobs/{their_job}", params={"WAIT": hostile})
        assert answer.status_code == 400 and "WAIT" in answer.json()["detail"], hostile
    mine = gateway.create(workflow="hello-world")
    started = time.monotonic()
    gateway.http.get(f"/uws/jobs/{mine}", params={"WAIT": 2})
    assert 1.5 < time.monotonic() - started < 5


def test_an_oidc_subject_named_like_the_local_user_is_not_the_local_user(
    gateway: Gateway, issuer: Issuer
) -> None:
    job_id = gateway.create(workflow="hello-world")
    local = gateway.http.get(f"/uws/jobs/{job_id}/owner").text
    impostor = _client(gateway, issuer.token(local))
    assert impostor.get(f"/uws/jobs/{job_id}").status_code == 403
    assert job_id not in impostor.get("/uws/jobs").text
    made = impostor.post("/uws/jobs", data={"workflow": "hello-world"})
    theirs = made.headers["location"].rsplit("/", 1)[-1]
    assert impostor.get(f"/uws/jobs/{theirs}/owner").text == issuer.owner(local) != local
    assert gateway.http.get(f"/uws/jobs/{theirs}").status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "named"),
    [
        ("post", "/uws/jobs", {"data": {"workflow": "hello-world", "runId": "a\x00b"}}, "runId"),
        ("post", "/uws/jobs", {"data": {"workflow": "hello-world", "Parameter4": "\x07"}},
         "Parameter4"),
        ("post", "/uws/jobs", {"json": {"runId": "r", "parameters": 5}}, "parameters"),
        ("post", "/uws/jobs", {"content": b'{"runId": "\\ud800", "workflow": "hello-world"}',
                               "headers": {"Content-Type": "application/json"}}, "U+D800"),
        ("post", "/uws/jobs", {"content": b"[" * 5000 + b"]" * 5000,
                               "headers": {"Content-Type": "application/json"}}, "nests deeper"),
        ("get", "/uws/jobs", {"params": {"AFTER": "9999-12-31T23:59:59-23:59"}}, "AFTER"),
        ("get", "/uws/jobs", {"params": {"LAST": str(2**64)}}, "LAST"),
        ("post", "/uws/jobs", {"data": {"workflow": "run-container", "image": "x",
                                        "walltime": "9" * 400}}, "walltime"),
        ("post", "/uws/jobs", {"data": {"workflow": "run-container", "image": "x",
                                        "cores": "9" * 30}}, "cores"),
        ("post", "/planner", {"json": {"tasktype": "uri://executable",
                                       "taskinfo": {"executable": "x"},
                                       "resources": {"minduration": "9" * 400}}}, "minduration"),
        ("post", "/planner", {"content": b'{"tasktype": "uri://executable", "taskinfo": '
                                         b'{"executable": "x"}, "resources": '
                                         b'{"maxmemory": Infinity}}',
                              "headers": {"Content-Type": "application/json"}}, "maxmemory"),
        ("post", "/offersets", {"json": {"executable": {"type": "x", "name": "\x1b[2J"}}},
         "U+001B"),
    ],
)  # fmt: skip
def test_unchecked_values_are_a_400_naming_them(
    gateway: Gateway, method: str, path: str, request_kwargs: dict[str, Any], named: str
) -> None:
    answer = getattr(gateway.http, method)(path, **request_kwargs)
    assert answer.status_code == 400, answer.text[:300]
    assert named in answer.json()["detail"], answer.json()["detail"][:300]
    assert len(answer.content) < 2000


def test_destruction_times_beyond_the_calendar_are_refused(gateway: Gateway) -> None:
    job_id = gateway.create(workflow="hello-world")
    for hostile in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "tomorrow"):
        answer = gateway.http.post(f"/uws/jobs/{job_id}/destruction", data={"DESTRUCTION": hostile})
        assert answer.status_code == 400 and "DESTRUCTION" in answer.json()["detail"]
    assert gateway.http.get(f"/uws/jobs/{job_id}").status_code == 200


def test_answers_give_nothing_away(gateway: Gateway, issuer: Issuer) -> None:
    for token in (
        issuer.token("alice", lifetime=-60),
        issuer.token("alice", aud="someone-else"),
        issuer.token("alice")[:-4] + "AAAA",
        "a.b.c",
    ):
        answer = httpx.get(f"{gateway.url}/uws/jobs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert answer.json() == {"detail": "the bearer token is not valid"}
    many = {f"key{i}": "x" for i in range(10_000)}
    answer = gateway.http.post("/uws/jobs", json={"workflow": "hello-world", **many})
    assert answer.status_code == 400 and len(answer.content) < 1000
    unknown = gateway.http.post("/uws/jobs", json={"workflow": "hello-world", "k1": 1, "k2": 2,
                                                   **{f"x{i}": 1 for i in range(40)}})  # fmt: skip
    assert unknown.status_code == 400 and "and 32 more" in unknown.json()["detail"]
    nowhere = gateway.http.post("/uws/jobs", data={"workflow": "hello-world", "facility": "x"})
    assert nowhere.json()["detail"] == "parameter facility: no facility named 'x'"
    home = gateway.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("gateway.db", "prefect.db", "token"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_the_same_error_for_a_missing_and_an_existing_host_file_as_image(
    gateway: Gateway, singularity: Path
) -> None:
    added = gateway.cli("facilities", "add", "apptainer", "sif", "--singularity",
                        str(singularity), "--overwrite")  # fmt: skip
    assert added.returncode == 0, added.stderr
    errors = []
    for image in (str(gateway.home / "token"), str(gateway.home / "no-such-file")):
        job_id = gateway.create(workflow="run-container", runtime="singularity", image=image,
                                facility="sif", PHASE="RUN")  # fmt: skip
        assert gateway.wait_final(job_id).phase == "ERROR"
        errors.append(gateway.http.get(f"/uws/jobs/{job_id}/error").text)
    token_error, missing_error = errors
    assert "is not a SIF image file" in token_error
    assert token_error.replace("token", "X") == missing_error.replace("no-such-file", "X")
    assert str(gateway.home) not in token_error


HOSTILE: list[Any] = [
    "a\x00b", "\ud800", "\x1b[31m", "9" * 5000, "NaN", "Infinity", "-1e999",
    "9999-12-31T23:59:59-23:59", str(2**64), "../../etc/passwd", "<x/>&amp;", "",
]  # fmt: skip
HOSTILE_JSON: list[Any] = [*HOSTILE, 2**64, -(2**70), 1e308, [[[[[]]]]], {"a": {"b": None}}]


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_hostile_values_in_every_field_get_no_server_error(gateway: Gateway) -> None:
    spec = gateway.http.get("/openapi.json").json()
    job_id = gateway.create(workflow="hello-world")
    # a WAIT the gateway accepts blocks up to its cap (60 s) on a PENDING job: asked of an
    # ABORTED one it is still parsed and checked, and answered at once
    ended = gateway.create(workflow="hello-world")
    aborted = gateway.http.post(f"/uws/jobs/{ended}/phase", data={"PHASE": "ABORT"})
    assert aborted.status_code == 303, aborted.text
    fills = {"job_id": job_id, "uuid": "0" * 8, "index": "0"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    checked = 0
    for method, path, operation in _operations(spec):
        url = path.format(**{k: fills[k] for k in fills if "{" + k + "}" in path})
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        body = operation.get("requestBody", {}).get("content", {})
        fields: list[str] = []
        for media in body.values():
            fields += list(media.get("schema", {}).get("properties", {}))
        for value in HOSTILE:
            raw = value.encode("utf-8", "surrogatepass")
            for name in names:
                target = url.replace(f"/{job_id}", f"/{ended}") if name == "WAIT" else url
                answer = gateway.http.request(method, f"{target}?{urlencode({name: raw})}")
                assert answer.status_code < 500, (method, path, name, value[:20], answer.text)
                checked += 1
            for name in fields or ["workflow"]:
                answer = gateway.http.request(
                    method, url, content=urlencode({name: raw}), headers=form
                )
                assert answer.status_code < 500, (method, path, name, value[:20], answer.text)
                checked += 1
        if body:
            for value in HOSTILE_JSON:
                for name in fields or ["name"]:
                    document = json.dumps({name: value}).encode()
                    answer = gateway.http.request(
                        method, url, content=document, headers={"Content-Type": "application/json"}
                    )
                    assert answer.status_code < 500, (method, path, name, str(value)[:20])
                    checked += 1
    assert checked > 500
    # after all that, every list is still a valid document for everyone
    assert gateway.http.get("/uws/jobs").status_code == 200
    assert gateway.http.get("/uws/jobs", headers=JSON).status_code == 200


def _closed_after(conn: socket.socket, drip: bytes, limit: float) -> float | None:
    """Seconds until the gateway closes `conn` while `drip` goes out a byte per 0.3 s."""
    started = time.monotonic()
    conn.setblocking(False)
    for byte in drip:
        with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
            conn.send(bytes([byte]))
        readable, _, _ = select.select([conn], [], [], 0.3)
        if readable:
            try:
                if conn.recv(4096) == b"":
                    return time.monotonic() - started
            except (ConnectionResetError, BlockingIOError):
                return time.monotonic() - started
        if time.monotonic() - started > limit:
            return None
    return None


def test_slow_headers_and_slow_bodies_are_cut_off_while_others_are_served(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Slowloris: headers a byte at a time, a silent connection, a body that never ends."""
    settings = {"ESAP_GATEWAY_HEADER_SECONDS": "2", "ESAP_GATEWAY_BODY_SECONDS": "2"}
    (tmp_path / "home").mkdir(mode=0o700, parents=True)
    (tmp_path / "home" / "token").write_text((gateway.home / "token").read_text())
    with _lone_gateway(gateway, tmp_path, **settings) as base:
        port = int(base.rsplit(":", 1)[1])
        endless = b"GET /uws/availability HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        slow = socket.create_connection(("127.0.0.1", port))
        silent = socket.create_connection(("127.0.0.1", port))
        took = _closed_after(slow, endless, 15)
        assert took is not None and took < 6, "a client dripping its headers was not cut off"
        silent.settimeout(10)
        assert silent.recv(10) == b"", "a silent connection must be closed"
        assert httpx.get(f"{base}/uws/availability").status_code == 200
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(
            b"POST /uws/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 1000\r\nAuthorization: Bearer " + gateway.token.encode()
            + b"\r\n\r\nworkflow=hello"
        )  # fmt: skip
        body.settimeout(10)
        started = time.monotonic()
        answer = b""
        while chunk := body.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 2 s" in answer
        assert time.monotonic() - started < 6
        for conn in (slow, silent, body):
            conn.close()
