"""The server on a real 3-master Redis Cluster (``redis+cluster://``): conversations over the
WebSocket, their keys spread over the nodes (each session's keys on one), history over REST, an
image's blob and cache keys routed to their own slots."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from assistant.config import Settings
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from tests.support.redis_topology import redis_cluster
from tests.support.ws import turn

#: A server that never answers would leave the WebSocket waiting: fail instead, well after the
#: few seconds these take.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def keys_by_node(cluster) -> dict[int, list[str]]:
    found = {}
    for port in cluster.ports:
        client = redis.Redis(port=port, decode_responses=True)
        try:
            found[port] = list(client.scan_iter(match="assistant:*", count=1000))
        finally:
            client.close()
    return found


def png_url() -> str:
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[8:24, 8:24] = (200, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_conversations_through_a_real_cluster(cluster):
    app = create_app(Settings(redis_url=cluster.url), llm=ScriptedLM())
    sessions: dict[str, list[str]] = {}
    with TestClient(app) as client:
        assert client.get("/healthz").json()["store"] is True
        for n in range(9):  # random ids: 9 sessions all on one of 3 nodes has odds 1 in 6,561
            with client.websocket_connect("/v1/realtime") as ws:
                session_id = ws.receive_json()["session"]["id"]
                said = sessions[session_id] = []
                for t in range(2):
                    text = f"session {n} turn {t}"
                    reply = turn(ws, text, item_id=f"turn-{n}-{t}")
                    assert reply == f"You said: {text}"
                    said += [text, reply]
        first = next(iter(sessions))
        with client.websocket_connect(f"/v1/realtime?session_id={first}") as ws:
            assert ws.receive_json()["session"]["id"] == first
            assert turn(ws, "and again", item_id="turn-0-2") == "You said: and again"
            reply = turn(ws, "what is this?", png_url(), item_id="turn-image")
            assert reply.startswith("You said: [Image 1: an image of:") and "what is this?" in reply
            sessions[first] += ["and again", "You said: and again", "what is this?", reply]
        for session_id, said in sessions.items():
            answer = client.get(f"/v1/sessions/{session_id}/messages")
            assert answer.status_code == 200, answer.text
            texts = [m["content"][0]["text"] for m in answer.json()["data"]]
            assert texts == said, session_id

    by_node = keys_by_node(cluster)
    assert sum(1 for keys in by_node.values() if keys) >= 2, by_node
    for session_id in sessions:  # every key of a session on one node: its hash tag's
        holders = [port for port, keys in by_node.items()
                   if any(f"{{{session_id}}}" in key for key in keys)]  # fmt: skip
        assert len(holders) == 1, (session_id, by_node)
    everything = [key for keys in by_node.values() for key in keys]
    assert any(":blob:" in key for key in everything), everything
    assert any(":cache:" in key for key in everything), everything  # the image's description


async def test_langgraph_checkpoints_on_a_real_cluster(cluster):
    """RedisCheckpointSaver with redis-py's Cluster clients, sync and async: each thread's four
    keys share a hash tag (one node; its scripts run there), threads spread over the nodes, and
    listing every thread scans them all."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    from adapters.langchain import RedisCheckpointSaver

    sync = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    async_client = AsyncRedisCluster(host="127.0.0.1", port=cluster.ports[0])
    saver = RedisCheckpointSaver(client=sync, async_client=async_client, tenant="cl")
    try:
        threads = [f"thread-{n}" for n in range(9)]
        for n, thread in enumerate(threads):
            stored = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
            version = saver.get_next_version(None, None)
            checkpoint = {"v": 4, "id": f"1f0-{n:04}", "ts": "2025-01-01T00:00:00+00:00",
                          "channel_values": {"n": n}, "channel_versions": {"n": version},
                          "versions_seen": {}, "updated_channels": ["n"]}  # fmt: skip
            made = saver.put(stored, checkpoint, {"step": n}, {"n": version}) if n % 2 else (
                await saver.aput(stored, checkpoint, {"step": n}, {"n": version}))
            await saver.aput_writes(made, [("n", n + 100)], "task")
        for n, thread in enumerate(threads):
            found = await saver.aget_tuple({"configurable": {"thread_id": thread}})
            assert found.checkpoint["channel_values"] == {"n": n}
            assert found.pending_writes == [("task", "n", n + 100)]
            assert saver.get_tuple({"configurable": {"thread_id": thread}}).metadata["step"] == n
        assert sorted(t.config["configurable"]["thread_id"] for t in saver.list(None)) == threads
        assert len([t async for t in saver.alist(None)]) == len(threads)
        by_node = keys_by_node(cluster)
        for thread in threads:
            holders = {port: [k for k in keys if f"{{{thread}}}" in k] for port, keys in by_node.items()}
            holding = {port: keys for port, keys in holders.items() if keys}
            assert len(holding) == 1 and len(next(iter(holding.values()))) == 4, holders
        assert sum(1 for keys in by_node.values() if any(":lg:" in k for k in keys)) >= 2, by_node
        await saver.adelete_thread(threads[0])
        saver.delete_thread(threads[1])
        assert not any(f"{{{t}}}" in k for keys in keys_by_node(cluster).values() for k in keys
                       for t in threads[:2])  # fmt: skip
    finally:
        sync.close()
        await async_client.aclose()
