"""The agent console's live view over a real ``assistant serve`` (scripted model, a real Redis,
auth on): a burst of 1,000 events (the agent's messages, posted one after the other over REST)
read through ``GET /v1/conversations/{id}/events`` by a follower whose connection drops twice
mid-burst and comes back each time with the last ``id:`` (seq) it saw: every message arrives,
once, in order. The tenant's queue feed resumes the same way."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.integration.test_webhooks_server import env, new_key, started

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BURST = 1_000


async def follow(http: httpx.AsyncClient, path: str, after: str, stop_at: int | None,
                 seen: list[int]) -> str:  # fmt: skip
    """Read ``path``'s events from ``after``, appending each agent message's number to
    ``seen``, until the message numbered ``stop_at`` (then hang up) or the last one; the last
    seq read."""
    last, seq = after, None
    async with http.stream("GET", path, params={"after": after}, timeout=60) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seq = line[4:]
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                last = seq or last
                if event["type"] != "conversation.item.added":
                    continue
                n = int(event["item"]["content"][0]["text"].removeprefix("m"))
                seen.append(n)
                if n == BURST - 1 or (stop_at is not None and n >= stop_at):
                    return last
    raise AssertionError("the stream ended")


async def test_a_console_that_drops_twice_in_a_burst_of_1000_misses_nothing(tmp_path, redis_url):
    server = await started(env(tmp_path, redis_url))
    try:
        customer = await new_key(redis_url, "acme", "client")
        agent_key = await new_key(redis_url, "acme", "agent")
        headers = {"Authorization": f"Bearer {customer}"}
        async with websockets.connect(f"{server.ws_url}/v1/realtime",
                                      additional_headers=headers) as ws:  # fmt: skip
            session_id = json.loads(await ws.recv())["session"]["id"]
        agent = httpx.AsyncClient(base_url=server.base_url,
                                  headers={"Authorization": f"Bearer {agent_key}"})  # fmt: skip
        async with agent:
            listed = (await agent.get("/v1/conversations")).json()
            base = f"/v1/conversations/{session_id}"
            assert (await agent.post(f"{base}/handoff")).json()["status"] == "waiting_human"
            assert (await agent.post(f"{base}/claim")).json()["status"] == "human"
            start = (await agent.get(base)).json()["last_seq"]

            async def burst() -> None:
                for n in range(BURST):
                    posted = await agent.post(f"{base}/messages", json={"text": f"m{n}"})
                    assert posted.status_code == 201, posted.text

            seen: list[int] = []
            sender = asyncio.create_task(burst())
            last = await follow(agent, f"{base}/events", start, 300, seen)  # drops...
            last = await follow(agent, f"{base}/events", last, 650, seen)  # ...and again
            await follow(agent, f"{base}/events", last, None, seen)  # to the end
            await sender
            assert seen == list(range(BURST))  # nothing missed, nothing twice

            # the queue: the two changes, and from the first one's seq only the second
            queue: list[dict] = []
            async with agent.stream("GET", "/v1/queue/events",
                                    params={"after": listed["last_seq"]}) as response:  # fmt: skip
                seq = None
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        seq = line[4:]
                    elif line.startswith("data: "):
                        queue.append({**json.loads(line[6:]), "seq": seq})
                        if len(queue) == 2:
                            break
            assert [(e["conversation"], e["status"]) for e in queue] == [
                (session_id, "waiting_human"), (session_id, "human")
            ]  # fmt: skip
            async with agent.stream("GET", "/v1/queue/events",
                                    params={"after": queue[0]["seq"]}) as response:  # fmt: skip
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        assert json.loads(line[6:])["status"] == "human"
                        break
    finally:
        await asyncio.to_thread(server.stop)
