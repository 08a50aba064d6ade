"""One catalogue of workflows, and a wheel that installs and runs without the clone.

The wheel is built, installed into a fresh virtual environment with the locked
dependencies, and `esap-prefect demo` is run from another directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deployments.prefect_yaml import render
from deployments.processes import free_port
from flows.registry import WORKFLOWS

ROOT = Path(__file__).resolve().parent.parent
UV = str(Path(sys.executable).parent / "uv")


def test_prefect_yaml_is_generated_from_the_catalogue() -> None:
    assert (ROOT / "prefect.yaml").read_text() == render(), (
        "prefect.yaml differs from the catalogue: python -m deployments.prefect_yaml > prefect.yaml"
    )


def test_every_workflow_of_the_catalogue_loads_by_module_path() -> None:
    for name, workflow in WORKFLOWS.items():
        flow = workflow.load()
        assert flow.name == name
        assert workflow.deployment == f"{name}/{workflow.deployment_name}"
        assert (ROOT / workflow.file_entrypoint.partition(":")[0]).is_file()


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_demo_outside_the_clone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV"))}
    env["UV_CACHE_DIR"] = str(ROOT / ".cache" / "uv")
    _run(UV, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT), env=env)
    [wheel] = (tmp_path / "dist").glob("esap_prefect-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "containers/payloads/hello_world.py",
        "containers/payloads/cta_mc.py",
        "deployments/prefect.yaml",
        "gateway/schemas/UWS.xsd",
        "core/jobs.py",
    ):
        assert needed in names, needed
    venv = tmp_path / "venv"
    _run(UV, "venv", "--python", sys.executable, str(venv), env=env)
    python = str(venv / "bin" / "python")
    _run(UV, "pip", "sync", "--python", python, str(ROOT / "requirements.lock"), env=env)
    _run(UV, "pip", "install", "--no-deps", "--python", python, str(wheel), env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(python, "-c", "import flows, containers; print(flows.__file__)", cwd=elsewhere)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout
    env["ESAP_PREFECT_HOME"] = str(tmp_path / "home")
    demo = _run(
        str(venv / "bin" / "esap-prefect"), "demo", "--port", str(free_port()),
        "--gateway-port", str(free_port()), cwd=elsewhere, env=env, timeout=600,
    )  # fmt: skip
    result = json.loads(demo.stdout)
    assert result["job"]["state"] == "COMPLETED" and result["output"]["type"] == "batch.submit"


def test_the_registry_knows_every_block_type_of_the_catalogue() -> None:
    from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
    from blocks.registry import FACILITIES, STORES

    for lazy, types in ((FACILITIES, FACILITY_TYPES), (STORES, STORE_TYPES)):
        assert {c.get_block_type_slug(): f"{c.__module__}:{c.__name__}" for c in types} == lazy
