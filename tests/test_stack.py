"""The embedded stack end to end: `demo` and `up` start a real server and worker, leave nothing.

These start whole Prefect servers (about 10 s each) and run hello world through its deployment.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.backoff import wait_until
from deployments.processes import free_port
from tests.credential import api_headers, provision
from tests.stack import launch_up

CLI = str(Path(sys.executable).parent / "esap-prefect")
pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["ESAP_PREFECT_HOME"] = str(provision(home))
    return env


def _leftovers(home: Path, port: int) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if f"--port {port}" in cmd or env.get("ESAP_PREFECT_HOME") == str(home):
            found.append(f"{proc.pid}: {cmd}")
    return found


def test_demo_runs_hello_world_through_a_deployment_and_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [CLI, "demo", "--port", str(port), "--gateway-port", str(free_port())],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["output"]["type"] == "batch.submit" and result["output"]["Parameter3"] == 33
    link = f"http://127.0.0.1:{port}/runs/flow-run/{result['flow_run_id']}"
    assert f"Prefect UI: {link}" in done.stderr
    assert Path(result["archived"][0]["location"].removeprefix("file://")).is_relative_to(tmp_path)
    worker_log = (tmp_path / "logs" / "worker.log").read_text()
    assert result["flow_run_id"] in worker_log, "the run must have gone through the worker"
    assert _leftovers(tmp_path, port) == []
    assert not (tmp_path / "stack.json").exists()


def test_up_serves_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    up = launch_up(tmp_path, port, free_port(), _env(tmp_path))
    try:
        api = json.loads((tmp_path / "stack.json").read_text())["api_url"]
        assert api == f"http://127.0.0.1:{port}/api"
        run = subprocess.run(
            [CLI, "run", "hello-world", "-p", "Parameter6=via-up"],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        flow_run_id = json.loads(run.stdout)["flow_run_id"]
        # with a stack, a CLI run goes through the deployment, named, tagged, linked
        assert f"http://127.0.0.1:{port}/runs/flow-run/{flow_run_id}" in run.stderr
        asked = urllib.request.Request(f"{api}/flow_runs/{flow_run_id}", headers=api_headers())
        with urllib.request.urlopen(asked) as answer:
            flow_run = json.load(answer)
        assert flow_run["state_type"] == "COMPLETED"
        assert flow_run["deployment_id"] is not None and "cli" in flow_run["tags"]
        assert flow_run["name"] == "hello-world-1"
        needs = ("planned uri://executable on facility local", "archived hello-world-",
                 "submitted 1 job(s) to facility local")  # fmt: skip
        # runs ship their logs in batches: the last may land just after the run's final state
        logs = wait_until(
            lambda: _logs(api, flow_run_id),
            lambda found: all(any(n in line for line in found) for n in needs),
            30,
        )
        for needed in needs:
            assert any(needed in line for line in logs), (needed, logs)
        deployed = subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), "deployment", "ls"],
            capture_output=True,
            text=True,
            env={**_env(tmp_path), **_exported(tmp_path)},
            timeout=120,
            check=False,
        )
        assert "hello-world/local" in deployed.stdout, deployed.stderr
        assert "cta-mc-production/production" in deployed.stdout
        for pool in ("dirac", "apptainer", "docker"):
            assert f"hello-world/{pool}" in deployed.stdout, f"Hello World is also on {pool}"
        by_name = {p["name"]: p for p in _filter(api, "work_pools")}
        assert {k: by_name[k]["type"] for k in ("local", "dirac", "apptainer", "docker")} == {
            "local": "warm",
            "dirac": "dirac",
            "apptainer": "apptainer",
            "docker": "docker",
        }
        assert "kubernetes" not in by_name, "its pool comes with the first cluster"
        assert "Not configured: no DIRAC facility is saved" in by_name["dirac"]["description"]
        for pool in ("apptainer", "docker"):
            assert "Not configured: no runtime image is built" in by_name[pool]["description"]
        production = next(d for d in _filter(api, "deployments") if d["name"] == "production")
        [schedule] = production["schedules"]
        assert schedule["schedule"]["cron"] == "0 2 * * *"
        assert schedule["active"] is False, "the production schedule must start disabled"
        _check_the_api_is_closed(api, tmp_path)
    finally:
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=120)
    assert up.returncode == 0
    assert f"Prefect UI:  http://127.0.0.1:{port}" in out
    for step in ("Prefect server: ", "deployments: ", "worker: ", "gateway: "):
        assert step in err and " s\n" in err.split(step, 1)[1][:12], err
    assert _leftovers(tmp_path, port) == []
    assert not (tmp_path / "stack.json").exists()


def _exported(home: Path) -> dict[str, str]:
    """What `eval "$(esap-prefect env)"` would set: the API URL and its credential."""
    lines = subprocess.run(
        [CLI, "env"], capture_output=True, text=True, env=_env(home), timeout=60, check=True
    ).stdout.splitlines()
    pairs = [shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines]
    exported = {name: value for name, value in pairs}
    assert set(exported) == {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING"}, lines
    return exported


def _check_the_api_is_closed(api: str, home: Path) -> None:
    """A local user without the credential, or with a guessed one, gets nothing (the probe)."""
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    asks = [
        ["-X", "POST", f"{api}/block_documents/filter", "-d", '{"include_secrets": true}'],
        ["-X", "POST", f"{api}/deployments/filter", "-d", "{}"],
        [f"{api}/admin/settings"],
    ]
    codes = [
        subprocess.run(
            [*nobody, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "-H", "Content-Type: application/json", *ask],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        for ask in asks
    ]  # fmt: skip
    assert codes == ["401", "401", "401"]
    guessed = subprocess.run(
        [CLI, "facilities"],
        capture_output=True,
        text=True,
        env={**_env(home), "PREFECT_API_AUTH_STRING": "esap:guessed"},
        timeout=120,
        check=False,
    )
    assert guessed.returncode == 2 and "Traceback" not in guessed.stderr
    assert guessed.stderr.startswith(f"error: the Prefect API at {api} refused"), guessed.stderr


def _filter(api: str, what: str) -> list[dict[str, Any]]:
    """Every object of a kind (`deployments`, `work_pools`) as the API lists them."""
    request = urllib.request.Request(
        f"{api}/{what}/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", **api_headers()},
    )
    with urllib.request.urlopen(request) as answer:
        found: list[dict[str, Any]] = json.load(answer)
    return found


def _logs(api: str, flow_run_id: str) -> list[str]:
    """The INFO-and-up log lines of a flow run (and its task runs), as the UI shows them."""
    body = json.dumps({"logs": {"flow_run_id": {"any_": [flow_run_id]}, "level": {"ge_": 20}}})
    request = urllib.request.Request(
        f"{api}/logs/filter", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json", **api_headers()},
    )  # fmt: skip
    with urllib.request.urlopen(request) as answer:
        return [entry["message"] for entry in json.load(answer)]
