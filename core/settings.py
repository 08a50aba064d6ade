"""Where esap-prefect keeps its state ($ESAP_PREFECT_HOME) and how Prefect is pointed at it.

Nothing here imports Prefect, so it can run before Prefect reads its settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_HOME = Path("~/.esap-prefect")


def home() -> Path:
    """$ESAP_PREFECT_HOME, default ~/.esap-prefect (created on first use, owner only)."""
    path = Path(os.environ.get("ESAP_PREFECT_HOME", str(DEFAULT_HOME))).expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_home() -> Path:
    """The home made owner-only, with its databases (0700, files 0600), for the stack.

    Homes made by earlier versions were world-readable; the gateway's and Prefect's
    databases hold job parameters and token hashes.
    """
    root = home()
    root.chmod(0o700)
    for name in ("prefect.db", "gateway.db", "token"):
        if (root / name).exists():
            (root / name).chmod(0o600)
    return root


def stack_file() -> Path:
    """Where a running `esap-prefect up` records its API URL and PID."""
    return home() / "stack.json"


def running_stack_api() -> str | None:
    """The API URL of a live `esap-prefect up` on this home, if one is running."""
    try:
        data = json.loads(stack_file().read_text())
        os.kill(int(data["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    return str(data["api_url"])


CONSOLE_HANDLERS = (
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL",
    "PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL",
)
"""Prefect's logging handlers that write to the terminal (its logging.yml, by env override)."""


def embedded_database_url() -> str:
    """The SQLite database of the embedded Prefect server, in this home."""
    return f"sqlite+aiosqlite:///{home() / 'prefect.db'}"


def configure_prefect_environment() -> None:
    """Point Prefect at this home, and at a running stack if there is one.

    Must run before Prefect is imported; variables the user set are left alone.
    """
    root = home()
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_DATABASE_CONNECTION_URL", embedded_database_url())
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the first migration of a new database takes longer than Prefect's 20 s on busy hosts
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # runs log at INFO to the Prefect API (the UI shows them); the terminal stays quiet
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", os.environ.get("ESAP_PREFECT_LOG_LEVEL", "INFO"))
    for handler in CONSOLE_HANDLERS:
        os.environ.setdefault(handler, "CRITICAL")
    if "PREFECT_API_URL" not in os.environ:
        api = running_stack_api()
        if api:
            os.environ["PREFECT_API_URL"] = api
