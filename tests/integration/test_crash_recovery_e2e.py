"""The acceptance test of crash-safe turns, with real processes: an ``assistant serve`` streaming a
slow reply is SIGKILLed mid-reply; a new server on the same Redis (which the test runs, so it
outlives the server) takes the resumed session's next turn without waiting out the dead server's
lease (30 s here), and the session's history holds the cut reply, ``interrupted``, before the new
turn: at least the text the dead server had flushed once the client had its first deltas, and no
more than it would have streamed."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import websockets

from adapters.memory.redis_turns import decode_partial
from tests.support.processes import free_port
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPLY = " ".join(f"word{i}" for i in range(80))  # 4 s at 50 ms a token
LEASE_MS = 30_000




class Server:
    """``python -m assistant serve`` with the scripted model on the test's Redis."""

    def __init__(self, data_dir: Path, redis_url: str, *, token_delay_s: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env.update(
            ASSISTANT_REDIS_URL=redis_url, ASSISTANT_LLM__ADAPTER="scripted",
            ASSISTANT_LLM__MODEL=REPLY, ASSISTANT_LLM__TOKEN_DELAY_S=str(token_delay_s),
            ASSISTANT_MEMORY__LOCK_TTL_MS=str(LEASE_MS),
            # Long enough that without the takeover the turn would wait the lease out.
            ASSISTANT_MEMORY__LOCK_WAIT_S="60", ASSISTANT_VOICE__ENABLED="false",
        )  # fmt: skip
        self.port = free_port()
        self.log_path = data_dir / f"serve-{self.port}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "assistant", "serve", "--port", str(self.port),
                 "--data-dir", str(data_dir)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return json.loads(response.read())

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log_tail()
        try:
            return self.get("/healthz")["status"] == "ok"
        except OSError:  # not listening yet
            return False

    def wait_healthy(self) -> None:
        wait_for(self.healthy, timeout_s=120, poll_s=0.1,
                 what=lambda: "the server to become healthy:\n" + self.log_tail())  # fmt: skip

    def kill(self) -> None:
        """SIGKILL by pid (nothing runs after it: no reply stored, no lease given back)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


async def send_turn(ws, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 60))


async def stream_then_kill(server: Server, raw) -> tuple[str, str, str, str]:
    """Start a turn on ``server``, take 8 deltas, wait until the partial in Redis covers them, and
    SIGKILL the server. (session id, reply item id, text received, text flushed then)."""
    async with websockets.connect(server.url("/v1/realtime", "ws")) as ws:
        session_id = (await receive(ws))["session"]["id"]
        partial_key = f"assistant:default:s:{{{session_id}}}:partial"
        await send_turn(ws, "Tell me a long story.")
        received, deltas, item_id = "", 0, ""
        while deltas < 8:
            event = await receive(ws)
            assert event["type"] != "error", event
            if event["type"] == "response.output_text.delta":
                received, deltas, item_id = received + event["delta"], deltas + 1, event["item_id"]

        async def flushed_what_was_received():
            value = await raw.get(partial_key)
            text = decode_partial(value)[1] if value else ""
            return text.startswith(received) and text

        flushed = await wait_for_async(flushed_what_was_received,
                                       what="the partial to cover the deltas received")  # fmt: skip
        server.kill()
    return session_id, item_id, received, flushed


async def test_a_reply_cut_by_a_killed_server_is_stored_interrupted_and_the_next_turn_does_not_wait(
    redis_url, tmp_path
):
    raw = aioredis.from_url(redis_url, decode_responses=True)
    servers: list[Server] = []
    try:
        servers.append(first := Server(tmp_path, redis_url, token_delay_s=0.05))
        await asyncio.to_thread(first.wait_healthy)
        session_id, item_id, received, flushed = await stream_then_kill(first, raw)
        keys = f"assistant:default:s:{{{session_id}}}:"
        dead_lease = await raw.get(keys + "lock")
        lease_ends_at = time.monotonic() + await raw.pttl(keys + "lock") / 1000
        assert dead_lease, "the killed server's lease is still there"

        servers.append(second := Server(tmp_path, redis_url, token_delay_s=0))
        await asyncio.to_thread(second.wait_healthy)
        async with websockets.connect(second.url(f"/v1/realtime?session_id={session_id}", "ws")) as ws:
            assert (await receive(ws))["session"]["id"] == session_id
            assert await raw.get(keys + "lock") == dead_lease  # still standing when we ask
            await send_turn(ws, "Are you still there?")
            while (event := await receive(ws))["type"] != "response.done":
                assert event["type"] != "error", event
            answered_at = time.monotonic()
        assert event["response"]["status"] == "completed"
        # The order, not a speed: the turn was answered while the dead lease would still stand.
        assert answered_at < lease_ends_at

        history = await asyncio.to_thread(second.get, f"/v1/sessions/{session_id}/messages")
        stored = [(m["role"], m["status"]) for m in history["data"]]
        assert stored == [("user", "completed"), ("assistant", "interrupted"),
                          ("user", "completed"), ("assistant", "completed")]  # fmt: skip
        cut = history["data"][1]
        text = "".join(part["text"] for part in cut["content"])
        assert cut["id"] == item_id
        assert text.startswith(flushed) and flushed.startswith(received)
        assert REPLY.startswith(text) and text != REPLY
        assert not await raw.exists(keys + "partial")
    finally:
        for server in servers:
            server.stop()
        await raw.aclose()
