"""The FastAPI app factory. It is the one place that reads the environment (through ``Settings``);
its lifespan builds the components (``server.components``) and closes them."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import WebSocketRoute

from assistant.config import Settings
from assistant.errors import AssistantError, InvalidJSONError, InvalidRequestError
from assistant.handoff.runtime import start_handoff
from assistant.ports import LanguageModel, SessionStore, SpeechToText, TextToSpeech, VoiceActivity
from assistant.ports.keys import KeyStore
from assistant.ports.limits import Limiter
from assistant.protocol.client import describe_problems
from assistant.server import docs, logs
from assistant.server.agent_page import router as agent_page_router
from assistant.server.auth_routes import router as auth_router
from assistant.server.body_limit import BodyLimit, upload_body_limit
from assistant.server.components import Components, Injected, build_components
from assistant.server.conversation_routes import router as conversation_router
from assistant.server.cors import KeyOriginsCORS
from assistant.server.knowledge_routes import DOCUMENTS_PATH_PATTERN, documents_body_limit
from assistant.server.knowledge_routes import router as knowledge_router
from assistant.server.metrics import Metrics
from assistant.server.openai_routes import CHAT_COMPLETIONS_PATH, chat_body_limit
from assistant.server.openai_routes import router as openai_router
from assistant.server.openai_schema import problem_param
from assistant.server.realtime_route import CLOSE_POLICY, CLOSE_SESSION_NOT_FOUND, RealtimeEndpoint
from assistant.server.request_ids import RequestIds
from assistant.server.rest import TRANSCRIPTIONS_PATH, error_response, router
from assistant.server.web import router as web_router
from assistant.server.webhook_routes import router as webhook_router
from assistant.webhooks.runtime import start_webhooks

__all__ = ["CLOSE_POLICY", "CLOSE_SESSION_NOT_FOUND", "Components", "app_from_env", "create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    llm: LanguageModel | None = None,
    store: SessionStore | None = None,
    stt: SpeechToText | None = None,
    vad: VoiceActivity | None = None,
    tts: TextToSpeech | None = None,
    keys: KeyStore | None = None,
    limiter: Limiter | None = None,
) -> FastAPI:
    """Build the app. Adapters passed in are used as they are (and not closed); the others are
    built from ``settings`` when the app starts and closed when it stops."""
    settings = settings or Settings()
    given = Injected(llm=llm, store=store, stt=stt, vad=vad, tts=tts, keys=keys, limiter=limiter)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.components = await build_components(settings, given, stack)
            components = app.state.components
            components.webhooks = await start_webhooks(settings, components.store, stack)
            components.handoff = await start_handoff(
                settings, components.store, components.orchestrator, components.webhooks, stack
            )
            if components.completions is not None:
                components.completions.handoff = components.handoff.handoff
            _tune_gc(settings)
            yield

    # The docs routes are added by ``docs`` (public or behind an admin key).
    app = FastAPI(
        title="assistant", version="0.1.0", lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )  # fmt: skip
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.include_router(router)
    app.include_router(auth_router)
    app.include_router(web_router)  # widget.js and the demo page at /
    app.include_router(agent_page_router)  # the agent console at /agent
    app.include_router(openai_router)
    app.include_router(webhook_router)
    app.include_router(knowledge_router)
    app.include_router(conversation_router)
    docs.add_routes(app, public=settings.auth.public_docs)
    app.add_middleware(KeyOriginsCORS)
    app.add_middleware(
        BodyLimit,
        route_limits={
            TRANSCRIPTIONS_PATH: upload_body_limit(settings.voice.max_upload_bytes),
            CHAT_COMPLETIONS_PATH: chat_body_limit(settings),
            DOCUMENTS_PATH_PATTERN: documents_body_limit(settings),
        },
    )
    app.add_middleware(RequestIds)
    logs.install_filter()

    @app.exception_handler(AssistantError)
    async def _assistant_error(_: Request, exc: AssistantError):  # type: ignore[no-untyped-def]
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # type: ignore[no-untyped-def]
        if exc.status_code == 400:  # FastAPI: a body it cannot parse (not UTF-8, ...)
            return error_response(InvalidJSONError(f"the body cannot be read: {exc.detail}"))
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        error = InvalidRequestError(_describe(exc), code="invalid_request", param=_param(exc))
        return error_response(error)

    app.router.routes.append(WebSocketRoute("/v1/realtime", RealtimeEndpoint()))
    return app


def _describe(exc: RequestValidationError) -> str:
    return "invalid request: " + describe_problems(exc.errors(), whole="body")


def _param(exc: RequestValidationError) -> str | None:
    """The first bad field of a body, as OpenAI names one (``messages[0].content``)."""
    problems = exc.errors()
    return problem_param(problems[0].get("loc", ())) if problems else None


def _tune_gc(settings: Settings) -> None:
    """See ``ServerSettings.gc_freeze`` and ``gc_threshold``: with a thousand sessions the
    collector's walks over long-lived objects cost the server a third of its CPU."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(settings.server.gc_threshold, gen1, gen2)
    if settings.server.gc_freeze:
        gc.collect()
        gc.freeze()


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(Settings())
