"""Entry ``redis``: Redis round trips and commands per text turn.

Round trips (requests the server sends and waits for; a MULTI/EXEC pipeline or a script call is
one) cannot be told apart from outside Redis, so this entry runs the real app in-process, under
uvicorn on a loopback port, over a real WebSocket, with the store built as the server builds it,
and reads the store's own ``round_trips`` counter. Commands are read from Redis itself
(``INFO commandstats``): a pipeline of k commands counts k (plus MULTI and EXEC), and the commands a
Lua script runs are counted too (under their own names), so ``commands_per_turn`` >= round trips.
The first turn of the session is a warm-up (it loads the Lua scripts) and is not counted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import PROMPT, REPLY, free_port

#: Commands the benchmark itself sends to read the counters (each read is a new connection,
#: which redis-py opens with HELLO and CLIENT SETINFO); not the server's.
_OWN = {"info", "hello", "client|setinfo", "client|setname"}


def command_counts(url: str) -> dict[str, int]:
    """Calls per command name from ``INFO commandstats`` (sync, one short connection)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def commands_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command between two ``command_counts``, plus ``total`` (own commands left out)."""
    delta = {name: after[name] - before.get(name, 0) for name in after if name not in _OWN}
    delta = {name: count for name, count in delta.items() if count}
    delta["total"] = sum(delta.values())
    return delta


async def _turn(ws: Any) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    async with asyncio.timeout(30):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "error":
                raise RuntimeError(f"the server answered an error: {event['error']}")
            if event["type"] == "response.done":
                if event["response"]["status"] != "completed":
                    raise RuntimeError(f"turn not completed: {event['response']}")
                return


async def _count(url: str, redis_url: str, store: Any, turns: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    before_open = store.round_trips
    async with connect(url, compression=None, ping_interval=None) as ws:
        async with asyncio.timeout(30):
            await ws.recv()  # session.created
        open_trips = store.round_trips - before_open
        await _turn(ws)  # warm-up: loads the scripts (EVALSHA, NOSCRIPT, SCRIPT LOAD)
        trips0, counts0 = store.round_trips, await asyncio.to_thread(command_counts, redis_url)
        for _ in range(turns):
            await _turn(ws)
        trips1, counts1 = store.round_trips, await asyncio.to_thread(command_counts, redis_url)
    delta = commands_delta(counts0, counts1)
    total = delta.pop("total")
    return {
        "turns": turns,
        "round_trips_per_turn": round((trips1 - trips0) / turns, 3),
        "commands_per_turn": round(total / turns, 3),
        "commands_by_name_per_turn": {k: round(v / turns, 3) for k, v in sorted(delta.items())},
        "session_open_round_trips": open_trips,
    }


async def measure_redis_async(redis_url: str, turns: int) -> dict[str, Any]:
    import uvicorn

    from assistant.config import LLMSettings, Settings
    from assistant.registry import build_session_store
    from assistant.server.app import create_app

    settings = Settings(redis_url=redis_url, llm=LLMSettings(adapter="scripted", model=REPLY))
    store = build_session_store(settings, redis_url=redis_url)
    if not hasattr(store, "round_trips"):
        raise RuntimeError(f"the {type(store).__name__} store has no round_trips counter")
    port = free_port()
    config = uvicorn.Config(create_app(settings, store=store), host="127.0.0.1", port=port,
                            log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    await task
                    raise RuntimeError("the in-process server stopped at start-up")
                await asyncio.sleep(0.02)
        return await _count(f"ws://127.0.0.1:{port}/v1/realtime", redis_url, store, turns)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await store.aclose()


def run_redis(turns: int = 20) -> dict[str, Any]:
    """Start a private redis-server, count round trips and commands over ``turns`` turns, stop."""
    from adapters.memory.embedded_redis import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="assistant-bench-redis-"))
    redis_server = EmbeddedRedis(tmp).start()
    try:
        return asyncio.run(measure_redis_async(redis_server.url, turns))
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
