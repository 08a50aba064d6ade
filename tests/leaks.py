"""Every secret the suite hands out, and the gateway answers it saw, for the last test's search.

Fixtures and test servers register what they mint (`secret`); gateway clients keep what the
gateway answered (`keep_answer`); `tests/test_zz_no_secret_leaked.py` searches everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

SECRETS: set[str] = set()
ANSWERS: list[bytes] = []
APIS: set[str] = set()
"""Prefect APIs the suite ran flows on (besides the session's), searched while still up."""
KEPT_BYTES = 64 * 2**20  # of gateway answers; the rest are not kept
_kept = [0]


def secret(value: str) -> str:
    """Note a secret (passwords, tokens, keys) to search for; returns it."""
    if len(value) >= 8:  # shorter ones would match by chance
        SECRETS.add(value)
    return value


def credentials_file(path: Path) -> Path:
    """Note the tokens of a DiracX credentials file."""
    data = json.loads(path.read_text())
    for name in ("access_token", "refresh_token"):
        if data.get(name):
            secret(str(data[name]))
    return path


def keep_answer(response: httpx.Response) -> None:
    """httpx response hook: keep the answer's headers and body, up to KEPT_BYTES in all."""
    if _kept[0] > KEPT_BYTES:
        return
    response.read()
    text = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
    ANSWERS.append(text + b"\n\n" + response.content)
    _kept[0] += len(ANSWERS[-1])
