"""REST routes: stored history, health and readiness, metrics; audio transcription (voice).
Every route that touches a session reads it through the caller's tenant: another tenant's
session is not found (404, which does not confirm that it exists)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from assistant.auth.principal import Principal
from assistant.errors import (
    AssistantError,
    InvalidRequestError,
    MissingDependencyError,
    SessionNotFoundError,
    shown,
)
from assistant.server.metrics import CONTENT_TYPE_LATEST
from assistant.server.rest_schema import (
    AUTH_ERRORS,
    METRICS_RESPONSES,
    READINESS_RESPONSES,
    TRANSCRIPTION_FORM,
    TRANSCRIPTION_RESPONSES,
    Health,
    Readiness,
    SessionMessages,
    errors,
)
from assistant.server.security import caller, check_session, requires

router = APIRouter()

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"

_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "rate_limit_error": 429,
    "not_found_error": 404,
    "conflict_error": 409,
    "configuration_error": 500,
    "server_error": 503,
}


def error_detail(exc: AssistantError) -> dict[str, object]:
    return {"type": exc.type, "code": exc.code, "message": exc.message,
            "param": getattr(exc, "param", None)}  # fmt: skip


def error_response(exc: AssistantError) -> JSONResponse:
    body = {"error": error_detail(exc)}
    status = _STATUS_BY_TYPE.get(exc.type, 500)
    if exc.code == "origin_not_allowed":
        status = 403
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
        body["error"]["retry_after_s"] = retry
    return JSONResponse(body, status_code=status, headers=headers)


@router.get(
    "/v1/sessions/{session_id}/messages",
    response_model=SessionMessages,
    responses=errors(*AUTH_ERRORS, 404, 503),
)
async def session_messages(
    session_id: str, request: Request, principal: Principal = Depends(caller)
) -> JSONResponse:
    """The stored history of a session: its metadata and every message with content parts and
    status (``completed``, ``incomplete`` or ``interrupted``)."""
    check_session(principal, session_id)
    store = request.app.state.components.store.for_tenant(principal.tenant)
    snapshot = await store.load(session_id)
    if snapshot is None:
        raise SessionNotFoundError(f"no session {shown(session_id)} (it may have expired)")
    return JSONResponse(
        {
            "object": "list",
            "session": snapshot.info.model_dump(mode="json"),
            "data": [m.model_dump(mode="json") for m in snapshot.messages],
        }
    )


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers (200 while it runs; ``degraded`` when Redis is not)."""
    components = request.app.state.components
    store_ok = await components.store.ping()
    body = {
        "status": "ok" if store_ok else "degraded", "store": store_ok,
        "model": components.llm.name, "worker": os.getpid(),
    }  # fmt: skip
    return JSONResponse(body)


@router.get("/readyz", response_model=Readiness, responses=READINESS_RESPONSES)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: Redis answers and the model is loaded (503 otherwise), each reported."""
    components = request.app.state.components
    store_ok = await components.store.ping()
    body = {"ready": store_ok, "store": store_ok, "model": {"name": components.llm.name, "loaded": True}}
    return JSONResponse(body, status_code=200 if store_ok else 503)


async def _metrics_guard(request: Request) -> None:
    if not request.app.state.settings.auth.public_metrics:
        await requires("admin")(request)


@router.get(
    "/metrics", dependencies=[Depends(_metrics_guard)], response_class=Response,
    responses=METRICS_RESPONSES,
)  # fmt: skip
async def metrics(request: Request) -> Response:
    """Prometheus text; an admin key unless ``ASSISTANT_AUTH__PUBLIC_METRICS``."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


# -- OpenAI-compatible transcription of an uploaded audio file ------------------------------------


@router.post(
    TRANSCRIPTIONS_PATH, response_model=None, responses=TRANSCRIPTION_RESPONSES,
    openapi_extra=TRANSCRIPTION_FORM,
)  # fmt: skip
async def audio_transcriptions(
    request: Request, principal: Principal = Depends(requires("client"))
) -> Response:
    """A multipart form as OpenAI's: ``file`` (WAV, WebM/Opus, OGG, MP3, ...), optional
    ``language``, ``prompt``, ``response_format`` (``json`` -> ``{"text"}``, ``text``,
    ``verbose_json`` -> ``{"text", "language", "duration"}``); ``model`` is accepted and ignored
    (the server's configured model answers)."""
    from assistant.voice.uploads import transcribe_file

    speech = request.app.state.components.speech
    if speech is None:
        raise InvalidRequestError("audio is not enabled on this server", code="unsupported_content")
    limits = speech.limits
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes + 64 * 1024:
        limits.check_bytes(int(declared))  # refused before reading the body
    fields = await _read_form(request)
    response_format = str(fields.get("response_format") or "json")
    if response_format not in ("json", "text", "verbose_json"):
        raise InvalidRequestError(
            f"response_format {response_format!r} is not supported; use json, text or verbose_json",
            code="unsupported_response_format",
        )
    upload = fields.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidRequestError("the form has no 'file' part", code="invalid_audio")
    data = await upload.read()
    transcript = await transcribe_file(
        await speech.stt(),
        data,
        limits=limits,
        language=str(fields.get("language") or "") or None,
        prompt=str(fields.get("prompt") or "") or None,
    )
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    body: dict[str, object] = {"text": transcript.text}
    if response_format == "verbose_json":
        body.update(
            task="transcribe", language=transcript.language, duration=transcript.duration_s
        )
    return JSONResponse(body)


async def _read_form(request: Request) -> dict[str, object]:
    try:
        form = await request.form()
    except AssertionError as exc:  # Starlette: python-multipart is not installed
        raise MissingDependencyError(f"form uploads need python-multipart: {exc}") from exc
    except Exception as exc:  # a malformed multipart body
        raise InvalidRequestError(f"cannot read the form: {exc}", code="invalid_request") from exc
    return dict(form.items())
