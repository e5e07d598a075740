"""The FastAPI app factory. It is the one place that reads the environment (through ``Settings``);
its lifespan builds the configured adapters (or takes built ones, as tests do) and closes them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request, WebSocket
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from assistant.config import Settings
from assistant.errors import AssistantError, ConfigurationError
from assistant.orchestrator import Orchestrator
from assistant.ports import LanguageModel, SessionStore, SpeechToText, TextToSpeech, VoiceActivity
from assistant.protocol import ErrorEvent
from assistant.registry import (
    build_image_pipeline,
    build_language_model,
    build_session_store,
)
from assistant.server.metrics import Metrics
from assistant.server.realtime import RealtimeConnection
from assistant.server.rest import error_response, router
from assistant.voice.models import SpeechModels

log = logging.getLogger(__name__)

CLOSE_SESSION_NOT_FOUND = 4404


@dataclass
class Components:
    llm: LanguageModel
    store: SessionStore
    orchestrator: Orchestrator
    #: voice: speech to text, VAD and text to speech, built on first use (None: no voice)
    speech: SpeechModels | None = None


def create_app(
    settings: Settings | None = None,
    *,
    llm: LanguageModel | None = None,
    store: SessionStore | None = None,
    stt: SpeechToText | None = None,
    vad: VoiceActivity | None = None,
    tts: TextToSpeech | None = None,
) -> FastAPI:
    """Build the app. Adapters passed in are used as they are (and not closed); the others are
    built from ``settings`` when the app starts and closed when it stops."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.components = await _build(settings, llm, store, stack)
            app.state.components.speech = await _build_speech(settings, stt, vad, tts, stack)
            _tune_gc(settings)
            yield

    app = FastAPI(title="assistant", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.include_router(router)

    @app.exception_handler(AssistantError)
    async def _assistant_error(_: Request, exc: AssistantError):  # type: ignore[no-untyped-def]
        return error_response(exc)

    # A plain ASGI route: the connection sends and receives with the server's own ``send`` and
    # ``receive`` (a WebSocket wrapper around them still does the handshake and the close).
    app.router.routes.append(WebSocketRoute("/v1/realtime", _realtime_endpoint))
    return app


class _RealtimeEndpoint:
    """``/v1/realtime?session_id=...``: a new session, or the given one resumed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await _serve_realtime(ws, ws.query_params.get("session_id"), receive, send)


_realtime_endpoint = _RealtimeEndpoint()


def _tune_gc(settings: Settings) -> None:
    """See ``ServerSettings.gc_freeze`` and ``gc_threshold``: with a thousand sessions the
    collector's walks over long-lived objects cost the server a third of its CPU."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(settings.server.gc_threshold, gen1, gen2)
    if settings.server.gc_freeze:
        gc.collect()
        gc.freeze()


async def _serve_realtime(
    ws: WebSocket, session_id: str | None, receive: Receive, send: Send
) -> None:
    await ws.accept()
    app = ws.app
    components: Components = app.state.components
    try:
        session = await components.orchestrator.open_session(session_id)
    except AssistantError as exc:
        app.state.metrics.error(exc.code)
        await ws.send_text(ErrorEvent.from_exception(exc).model_dump_json())
        await ws.close(CLOSE_SESSION_NOT_FOUND if exc.code == "session_not_found" else 1011)
        return
    connection = RealtimeConnection(
        ws,
        components.orchestrator,
        app.state.metrics,
        app.state.settings.server,
        session,
        speech=components.speech,
        receive=receive,
        send=send,
    )
    await connection.serve()


async def _build(
    settings: Settings,
    llm: LanguageModel | None,
    store: SessionStore | None,
    stack: contextlib.AsyncExitStack,
) -> Components:
    if store is None:
        if not settings.redis_url:
            # One place starts the private redis-server: ``assistant serve``, before any worker.
            raise ConfigurationError(
                "no Redis configured: set ASSISTANT_REDIS_URL=redis://host:port/db, or run "
                "`assistant serve`, which starts a private redis-server when none is set"
            )
        store = build_session_store(settings, redis_url=settings.redis_url)
        stack.push_async_callback(store.aclose)
    if llm is None:
        llm = await asyncio.to_thread(build_language_model, settings)
        stack.push_async_callback(llm.aclose)
    vision_factory = None
    if settings.vision.enabled:
        vision_factory = functools.partial(build_image_pipeline, settings, llm, store)
    orchestrator = Orchestrator(
        llm,
        store,
        llm_settings=settings.llm,
        prompt_settings=settings.prompt,
        memory_settings=settings.memory,
        vision_factory=vision_factory,
    )
    return Components(llm=llm, store=store, orchestrator=orchestrator)


async def _build_speech(
    settings: Settings,
    stt: SpeechToText | None,
    vad: VoiceActivity | None,
    tts: TextToSpeech | None,
    stack: contextlib.AsyncExitStack,
) -> SpeechModels | None:
    """Voice: the models handed in are used as they are; the others are built on first use (or
    now, with ``voice.preload``) and closed when the app stops."""
    if not settings.voice.enabled:
        return None
    speech = SpeechModels(settings, stt=stt, vad=vad, tts=tts)
    stack.push_async_callback(speech.aclose)
    if settings.voice.preload:
        await speech.preload()
    return speech


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(Settings())
