"""A closed connection is freed by reference counting as it closes, with the cyclic collector off:
the server tunes the collector to run rarely (``ServerSettings.gc_threshold``), and the soak found
every closed WebSocket connection (its RealtimeConnection and collaborators, its HTTP protocol
with httptools' parser, their transport) kept in reference cycles until the next full pass: ~5 a
second per worker, the workers' RSS creeping 3 MB a minute."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import uvicorn
import websockets
from fastapi.testclient import TestClient

from assistant.config import Settings
from assistant.server.app import create_app
from assistant.server.http_protocol import HeaderTimeoutProtocol, http_protocol
from assistant.server.outbox import Outbox
from assistant.server.realtime import RealtimeConnection
from assistant.server.responses import Responses
from assistant.server.voice_session import VoiceSession
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.processes import free_port
from tests.support.waiting import wait_for, wait_for_async
from tests.support.ws import until


@pytest.fixture
def no_collector():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def recording(monkeypatch, cls, method: str) -> list[weakref.ref]:
    """Weak references to every ``cls`` whose ``method`` runs (``__init__``, ``connection_made``)."""
    refs: list[weakref.ref] = []
    original = getattr(cls, method)

    def wrapper(self, *args, **kwargs):
        refs.append(weakref.ref(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapper)
    return refs


def test_a_closed_realtime_connection_is_freed_without_the_collector(monkeypatch, no_collector):
    refs = [recording(monkeypatch, cls, "__init__") for cls in (RealtimeConnection, Responses,
                                                                  VoiceSession, Outbox)]  # fmt: skip
    app = create_app(Settings(), llm=ScriptedLM(), store=MemoryStore())
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    with TestClient(app) as client:
        with client.websocket_connect("/v1/realtime") as ws:
            ws.receive_json()
            ws.send_json({"type": "conversation.item.create", "item": item})
            ws.send_json({"type": "response.create"})
            until(ws, "response.done")
            assert all(len(made) == 1 and made[0]() is not None for made in refs)
        wait_for(lambda: all(made[0]() is None for made in refs),
                 what=lambda: f"the closed connection freed: {[made[0]() for made in refs]}")  # fmt: skip


async def test_an_upgraded_http_protocol_is_freed_without_the_collector(monkeypatch, no_collector):
    refs = recording(monkeypatch, HeaderTimeoutProtocol, "connection_made")

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", http=http_protocol(5.0))  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await wait_for_async(lambda: server.started, what="uvicorn serving")
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("hello")
        assert len(refs) == 1
        await wait_for_async(lambda: refs[0]() is None, what="the upgraded HTTP protocol freed")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
