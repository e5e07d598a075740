"""REST routes: stored history, health and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistant.errors import AssistantError, SessionNotFoundError
from assistant.server.metrics import CONTENT_TYPE_LATEST

router = APIRouter()

_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "not_found_error": 404,
    "conflict_error": 409,
    "configuration_error": 500,
    "server_error": 503,
}


def error_response(exc: AssistantError) -> JSONResponse:
    body = {"error": {"type": exc.type, "code": exc.code, "message": exc.message}}
    return JSONResponse(body, status_code=_STATUS_BY_TYPE.get(exc.type, 500))


@router.get("/v1/sessions/{session_id}/messages")
async def session_messages(session_id: str, request: Request) -> JSONResponse:
    """The stored history of a session: its metadata and every message with content parts and
    status (``completed``, ``incomplete`` or ``interrupted``)."""
    store = request.app.state.components.store
    snapshot = await store.load(session_id)
    if snapshot is None:
        raise SessionNotFoundError(f"no session {session_id!r} (it may have expired)")
    return JSONResponse(
        {
            "object": "list",
            "session": snapshot.info.model_dump(mode="json"),
            "data": [m.model_dump(mode="json") for m in snapshot.messages],
        }
    )


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    components = request.app.state.components
    store_ok = await components.store.ping()
    body = {"status": "ok" if store_ok else "degraded", "store": store_ok, "model": components.llm.name}
    return JSONResponse(body, status_code=200 if store_ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
