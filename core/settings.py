"""Where esap-prefect keeps its state ($ESAP_PREFECT_HOME) and how Prefect is pointed at it.

Nothing here imports Prefect, so it can run before Prefect reads its settings.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from core.errors import FatalError

DEFAULT_HOME = Path("~/.esap-prefect")
HEARTBEAT_SECONDS = 30  # Prefect's shortest heartbeat interval
HEARTBEAT_VARIABLE = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


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
    for name in ("prefect.db", "gateway.db", "token", AUTH_FILE):
        if (root / name).exists():
            (root / name).chmod(0o600)
    return root


AUTH_FILE = "api-auth"
AUTH_VARIABLES = ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")
"""The client's and the server's copy of the Prefect API credential (Prefect's basic auth)."""


def api_auth_string() -> str:
    """The Prefect API credential: $PREFECT_API_AUTH_STRING, else this home's `api-auth` file.

    The file is made on first use (`esap:` and 32 random bytes, owner only); two processes
    starting together agree on one, since it is linked into place or read, never overwritten.
    """
    given = os.environ.get(AUTH_VARIABLES[0], "").strip()
    if given:
        return given
    path = home() / AUTH_FILE
    if not path.exists():
        draft = path.with_name(f".{AUTH_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"esap:{secrets.token_urlsafe(32)}\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    text = path.read_text().strip()
    if not text:
        raise FatalError(f"{path} is empty: remove it and a new credential is made")
    return text


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


DATABASE_VARIABLE = "ESAP_PREFECT_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres")


def database_url() -> str | None:
    """$ESAP_PREFECT_DATABASE_URL (PostgreSQL for Prefect and the gateway), checked; None if unset.

    A ValueError names what is wrong and never repeats the URL (it holds a password).
    """
    text = os.environ.get(DATABASE_VARIABLE, "").strip()
    if not text:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{DATABASE_VARIABLE} is not a URL (its port?)") from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            f"{DATABASE_VARIABLE} must be postgresql://user:password@host:port/database "
            f"(scheme {parts.scheme!r}); unset it for the embedded SQLite"
        )
    if not parts.hostname or not parts.path.strip("/") or not parts.username:
        raise ValueError(f"{DATABASE_VARIABLE} needs a user, a host and a database name")
    del port
    return text


def prefect_database_url(url: str) -> str:
    """The same database as Prefect's server opens it (SQLAlchemy with asyncpg)."""
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def database_label(url: str | None) -> str:
    """Where the data lives, for people: no password."""
    if url is None:
        return f"SQLite in {home()}"
    parts = urlsplit(url)
    return f"PostgreSQL {parts.hostname}:{parts.port or 5432}{parts.path} as {parts.username}"


def embedded_database_url() -> str:
    """The SQLite database of the embedded Prefect server, in this home."""
    return f"sqlite+aiosqlite:///{home() / 'prefect.db'}"


def configure_prefect_environment() -> None:
    """Point Prefect at this home, and at a running stack if there is one.

    Must run before Prefect is imported; variables the user set are left alone.
    """
    root = home()
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    try:
        shared = database_url()
    except ValueError:
        shared = None  # the commands that open a database say what is wrong
    os.environ.setdefault(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        prefect_database_url(shared) if shared else embedded_database_url(),
    )
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the API is never open: every server started here asks for this credential, every
    # client sends it (workers pass it on to their flow runs; payload jobs never see it)
    credential = api_auth_string()
    for name in AUTH_VARIABLES:
        os.environ.setdefault(name, credential)
    # flow runs beat every 30 s (Prefect's default: 180; workers pass it on to every run)
    os.environ.setdefault(HEARTBEAT_VARIABLE, str(HEARTBEAT_SECONDS))
    # a Prefect server whose PostgreSQL is restarting answers 500 (a refused connection is not
    # among the errors it calls retryable): retried with backoff (~1 min), a worker's or flow's
    # state change is not lost, which would leave its run Pending for ever
    os.environ.setdefault("PREFECT_CLIENT_RETRY_EXTRA_CODES", "500")
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


OUTAGE_VARIABLE = "ESAP_PREFECT_OUTAGE_LIMIT"


def outage_limit() -> float:
    """Seconds a run keeps waiting for a facility or Rucio that cannot be reached (600)."""
    return env_number(OUTAGE_VARIABLE, "600", 10, 86400)


def env_number(
    variable: str, default: str, low: float, high: float, *, whole: bool = False
) -> float:
    """A number from the environment within [low, high] (a whole one if asked); FatalError if not.

    The error names the variable and the text given, never a traceback's worth.
    """
    text = os.environ.get(variable, default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high or (whole and not value.is_integer()):  # also NaN
        what = "a whole number" if whole else "seconds"
        raise FatalError(f"{variable}={text!r}: give {what} from {low:g} to {high:g}")
    return value
