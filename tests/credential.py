"""The session's Prefect API credential, for test processes that talk to a Prefect API.

Every home the suite makes gets the session's credential, so one header opens all servers.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from core.settings import AUTH_FILE, AUTH_VARIABLES


def api_credential() -> dict[str, str]:
    """The environment variables that carry the credential (client's and server's)."""
    value = os.environ[AUTH_VARIABLES[0]]
    return {name: value for name in AUTH_VARIABLES}


def provision(home: Path) -> Path:
    """Give `home` the session's credential (owner only), as `esap-prefect` would find it."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / AUTH_FILE
    path.write_text(os.environ[AUTH_VARIABLES[0]] + "\n")
    path.chmod(0o600)
    return home


def api_headers() -> dict[str, str]:
    """The header a raw HTTP client sends to a Prefect API (Prefect's basic auth)."""
    token = base64.b64encode(os.environ[AUTH_VARIABLES[0]].encode()).decode()
    return {"Authorization": f"Basic {token}"}
