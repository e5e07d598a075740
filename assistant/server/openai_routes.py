"""OpenAI-compatible REST: ``POST /v1/chat/completions``, ``GET /v1/models`` and
``GET /v1/models/{model_id}``, so OpenAI's clients (and LangChain's ``ChatOpenAI``) talk to the
configured model. Auth and limits as the other routes: a ``client`` key, one request counted, then
for a completion the key's tokens left this minute and a generating place, held until the reply
ends; its tokens are counted then. Errors in the one envelope, with ``param`` when known.

A completion is stateless (nothing of it is stored), unless it names a stored session of the
caller's tenant: ``X-Session-Id: <id>`` (an unknown one is 404 ``session_not_found``), or a
``user`` field that is such a session's id. Then its new turn and the reply are stored in that
session, the prompt comes from the session's history, and a WebSocket client of the same session
sees the exchange (``assistant.completions``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import PurePath

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from assistant.auth.keys import parse_key
from assistant.auth.principal import Principal
from assistant.auth.tokens import PREFIX as CLIENT_SECRET_PREFIX
from assistant.completions import Completion, Completions
from assistant.config import Settings
from assistant.errors import AuthenticationError, ModelNotFoundError, SessionNotFoundError, shown
from assistant.orchestrator import ResponseOverrides
from assistant.server.openai_schema import (
    COMPLETION_OK,
    CompletionRequest,
    ModelCard,
    ModelList,
    to_messages,
)
from assistant.server.openai_stream import CompletionAnswer
from assistant.server.rest_schema import AUTH_ERRORS, errors
from assistant.server.security import authenticate, bearer, check_session, requires

log = logging.getLogger(__name__)

router = APIRouter()

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
SESSION_HEADER = "x-session-id"
#: The served id of the default model (the prepared SmolLM2-135M-Instruct).
DEFAULT_MODEL_ID = "smollm2-135m-instruct"


def served_model_id(settings: Settings) -> str:
    """The model's id on ``/v1/models``: ``llm.served_name``, else the configured model's name
    (a hub id as it is, a local directory's last part), else the default model's or adapter's."""
    llm = settings.llm
    if llm.served_name:
        return llm.served_name
    if llm.model and llm.adapter != "scripted":  # the scripted adapter's ``model`` is its reply
        local = llm.model.startswith(("/", ".", "~"))
        return PurePath(llm.model).name if local else llm.model
    return DEFAULT_MODEL_ID if llm.adapter == "transformers_local" else llm.adapter


def chat_body_limit(settings: Settings) -> int:
    """The largest body ``POST /v1/chat/completions`` takes: an image and an audio file at their
    limits, base64 (4/3), and 1 MiB of text and JSON."""
    raw = settings.vision.max_image_bytes + settings.voice.max_upload_bytes
    return raw * 4 // 3 + 1024 * 1024


async def openai_caller(request: Request) -> Principal:
    """Route dependency: a caller with the ``client`` scope. In open mode a bearer that is none
    of this server's credentials (OpenAI's clients always send an ``api_key``) counts as none;
    a malformed or revoked ``sk_``/``pk_`` key, or a bad client secret, is still refused."""
    try:
        return await requires("client")(request)
    except AuthenticationError as exc:
        components = request.app.state.components
        credential = bearer(request.headers) or ""
        foreign = parse_key(credential) is None and not credential.startswith(CLIENT_SECRET_PREFIX)
        if exc.code != "invalid_api_key" or not components.auth.open_mode or not foreign:
            raise
    principal = await authenticate(
        components.auth, components.limits, None, request.headers.get("origin")
    )
    request.state.principal = principal
    return principal


def _card(request: Request) -> ModelCard:
    settings: Settings = request.app.state.settings
    completions: Completions = request.app.state.components.completions
    return ModelCard(
        id=served_model_id(settings), created=completions.created, owned_by=settings.llm.adapter
    )


@router.get("/v1/models", response_model=ModelList, responses=errors(*AUTH_ERRORS))
async def list_models(request: Request, _: Principal = Depends(openai_caller)) -> JSONResponse:
    """The model this server serves, as OpenAI lists models."""
    return JSONResponse(ModelList(data=[_card(request)]).model_dump())


@router.get("/v1/models/{model_id}", response_model=ModelCard, responses=errors(*AUTH_ERRORS, 404))
async def get_model(
    model_id: str, request: Request, _: Principal = Depends(openai_caller)
) -> JSONResponse:
    """The served model by its id; any other id is 404 ``model_not_found``."""
    card = _card(request)
    if model_id != card.id:
        raise _no_model(model_id, card.id)
    return JSONResponse(card.model_dump())


def _no_model(model_id: str, served: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"the model {shown(model_id)} does not exist; this server serves {served!r}", param="model"
    )


@router.post(
    CHAT_COMPLETIONS_PATH, response_model=None,
    responses={**COMPLETION_OK, **errors(400, *AUTH_ERRORS, 404, 409, 413, 500, 503)},
)  # fmt: skip
async def chat_completions(
    body: CompletionRequest, request: Request, principal: Principal = Depends(openai_caller)
) -> CompletionAnswer:
    """A chat completion as OpenAI's: ``messages`` with text, ``image_url`` (data URLs) and
    ``input_audio`` parts; ``stream`` for server-sent events. See the README for what is not
    supported (a 400 naming the parameter)."""
    refusal = body.refusal()
    if refusal is not None:
        raise refusal
    settings: Settings = request.app.state.settings
    model = served_model_id(settings)
    if body.model is not None and body.model != model:
        raise _no_model(body.model, model)
    messages = to_messages(body)
    components = request.app.state.components
    completions: Completions = components.completions.for_tenant(principal.tenant)
    session_id = await _session_of(request, body, principal, completions)
    overrides = ResponseOverrides(
        max_output_tokens=body.reply_tokens(), temperature=body.temperature, top_p=body.top_p,
        stop=body.stops(),
    )  # fmt: skip
    limits = components.limits
    places = contextlib.AsyncExitStack()
    await limits.before_generation(principal)
    await places.enter_async_context(limits.generation(principal))
    try:
        completion = await completions.start(messages, overrides, session_id=session_id)
    except BaseException:
        await places.aclose()
        raise

    async def ended(completion: Completion, status: str) -> None:
        await places.aclose()
        await limits.count_tokens(principal, completion.usage.output_tokens)
        request.app.state.metrics.response(status, completion.usage.output_tokens)
        if status == "cancelled":
            log.info("chat completion %s cancelled: the client went away", completion.id)

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return CompletionAnswer(
        completion, model=model, stream=bool(body.stream), include_usage=include_usage,
        ended=ended,
    )  # fmt: skip


async def _session_of(
    request: Request, body: CompletionRequest, principal: Principal, completions: Completions
) -> str | None:
    """The stored session the completion is tied to, if any (see the module's docstring)."""
    session_id = request.headers.get(SESSION_HEADER) or principal.session_id
    if session_id:
        check_session(principal, session_id)
        return session_id  # an unknown one: session_not_found from the completion's start
    if body.user and body.user.startswith("sess_"):
        with contextlib.suppress(SessionNotFoundError):
            await completions.orchestrator.open_session(body.user)
            return body.user
    return None


__all__ = ["CHAT_COMPLETIONS_PATH", "chat_body_limit", "router", "served_model_id"]
