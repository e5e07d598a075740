"""``/openapi.json`` and ``/docs``: public when ``ASSISTANT_AUTH__PUBLIC_DOCS`` is on, else for an
admin key (open mode counts as admin)."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from assistant.server.security import requires


def add_routes(app: FastAPI, *, public: bool) -> None:
    guard = [] if public else [Depends(requires("admin"))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="assistant")
