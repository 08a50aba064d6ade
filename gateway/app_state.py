"""What the running app holds for its handlers: the job service and the public base URL.

Set up once in `gateway.app`'s lifespan; every router reads them through these two calls.
"""

from __future__ import annotations

from fastapi import Request

from gateway.service import JobService


def job_service(request: Request) -> JobService:
    """The app's job service."""
    service: JobService = request.app.state.service
    return service


def base_url(request: Request) -> str:
    """The gateway's public URL, as links in its answers start."""
    return str(request.app.state.settings.base_url)
