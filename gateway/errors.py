"""The gateway's domain errors, and the one place they become HTTP answers.

Services and parsers raise these; `answer` maps each to its status and a short detail.
"""

from __future__ import annotations

from typing import ClassVar

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse


class GatewayError(Exception):
    """Something a client asked for cannot be done; the message says why, for the client."""

    status: ClassVar[int] = 400
    headers: ClassVar[dict[str, str]] = {}


class InvalidRequest(GatewayError):
    """A value, parameter or body is malformed or out of range (400)."""


class InvalidTransition(GatewayError):
    """The job's phase does not allow the change asked for (400, as UWS servers answer)."""


class Conflict(GatewayError):
    """The resource's state does not allow the change asked for (409)."""

    status = 409


class Unauthenticated(GatewayError):
    """No valid credential (401)."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="esap"'}


class Forbidden(GatewayError):
    """The resource belongs to another user, or the credential does not allow this (403)."""

    status = 403


class NotFound(GatewayError):
    """No such job, offer set or session (404)."""

    status = 404


class BodyTooLarge(GatewayError):
    """The request body is over the configured limit (413)."""

    status = 413


class BodyTimeout(GatewayError):
    """The request body did not arrive in time (408)."""

    status = 408
    headers = {"Connection": "close"}


class UnsupportedMedia(GatewayError):
    """The body's media type is not one the route reads (415)."""

    status = 415


class Unavailable(GatewayError):
    """Prefect or the facilities cannot serve this now (503)."""

    status = 503


class PrefectUnavailable(Unavailable):
    """The Prefect API does not answer, or answers 5xx (503)."""

    headers = {"Retry-After": "5"}


class DatabaseUnavailable(Unavailable):
    """The job database does not answer (a restart, an outage): try again shortly (503)."""

    headers = {"Retry-After": "5"}


async def answer(request: Request, exc: Exception) -> JSONResponse:
    """The HTTP answer of a domain error: its status, `{"detail": message}`, its headers."""
    assert isinstance(exc, GatewayError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)


async def prefect_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Prefect away (no answer, or a 5xx while its database restarts): 503, try again.

    Any other error of Prefect's stays a 500: a bug, not an outage.
    """
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, httpx.HTTPStatusError) and status is not None and status < 500:
        return JSONResponse({"detail": "Internal Server Error"}, status_code=500)
    return await answer(request, PrefectUnavailable("the Prefect API does not answer; try again"))
