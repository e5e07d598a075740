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
