"""Rucio clients under one store's configuration, with Rucio's errors turned into ours.

rucio-clients reads a config file even when given explicit arguments, so each store writes
a private one (mode 0600) and points `RUCIO_CONFIG` at it while a client is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import CredentialsError, FatalError, TransientError
from core.files import write_secret_file
from core.settings import home

_CONFIG_LOCK = threading.RLock()


class RucioLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that is also callable as `logger(level, msg)`.

    rucio-clients 41.5's Upload and Download clients call `logger.log(...)` in places and
    `logger(...)` in others; this serves both.
    """

    def __call__(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(level, msg, *args, **kwargs)


def rucio_logger(name: str) -> RucioLogger:
    """The logger handed to rucio-clients' Upload and Download clients."""
    return RucioLogger(logging.getLogger(f"rucio.{name}"))


def write_client_config(settings: dict[str, str], token: str | None = None) -> Path:
    """A private client config file for `settings` ([client] keys), with its token file.

    The file name is a digest of the settings, so stores with the same settings share it
    (and the token Rucio caches next to it). A bearer `token` is written to that token file.
    """
    name = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]
    path = home() / "secrets" / f"rucio-{name}.cfg"
    token_file = path.with_suffix(".token")
    lines = ["[common]", "[client]", *(f"{k} = {v}" for k, v in settings.items())]
    lines.append(f"auth_token_file_path = {token_file}")
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        write_secret_file(path, text)
    if token is not None and (not token_file.exists() or token_file.read_text() != token):
        write_secret_file(token_file, token)
    return path


@contextlib.contextmanager
def rucio_client(config: Path | None, what: str, token: str | None = None) -> Iterator[Any]:
    """A rucio `Client` built from `config` (None: the standard RUCIO_CONFIG); errors translated.

    `what` completes "while trying to ..." in error messages.
    """
    from rucio.client import Client
    from rucio.common import exception as rucio_errors
    from rucio.common.config import clean_cached_config

    with _CONFIG_LOCK:
        before = os.environ.get("RUCIO_CONFIG")
        if config is not None:
            os.environ["RUCIO_CONFIG"] = str(config)
        clean_cached_config()
        try:
            client = Client()
            if token is not None:
                _bearer_only(client, token)
            yield client
        except (rucio_errors.CannotAuthenticate, rucio_errors.AccessDenied) as exc:
            raise CredentialsError(
                f"Rucio refused the credentials while trying to {what}: {exc}"
            ) from exc
        except rucio_errors.RSENotFound as exc:
            raise FatalError(f"Rucio has no such RSE (while trying to {what})") from exc
        except (
            rucio_errors.InvalidObject,
            rucio_errors.InvalidValueForKey,
            rucio_errors.InvalidRSEExpression,
        ) as exc:
            raise FatalError(f"Rucio refused a value while trying to {what}: {exc}") from exc
        except Exception as exc:
            if unreachable(exc):
                raise TransientError(f"Rucio could not be reached while trying to {what}") from exc
            raise
        finally:
            if before is None:
                os.environ.pop("RUCIO_CONFIG", None)
            else:
                os.environ["RUCIO_CONFIG"] = before
            clean_cached_config()


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says Rucio's server could not be reached (not that it said no)."""
    from requests.exceptions import ConnectionError as NoConnection
    from requests.exceptions import Timeout
    from rucio.common import exception as rucio_errors

    if isinstance(exc, NoConnection | Timeout | rucio_errors.ServiceUnavailable):
        return True
    return isinstance(exc, rucio_errors.RucioException) and "connect" in str(exc).lower()


def _bearer_only(client: Any, token: str) -> None:
    """Use `token` and never start Rucio's interactive OIDC login when it is refused.

    With auth_type oidc, a 401 makes rucio-clients print a login URL and read a code from
    standard input, which would hang a batch worker; a refused token must fail instead.
    """
    from rucio.common.exception import CannotAuthenticate

    def refuse() -> bool:
        raise CannotAuthenticate("the bearer token was refused (expired or revoked?)")

    client.auth_token = token
    client.headers["X-Rucio-Auth-Token"] = token
    client._BaseClient__get_token_oidc = refuse
