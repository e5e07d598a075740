"""The openai_compatible adapter between two real servers: B, an ``assistant serve`` with the
scripted model (slowed down) answering ``/v1/chat/completions``, and A, an ``assistant serve``
whose model is B. A WebSocket conversation on A is answered by B's model; ``response.cancel`` on
A closes B's stream (B counts the completion cancelled and stores nothing); A pointed at a closed
port answers ``model_error`` and its socket goes on."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from PIL import Image

from tests.support.processes import free_port
from tests.support.server import ServerProcess, serve_env
from tests.support.waiting import wait_for_async
from tests.support.ws import next_event

pytestmark = pytest.mark.integration

#: B's scripted model waits this long before each word: a reply of 200 words takes 10 s, so a
#: cancel after its first word lands while B is still generating.
TOKEN_DELAY_S = "0.05"
LONG = " ".join(f"word{i}" for i in range(200))


def _redis_db(redis_server, db: int) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, redis_server):
    """B: the model server (its own Redis database, db 5)."""
    env = serve_env(
        tmp_path_factory.mktemp("model-server"),
        ASSISTANT_LLM__ADAPTER="scripted",
        ASSISTANT_LLM__TOKEN_DELAY_S=TOKEN_DELAY_S,
        ASSISTANT_REDIS_URL=_redis_db(redis_server, 5),
    )
    with ServerProcess(env, log_level="info") as server:
        yield server


def _gateway_env(data_dir: Path, redis_server, base_url: str, **more: str) -> dict[str, str]:
    return serve_env(
        data_dir,
        ASSISTANT_LLM__ADAPTER="openai_compatible",
        ASSISTANT_LLM__BASE_URL=base_url,
        ASSISTANT_LLM__MODEL="scripted",
        ASSISTANT_REDIS_URL=_redis_db(redis_server, 6),
        **more,
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, redis_server, model_server):
    """A: the gateway whose model is B, sending it images themselves."""
    env = _gateway_env(tmp_path_factory.mktemp("gateway"), redis_server, model_server.url("/v1"),
                       ASSISTANT_LLM__IMAGE_INPUT="true")  # fmt: skip
    with ServerProcess(env) as server:
        yield server


async def _say(ws, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await next_event(ws, "conversation.item.created")


def _metric(server: ServerProcess, line_start: str) -> float:
    text = httpx.get(server.url("/metrics"), timeout=10).text
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to 127.0.0.1:``port`` (``/proc``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


async def _session_keys(redis_server, db: int) -> list[bytes]:
    client = aioredis.from_url(_redis_db(redis_server, db))
    try:
        return [key async for key in client.scan_iter(match="*:s:*")]
    finally:
        await client.aclose()


async def test_a_conversation_on_the_gateway_is_answered_by_the_remote_model(
    gateway, model_server, redis_server
):
    async with websockets.connect(gateway.ws_url + "/v1/realtime") as ws:
        session_id = (await next_event(ws, "session.created"))[0]["session"]["id"]
        replies = []
        for text in ("Hello over there", "And once more"):
            await _say(ws, text)
            await ws.send(json.dumps({"type": "response.create"}))
            done, before = await next_event(ws, "response.done")
            deltas = [e["delta"] for e in before if e["type"] == "response.output_text.delta"]
            assert done["response"]["status"] == "completed", done
            replies.append(done["response"]["output"][0]["content"][0]["text"])
            assert len(deltas) >= 3 and "".join(deltas) == replies[-1]
    # both turns went over one kept-alive connection to B (a closed one would not be listed)
    assert _connections(gateway.pid, model_server.port) == 1
    # B's scripted model echoes the last user message: the reply was made on B
    assert replies == ["You said: Hello over there", "You said: And once more"]
    stored = httpx.get(gateway.url(f"/v1/sessions/{session_id}/messages"), timeout=10).json()
    assert [m["role"] for m in stored["data"]] == ["user", "assistant", "user", "assistant"]
    assert await _session_keys(redis_server, 6)  # A stored the session ...
    assert not await _session_keys(redis_server, 5)  # ... B, stateless, nothing
    # A runs no model of its own: torch is not even loaded
    assert "libtorch" not in Path(f"/proc/{gateway.pid}/maps").read_text()


def _png_data_url(pixels) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_an_image_on_the_gateway_reaches_the_remote_model_itself(gateway, model_server):
    from skimage import data

    item = {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What animal is this?"},
        {"type": "input_image", "image_url": _png_data_url(data.chelsea())},
    ]}  # fmt: skip
    async with websockets.connect(gateway.ws_url + "/v1/realtime") as ws:
        await next_event(ws, "session.created")
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await next_event(ws, "conversation.item.created")
        await ws.send(json.dumps({"type": "response.create"}))
        done, _ = await next_event(ws, "response.done")
    assert done["response"]["status"] == "completed", done
    reply = done["response"]["output"][0]["content"][0]["text"]
    # B's text-only model got the image's description from B's own encoder: the pixels went over
    assert reply.startswith("You said: [Image 1:") and "cat" in reply, reply
    assert reply.endswith("What animal is this?")
    # A handed the pixels on: it loaded no vision encoder (nor torch) of its own
    assert "libtorch" not in Path(f"/proc/{gateway.pid}/maps").read_text()


async def test_cancel_on_the_gateway_closes_the_remote_stream(gateway, model_server, redis_server):
    cancelled = 'assistant_responses_total{status="cancelled"}'
    before = _metric(model_server, cancelled)
    async with websockets.connect(gateway.ws_url + "/v1/realtime") as ws:
        await next_event(ws, "session.created")
        await _say(ws, LONG)
        await ws.send(json.dumps({"type": "response.create"}))
        await next_event(ws, "response.output_text.delta")
        await ws.send(json.dumps({"type": "response.cancel"}))
        done, _ = await next_event(ws, "response.done")
        assert done["response"]["status"] == "cancelled", done
        reply = done["response"]["output"][0]["content"][0]["text"]
        assert reply.startswith("You said:") and len(reply.split()) < 202  # cut short
    # B saw the disconnect: it counts the completion cancelled (long before its 10 s reply ends)
    await wait_for_async(
        lambda: _metric(model_server, cancelled) > before,
        what=lambda: "B to count a cancelled completion:\n" + model_server.log_tail(),
    )
    assert "cancelled: the client went away" in model_server.log_text()
    assert not await _session_keys(redis_server, 5)  # B stored nothing of it


async def test_a_refused_connection_is_a_model_error_and_the_socket_goes_on(
    tmp_path, redis_server
):
    closed = free_port()  # nothing listens there
    env = _gateway_env(tmp_path, redis_server, f"http://127.0.0.1:{closed}/v1",
                       ASSISTANT_LLM__RETRIES="1")  # fmt: skip
    with ServerProcess(env) as gateway:
        async with websockets.connect(gateway.ws_url + "/v1/realtime") as ws:
            await next_event(ws, "session.created")
            await _say(ws, "Is anyone there?")
            await ws.send(json.dumps({"type": "response.create", "event_id": "ev_1"}))
            error, _ = await next_event(ws, "error")
            assert error["error"]["code"] == "model_error", error
            assert error["error"]["event_id"] == "ev_1"
            assert f"127.0.0.1:{closed}" in error["error"]["message"]
            done, _ = await next_event(ws, "response.done")
            assert done["response"]["status"] == "failed"
            # the socket is still usable
            update = {"type": "session.update", "session": {"instructions": "Be brief."}}
            await ws.send(json.dumps(update))
            updated, _ = await next_event(ws, "session.updated")
            assert updated["session"]["instructions"] == "Be brief."
            await _say(ws, "Still there?")
