"""Past the local model's queue bound, over a real server with the real SmolLM2: a turn that finds
``llm.max_batch`` replies generating and ``llm.max_queue`` waiting gets ``server_busy`` at once,
the reply already streaming is untouched, and the refused connection's next turn is answered."""

from __future__ import annotations

import json

import pytest

from tests.support.server import ServerProcess, link_prepared_models, serve_env
from tests.support.ws import next_event

pytestmark = pytest.mark.integration


async def send_turn(ws, text):
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await next_event(ws, "conversation.item.created")
    await ws.send(json.dumps({"type": "response.create"}))


async def test_a_turn_past_the_queue_gets_server_busy_and_the_connection_stays_usable(tmp_path):
    from websockets.asyncio.client import connect

    data_dir = tmp_path / "data"
    link_prepared_models(data_dir)
    env = serve_env(data_dir, ASSISTANT_LLM__MAX_BATCH="1", ASSISTANT_LLM__MAX_QUEUE="0")
    with ServerProcess(env) as server:
        try:
            await busy_then_answered(connect, f"{server.ws_url}/v1/realtime")
        except Exception as exc:  # noqa: BLE001 - the server's side of it, for the report
            raise AssertionError(f"{exc!r}; the server's log: {server.log_tail()}") from exc


async def busy_then_answered(connect, url):
    async with connect(url) as first, connect(url) as second:
        for ws in (first, second):
            await next_event(ws, "session.created")
        update = {"type": "session.update", "session": {"max_output_tokens": 24}}
        await first.send(json.dumps(update))
        await next_event(first, "session.updated")
        await send_turn(first, "Write a long poem about the sea.")
        await next_event(first, "response.output_text.delta", timeout_s=120)  # generating
        await send_turn(second, "What is the capital of France?")
        done, seen = await next_event(second, "response.done", timeout_s=120)
        errors = [e["error"] for e in seen if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["server_busy"], seen
        assert errors[0]["type"] == "server_error"
        assert done["response"]["status"] == "failed"
        streamed, _ = await next_event(first, "response.done", timeout_s=300)
        assert streamed["response"]["status"] in ("completed", "incomplete")
        await second.send(json.dumps({"type": "response.create"}))  # the same connection
        answered, _ = await next_event(second, "response.done", timeout_s=300)
        assert answered["response"]["status"] in ("completed", "incomplete"), answered
        assert answered["response"]["output"][0]["content"][0]["text"]
