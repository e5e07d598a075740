"""Backpressure on slow clients, over a real socket: the app runs under uvicorn (its default
websockets-sansio protocol, whose ``send`` waits while the transport's write buffer is above its
high-water mark) on a loopback port, with the real Redis store and a small send queue.

A client with a tiny receive buffer that never reads must be dropped with 4008 / ``slow_client``
while the server holds at most ``send_queue_events`` events for it (the rest of the reply is not
queued), the server must stay healthy, and the interrupted turn must be stored. A client that does
read must get a long reply whole, with the same small queue (a burst of deltas is not slowness).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from adapters.memory.redis import RedisSessionStore
from assistant.config import LLMSettings, PromptSettings, ServerSettings, Settings
from assistant.server import realtime as realtime_module
from assistant.server.app import create_app
from assistant.server.outbox import CLOSE_SLOW_CLIENT, Outbox
from assistant.testing.language_models import ScriptedLM
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

SEND_QUEUE = 16  # the smallest bound the settings allow
REPLY_WORDS = 8000  # one text delta per word: ~8,000 events, ~1 MB on the wire
REPLY = " ".join(f"w{i}" for i in range(REPLY_WORDS))
WAIT_S = 30.0  # every wait is bounded by this; a passing run takes a few seconds in all
MAX_TURNS = 12  # ~2 MB on the wire each: more than the kernel's socket buffers hold


@pytest.fixture
def connections(monkeypatch) -> list[Outbox]:
    """The server's realtime connections' outboxes, each recording the most events it held."""
    made: list[Outbox] = []

    class Recording(Outbox):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.max_outbox = 0
            self.gave_up_at: float | None = None
            made.append(self)

        def emit(self, event: object) -> None:
            was_closed = self.closed
            super().emit(event)
            self.max_outbox = max(self.max_outbox, len(self))
            if self.closed and not was_closed and self.gave_up_at is None:
                self.gave_up_at = time.perf_counter()

    monkeypatch.setattr(realtime_module, "Outbox", Recording)
    return made


@dataclass
class Served:
    port: int
    server: uvicorn.Server
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


@contextlib.asynccontextmanager
async def serve(redis_url: str, reply: str) -> AsyncIterator[Served]:
    """The app under a real uvicorn server on a free loopback port, in this event loop."""
    settings = Settings(
        redis_url=redis_url,
        llm=LLMSettings(adapter="scripted", max_new_tokens=8192),
        prompt=PromptSettings(context_tokens=1024),  # the scripted model's 4,096 minus the reply
        server=ServerSettings(send_queue_events=SEND_QUEUE, gc_freeze=False),
    )
    store = RedisSessionStore.from_url(redis_url)
    app = create_app(settings, llm=ScriptedLM(reply), store=store)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws_ping_interval=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))

    def started() -> bool:
        assert not task.done(), "the server stopped at start-up"
        return server.started

    try:
        await wait_for_async(started, timeout_s=WAIT_S, what="uvicorn to start")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield Served(port, server, http)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, WAIT_S)
        await store.aclose()
        listener.close()


@dataclass
class RawClient:
    """A WebSocket client on a plain non-blocking socket (websockets' sans-I/O protocol): it
    reads from the socket only when asked, so the kernel buffers are all that stands between the
    server and a client that does not read."""

    sock: socket.socket
    protocol: ClientProtocol
    frames: list[Frame | Response] = field(default_factory=list)
    received_bytes: int = 0

    @classmethod
    async def connect(cls, url: str, *, rcvbuf: int | None = None) -> RawClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if rcvbuf is not None:  # before connecting: it sets the window the peer may fill
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        uri = parse_uri(url)
        await loop.sock_connect(sock, (uri.host, uri.port))
        client = cls(sock, ClientProtocol(uri, max_size=None))
        client.protocol.send_request(client.protocol.connect())
        await client._flush()
        async with asyncio.timeout(WAIT_S):
            while client.protocol.state is State.CONNECTING:
                await client._read()
        handshake = client.frames.pop(0)
        assert isinstance(handshake, Response) and handshake.status_code == 101, handshake
        return client

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await asyncio.get_running_loop().sock_sendall(self.sock, chunk)

    async def _read(self) -> bool:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        self.received_bytes += len(data)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.frames.extend(self.protocol.events_received())
        await self._flush()  # e.g. the reply to a close frame
        return bool(data)

    async def send(self, event: dict) -> None:
        self.protocol.send_text(json.dumps(event).encode())
        await self._flush()

    async def next_frame(self) -> Frame:
        """The next frame the server sent (a close frame included), reading as needed."""
        async with asyncio.timeout(WAIT_S):
            while not self.frames:
                if not await self._read():
                    raise ConnectionError("the server closed the socket without a close frame")
        frame = self.frames.pop(0)
        assert isinstance(frame, Frame)
        return frame

    async def next_event(self) -> dict:
        frame = await self.next_frame()
        assert frame.opcode is Opcode.TEXT, f"expected an event, got {frame}"
        return json.loads(frame.data)

    def close(self) -> None:
        self.sock.close()


def user_turn(text: str) -> list[dict]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return [{"type": "conversation.item.create", "item": item}, {"type": "response.create"}]


SLOW_CLIENT = 'assistant_errors_total{code="slow_client"}'
CONNECTIONS = "assistant_ws_connections"


async def metrics(served: Served) -> dict[str, float]:
    """The server's Prometheus samples, by name with labels."""
    text = (await served.http.get("/metrics")).text
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def responses_finished(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("assistant_responses_total{"))


async def normal_turn(served: Served, text: str) -> dict:
    """A whole text turn by an ordinary client (websockets' asyncio client, reading as it goes)."""
    from websockets.asyncio.client import connect

    async with asyncio.timeout(WAIT_S):
        async with connect(served.ws_url, ping_interval=None, max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            for event in user_turn(text):
                await ws.send(json.dumps(event))
            deltas: list[str] = []
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                assert event["type"] != "error", event
                if event["type"] == "response.output_text.delta":
                    deltas.append(event["delta"])
            assert event["response"]["status"] == "completed", event["response"]
            assert "".join(deltas) == REPLY
            return event


async def test_a_client_that_does_not_read_is_dropped_with_4008_and_bounded_memory(
    redis_url, connections
):
    async with serve(redis_url, REPLY) as served:
        slow = await RawClient.connect(served.ws_url, rcvbuf=4096)
        try:
            created = await slow.next_event()
            assert created["type"] == "session.created"
            session_id = created["session"]["id"]
            (connection,) = connections

            # The client never reads. The kernel's socket buffers take the first megabytes (the
            # server's send buffer grows to net.ipv4.tcp_wmem's maximum, 4 MB by default), so
            # turns follow one another, each as the last one ends, until uvicorn's flow control
            # stalls the sender, the outbox fills and the server gives up.
            started = time.perf_counter()
            turns = 0

            async def dropped() -> bool:
                """Whether the server gave up on the client; if not, the next turn once the
                last one ended."""
                nonlocal turns
                samples = await metrics(served)
                if samples.get(SLOW_CLIENT, 0) >= 1:
                    return True
                if responses_finished(samples) == turns:
                    assert turns < MAX_TURNS, f"still not dropped after {turns} long replies"
                    for event in user_turn(f"turn {turns}"):
                        await slow.send(event)
                    turns += 1
                return False

            await wait_for_async(dropped, timeout_s=WAIT_S, what="the slow client to be dropped")
            assert connection.gave_up_at is not None
            detection_s = connection.gave_up_at - started
            (protocol,) = [
                c
                for c in served.server.server_state.connections
                if isinstance(c, WebSocketsSansIOProtocol)
            ]
            transport = protocol.transport
            stuck_bytes = transport.get_write_buffer_size()
            low, high = transport.get_write_buffer_limits()
            server_sock = transport.get_extra_info("socket")
            sndbuf = server_sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            rcvbuf = slow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            # The server's own memory for the client: the outbox never held more than the bound,
            # and the transport's buffer stopped one event past its high-water mark. (Above the
            # low-water mark: the sender was stalled by flow control, not outrun by a burst.)
            assert connection.max_outbox <= SEND_QUEUE
            assert low < stuck_bytes <= high + 1024

            # The server stays healthy (the slow client still connected): a whole turn for
            # another client, a health check.
            await normal_turn(served, "and now me")
            assert (await served.http.get("/healthz")).json()["status"] == "ok"

            # Only now does the slow client read: what the buffers held, then the close frame.
            events: list[dict] = []
            while (frame := await slow.next_frame()).opcode is Opcode.TEXT:
                events.append(json.loads(frame.data))
            assert frame.opcode is Opcode.CLOSE
            close = Close.parse(frame.data)
            assert (close.code, close.reason) == (CLOSE_SLOW_CLIENT, "slow_client")
            kinds = [e["type"] for e in events]
            deltas = kinds.count("response.output_text.delta")
            print(
                f"\nslow client: dropped {detection_s * 1000:.0f} ms after its first turn, in turn "
                f"{turns}; {len(events)} events ({deltas} deltas, {slow.received_bytes} bytes) "
                f"before the close; outbox peak {connection.max_outbox}/{SEND_QUEUE}; "
                f"transport buffer {stuck_bytes} B (high water {high}); "
                f"server SO_SNDBUF {sndbuf}, client SO_RCVBUF {rcvbuf}"
            )
            assert kinds.count("response.done") < turns  # the last response was not finished
            assert deltas < turns * REPLY_WORDS
            # All the client got is what the socket buffers held when the server gave up, plus
            # the frame the sender was writing: the rest of the reply was never queued.
            assert slow.received_bytes <= rcvbuf + sndbuf + stuck_bytes + 4096
        finally:
            slow.close()

        # Once the close was delivered, the server let the connection go.
        async def no_connections() -> bool:
            return (await metrics(served))[CONNECTIONS] <= 0

        await wait_for_async(no_connections, timeout_s=WAIT_S, what="no connection to be left")

        # Every turn is stored, the last reply as far as it went.
        stored = (await served.http.get(f"/v1/sessions/{session_id}/messages")).json()["data"]
        users = [m["content"][0]["text"] for m in stored if m["role"] == "user"]
        assert users == [f"turn {i}" for i in range(turns)]
        replies = [m for m in stored if m["role"] == "assistant"]
        assert [m["status"] for m in replies[: turns - 1]] == ["completed"] * (turns - 1)
        assert all(m["content"][0]["text"] == REPLY for m in replies[: turns - 1])
        if len(replies) == turns:  # (none when the server gave up before the first delta)
            last = replies[-1]
            assert REPLY.startswith(last["content"][0]["text"])
            assert last["status"] == "interrupted", last["status"]


async def test_a_client_that_reads_gets_a_long_reply_whole(redis_url, connections):
    """The model writes its deltas faster than the event loop turns: a burst of thousands of
    events with nothing awaited in between. The sender must get to write them before the outbox
    is full: a client that reads is not slow."""
    async with serve(redis_url, REPLY) as served:
        done = await normal_turn(served, "tell me everything")
        (connection,) = connections
        print(
            f"\nreading client: {done['response']['usage']['output_tokens']} deltas, "
            f"outbox peak {connection.max_outbox}/{SEND_QUEUE}"
        )
        assert connection.gave_up_at is None
        assert (await metrics(served)).get(SLOW_CLIENT, 0) == 0
