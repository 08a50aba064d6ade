"""The layers of DESIGN.md hold: import-linter's contracts pass, and an upward import breaks them.

`make lint` (and so `.ci/run`) runs `lint-imports`; this shows that it would catch one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = str(Path(sys.executable).parent / "lint-imports")
PACKAGES = ("esap_prefect", "gateway", "deployments", "flows", "tasks", "blocks", "planner", "core")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [LINT, "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def test_an_upward_import_breaks_the_layer_contract(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert _lint(tmp_path).returncode == 0
    units = tmp_path / "core" / "units.py"
    units.write_text(units.read_text() + "\nfrom flows.registry import WORKFLOWS  # upward\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "core.units -> flows.registry" in broken.stdout


def test_the_core_loads_no_backend_sdk_nor_prefect() -> None:
    # diracx-client's .pth imports a stub `diracx` in every interpreter: look for its parts
    sdks = ("prefect", "diracx.client", "diracx.api", "docker", "rucio", "kubernetes", "spython")
    probe = (
        "import sys, core.jobs, core.states, core.params, core.units, planner.matching; "
        f"print(','.join(m for m in {sdks!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
