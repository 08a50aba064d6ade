"""Virtual environments for the servers, created from pinned requirements on first use.

They live under .cache/servers/<name>, apart from the project's own environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

PINS: dict[str, list[str]] = {
    "diracx": [
        *(
            f"diracx-{p}==0.7.0"
            for p in ("core", "db", "logic", "routers", "testing", "client", "cli", "api")
        ),
        "uvicorn",
        "moto[server]",
    ],
    "rucio": ["rucio==41.5.1"],
    # the UWS app ESAP runs today, for the gateway benchmark
    "djangouws": [
        "django-uws==0.2.dev370864",
        "django>=4.2,<5",
        "djangorestframework>=3.14",
        "gunicorn>=22",
    ],
}


def server_venv(name: str) -> Path:
    """The bin/ folder of the server's environment, installed if missing."""
    venv = CACHE / "servers" / name
    stamp = venv / ".installed"
    wanted = "\n".join(PINS[name])
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    uv = Path(sys.executable).parent / "uv"
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv")}
    subprocess.run(
        [str(uv), "venv", "-q", "--allow-existing", "--python", "3.11", str(venv)],
        check=True,
        env=env,
    )
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *PINS[name]],
        check=True,
        env=env,
    )
    stamp.write_text(wanted)
    return venv / "bin"
