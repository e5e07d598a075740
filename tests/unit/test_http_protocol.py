"""The request-header deadline (``assistant.server.http_protocol``) under a real uvicorn server in
this event loop, on a loopback port: headers that come whole in time are served, even slowly and
in pieces, and so is a response that takes longer than the deadline; headers still coming at the
deadline get a 408 and the connection is closed. The class is found again by name in another
process (uvicorn's own workers unpickle it)."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import subprocess
import sys
import time

import pytest
import uvicorn

from assistant.config import ServerSettings
from assistant.server.http_protocol import HeaderTimeoutProtocol, http_protocol, uvicorn_options
from tests.support.processes import free_port

DEADLINE_S = 0.3


@contextlib.asynccontextmanager
async def serving(app, header_timeout_s: float = DEADLINE_S):
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", http=http_protocol(header_timeout_s))  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def plain_app(release: asyncio.Event | None = None):
    async def app(scope, receive, send):
        if release is not None:
            await release.wait()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def read_all(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    async with asyncio.timeout(10):
        data = await reader.read()  # until the server closes
    return data, time.monotonic()


def test_the_options_carry_the_setting():
    cls = uvicorn_options(ServerSettings(header_timeout_s=2.5))["http"]
    assert issubclass(cls, HeaderTimeoutProtocol) and cls.header_timeout_s == 2.5
    assert http_protocol(2.5) is cls
    assert uvicorn_options(ServerSettings())["http"].header_timeout_s == 10.0  # the default


def test_the_class_is_found_again_in_another_process():
    data = pickle.dumps(http_protocol(0.75))
    probe = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).header_timeout_s)"
    out = subprocess.run([sys.executable, "-c", probe], input=data, capture_output=True,
                         check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == b"0.75"


async def test_headers_still_coming_at_the_deadline_get_a_408_and_the_connection_closes():
    async with serving(plain_app()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        data, closed_at = await read_all(reader)
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert DEADLINE_S - 0.05 <= closed_at - started < DEADLINE_S + 1


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer():
    async with serving(plain_app()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data, _ = await read_all(reader)
        writer.close()
    assert data == b""


async def test_headers_in_pieces_within_the_deadline_and_a_slow_response_are_served():
    release = asyncio.Event()
    async with serving(plain_app(release)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")
        await writer.drain()
        writer.write(b"Host: x\r\n\r\n")  # whole, in time
        await writer.drain()
        await asyncio.sleep(DEADLINE_S * 2)  # the app takes longer than the deadline (under test)
        release.set()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(2)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"ok"


async def test_zero_is_no_deadline():
    async with serving(plain_app(), header_timeout_s=0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(DEADLINE_S * 3):  # nothing closes it (the behaviour)
                await reader.read()
        writer.write(b"\r\n")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ")
