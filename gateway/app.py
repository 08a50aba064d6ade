"""The gateway's FastAPI application: UWS routes, authentication, the Prefect sync loop.

`create_app()` builds it; `serve()` runs it with uvicorn (as `esap-prefect up` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prefect.client.orchestration import get_client
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import Authenticator
from gateway.bodies import BodyLimit
from gateway.broker import Broker
from gateway.broker_store import OfferStore
from gateway.database import open_database
from gateway.docs import install as install_docs
from gateway.errors import GatewayError, answer, prefect_unavailable
from gateway.routes_broker import router as broker_router
from gateway.routes_esap import esap_router
from gateway.routes_planner import facility_capabilities
from gateway.routes_planner import router as planner_router
from gateway.routes_uws import router as uws_router
from gateway.server_protocol import timed_protocol
from gateway.service import JobService
from gateway.settings import GatewaySettings
from gateway.store import JobStore
from gateway.sync import PhaseSync

RESULT_FILE = re.compile(r"^/uws/jobs/[^/]+/results/[^/]+/?$")


class CompressDocuments:
    """gzip (Starlette's middleware, level 1) for answers from 4 KiB up that clients accept.

    A list of 10,000 jobs is 5 MB of JSON and about 120 KB compressed.

    Result files pass as they are: they may be large, already compressed, and are fetched
    with their length.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=4096, compresslevel=1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plain = scope["type"] != "http" or RESULT_FILE.match(scope["path"])
        await (self.app if plain else self.gzip)(scope, receive, send)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """400 naming the query or path values FastAPI refused, without pydantic's internals."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
        for error in exc.errors()[:5]
    ]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=400)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway application; the Prefect API is the one PREFECT_API_URL names."""
    config = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = open_database(config.database)
        async with get_client() as client:
            service = JobService(JobStore(db), client, config)
            app.state.service = service
            app.state.broker = Broker(
                OfferStore(db), service, facility_capabilities, config.offer_seconds
            )
            sync = asyncio.create_task(PhaseSync(service).forever(config.sync_interval))
            try:
                yield
            finally:
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sync
                db.close()

    app = FastAPI(
        title="esap-prefect gateway",
        description="IVOA UWS 1.1 jobs over Prefect deployments, and ESAP's mount (django-uws "
        "JSON, ESAP's pages and batch catalogue); the IVOA Execution Planner (seed form) and "
        "ExecutionBroker.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = config
    app.state.authenticator = Authenticator(config)
    app.include_router(uws_router)
    app.include_router(planner_router)
    app.include_router(broker_router)
    if config.esap_prefix:
        app.include_router(esap_router(config.esap_prefix))
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(GatewayError, answer)
    app.add_exception_handler(httpx.TransportError, prefect_unavailable)
    app.add_exception_handler(httpx.HTTPStatusError, prefect_unavailable)
    app.add_middleware(CompressDocuments)
    app.add_middleware(BodyLimit, limit=config.max_body, seconds=config.body_seconds)
    if config.cors_origins:
        # browsers on these origins (ESAP's GUI) may call with credentials; preflights are
        # answered before anything else runs
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            expose_headers=["Location"],
            max_age=600,
        )
    return app


def serve(settings: GatewaySettings | None = None) -> None:
    """Run the gateway until interrupted."""
    import uvicorn

    os.umask(0o077)  # the job table and anything else the gateway writes: owner only
    config = settings or GatewaySettings()
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level="warning",
        http=timed_protocol(config.header_seconds),
    )


if __name__ == "__main__":
    serve()
