"""Workflows end to end on a real DiracX server, the grid simulator playing the grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from flows.cta_mc_production import cta_mc_production
from tests.gridsim import Fate, GridSimulator
from tests.servers.diracx import DiracXServer

CLI = str(Path(sys.executable).parent / "esap-prefect")
pytestmark = pytest.mark.usefixtures("prefect_api")


def cli(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = api
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def grid_block(
    prefect_api: str, diracx_server: DiracXServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    creds = diracx_server.credentials(tmp_path_factory.mktemp("grid") / "creds.json")
    done = cli(
        prefect_api,
        "facilities",
        "add",
        "dirac",
        "grid",
        "--url",
        diracx_server.url,
        "--credentials",
        str(creds),
        "--embed",
        "--vo",
        "cta",
        "--output-path",
        "/cta/user/e/esap",
        "--overwrite",
    )
    assert done.returncode == 0, done.stderr
    assert "saved DIRAC facility 'grid'" in done.stdout
    listed = cli(prefect_api, "facilities")
    assert "grid  (dirac)  runs uri://executable" in listed.stdout
    return "grid"


def test_hello_world_runs_on_dirac_from_the_command_line(
    prefect_api: str, grid_block: str, pilot: GridSimulator
) -> None:
    hostile = 'x"; Site = "LCG.evil.org"; [ $(id) `id` \\'
    done = cli(
        prefect_api,
        "run",
        "hello-world",
        "--facility",
        grid_block,
        "-p",
        "Parameter1=7",
        "-p",
        f"Parameter4={hostile}",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["facility"] == "grid"
    assert result["job"]["state"] == "COMPLETED" and result["job"]["job_id"].isdigit()
    assert result["output"]["Parameter4"] == hostile, "the value must arrive as plain data"
    assert result["output"]["type"] == "batch.submit"
    assert any(name.startswith("hello-world-") for name in pilot.ran)


def test_a_bad_credentials_file_is_refused_by_the_command(prefect_api: str, tmp_path: Path) -> None:
    (tmp_path / "creds.json").write_text("not json")
    done = cli(
        prefect_api,
        "facilities",
        "add",
        "dirac",
        "broken",
        "--url",
        "http://x",
        "--credentials",
        str(tmp_path / "creds.json"),
    )
    assert done.returncode == 2 and "is not a DiracX credentials file" in done.stderr


def test_cta_production_on_dirac_reschedules_and_skips_what_exists(
    grid_block: str, pilot: GridSimulator
) -> None:
    attempts: Counter[str] = Counter()

    def fate(name: str) -> Fate:
        attempts[name] += 1
        return "fail" if name.endswith("-000502") and attempts[name] == 1 else "run"

    pilot.fates = fate
    params = {
        "particle": "proton",
        "site": "LaPalma",
        "runs": 4,
        "first_run": 500,
        "showers_per_run": 10,
        "facility": grid_block,
    }
    first = cta_mc_production(**params)  # type: ignore[call-overload]
    assert first.simulated == [500, 501, 502, 503] and first.failed == []
    assert first.rescheduled == 1 and first.facility == "grid"
    assert {a.name for a in first.archived} >= {
        "run000502/run000502.corsika.input",
        "run000502/run000502.simtel.json",
    }
    card = next(a for a in first.archived if a.name == "run000503/run000503.corsika.input")
    text = Path(card.location.removeprefix("file://")).read_text()
    assert "RUNNR 503" in text and "PRMPAR 14" in text and "OBSLEV 215800.0" in text

    second = cta_mc_production(**{**params, "runs": 6})  # type: ignore[call-overload]
    assert second.already_archived == [500, 501, 502, 503]
    assert second.simulated == [504, 505]
