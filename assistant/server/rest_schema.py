"""What the REST routes answer, as the OpenAPI schema (``/openapi.json``) tells it: their bodies
as models, the error envelope (``{"error": {type, code, message, param}}``) under each status a route
may answer with, and the multipart form of the transcription upload. The fuzzer checks every
answer against this schema (``tests/integration/test_fuzz_rest.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from assistant.messages import Message, SessionInfo


class ErrorDetail(BaseModel):
    type: str
    code: str  # a code of the one tree (assistant/errors.py)
    message: str
    #: The request's parameter at fault (``messages[0].content``, OpenAI's ``param``), if known.
    param: str | None = None
    #: ``rate_limit_error``: seconds until the limit lets the request through (also Retry-After).
    retry_after_s: float | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


#: The HTTP status of each error ``type`` (``rest.error_response``), described for the schema.
_ERROR_STATUSES: dict[int, str] = {
    400: "The request is invalid (`invalid_request_error`)",
    401: "No credentials, or ones the server does not accept (`authentication_error`)",
    403: "The key lacks the scope, or the page's origin is not allowed",
    404: "Not found (`not_found_error`), or another tenant's",
    409: "A conflict (`conflict_error`)",
    413: "The body is larger than the route takes (`request_too_large`, `server.body_limit`)",
    429: "A limit of the key was reached (`rate_limit_error`; `Retry-After`)",
    500: "The server is misconfigured (`configuration_error`)",
    503: "A backend failed: the store or a model (`server_error`)",
}
#: What any route behind a key may answer: the caller checked, one request counted.
AUTH_ERRORS = (401, 403, 429)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the error envelope under each of ``statuses``."""
    return {s: {"model": ErrorBody, "description": _ERROR_STATUSES[s]} for s in statuses}


class SessionMessages(BaseModel):
    object: Literal["list"] = "list"
    session: SessionInfo
    data: list[Message]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    store: bool
    model: str


class ModelReadiness(BaseModel):
    name: str
    loaded: bool


class Readiness(BaseModel):
    ready: bool
    store: bool
    model: ModelReadiness


class Transcription(BaseModel):
    """``json``: ``text`` only; ``verbose_json`` adds the others."""

    text: str
    task: Literal["transcribe"] | None = None
    language: str | None = None
    duration: float | None = None


PLAIN_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition", **PLAIN_TEXT},
    **errors(*AUTH_ERRORS),
}
READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "Not ready: the store does not answer"},
}
TRANSCRIPTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Transcription, "description": "The transcript (`text` with response_format=text)", **PLAIN_TEXT},
    **errors(400, *AUTH_ERRORS, 413, 500, 503),
}  # fmt: skip
#: ``openapi_extra`` of the upload: the route reads its form itself (limits checked first).
TRANSCRIPTION_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "language": {"type": "string"},
                        "prompt": {"type": "string"},
                        "response_format": {"type": "string", "enum": ["json", "text", "verbose_json"]},
                    },
                },
            },
        },
    },
}  # fmt: skip
