"""The gateway's API documentation: Swagger UI served from the package, with its bearer scheme.

Works offline (no CDN): Swagger UI's files come from the swagger-ui-bundle package.
"""

from __future__ import annotations

from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
PUBLIC = ("/uws/availability",)
CALLBACKS = ("/uws/jobs/{job_id}/phase", "/uws/jobs/{job_id}/results")
SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The local user's token (`esap-prefect token`) or an OIDC JWT of the "
        "configured issuer.",
    },
    "jobToken": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A running job's call-back: `Token <job token>` (django-uws).",
    },
}


def openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the bearer scheme every operation but availability needs."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    document.setdefault("components", {})["securitySchemes"] = SCHEMES
    document["security"] = [{"bearer": []}]
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            if path in PUBLIC:
                operation["security"] = []
            elif path in CALLBACKS:
                operation["security"] = [{"bearer": []}, {"jobToken": []}]
    app.openapi_schema = document
    return document


def install(app: FastAPI) -> None:
    """Swagger UI at /docs, its files at /docs/assets, the OpenAPI document with its schemes."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
