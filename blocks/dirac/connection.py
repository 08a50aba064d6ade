"""DiracX clients built from a facility's settings, and DiracX errors in this project's terms.

Credentials are a DiracX credentials file, given by path or as a secret written 0600.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from diracx.client.sync import SyncDiracClient
from diracx.core.preferences import DiracxPreferences

from core.errors import CredentialsError, FatalError, TransientError

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def preferences(url: str, credentials_path: Path) -> DiracxPreferences:
    """DiracX client preferences for one server and credentials file."""
    if not credentials_path.exists():
        raise CredentialsError(f"DiracX credentials file {credentials_path} does not exist")
    return DiracxPreferences(url=url, credentials_path=credentials_path)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn DiracX client errors into CredentialsError, TransientError or FatalError."""
    try:
        yield
    except ClientAuthenticationError as exc:
        raise CredentialsError(
            f"DiracX refused the credentials while trying to {what}: "
            "log in again (dirac login) or renew the token"
        ) from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        if status in (401, 403):
            raise CredentialsError(
                f"DiracX refused the credentials while trying to {what} "
                f"(HTTP {status}): log in again or renew the token"
            ) from exc
        if status >= 500 or status in (408, 429):
            raise TransientError(f"DiracX answered HTTP {status} while trying to {what}") from exc
        detail = exc.message.splitlines()[-1] if exc.message else ""
        raise FatalError(
            f"DiracX rejected the request to {what} (HTTP {status}): {detail[:500]}"
        ) from exc
    except (
        ServiceRequestError,
        ServiceResponseError,
        httpx2.TransportError,
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise TransientError(
            f"DiracX could not be reached while trying to {what}: {type(exc).__name__}"
        ) from exc
    except RuntimeError as exc:
        if "well-known" in str(exc) or "openid" in str(exc).lower():
            raise TransientError(f"DiracX could not be reached while trying to {what}") from exc
        raise


@contextlib.contextmanager
def sync_client(prefs: DiracxPreferences, what: str) -> Iterator[SyncDiracClient]:
    """A connected sync client; errors while connecting or using it are translated."""
    with translated(what), SyncDiracClient(diracx_preferences=prefs) as client:
        yield client
