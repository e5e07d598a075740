"""``/openapi.json``, ``/docs`` and the realtime protocol's AsyncAPI document
(``/v1/realtime/asyncapi.json``): public when ``ASSISTANT_AUTH__PUBLIC_DOCS`` is on, else for an
admin key (open mode counts as admin)."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from assistant.server import asyncapi
from assistant.server.security import requires


def add_routes(app: FastAPI, *, public: bool) -> None:
    guard = [] if public else [Depends(requires("admin"))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="assistant")

    @app.get(asyncapi.DOCUMENT_PATH, include_in_schema=False, dependencies=guard)
    async def realtime_protocol() -> Response:
        # made once per process, on the first request: the same bytes as docs/asyncapi.json
        return Response(asyncapi.render().encode(), media_type="application/json")
