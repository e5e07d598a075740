"""The server on a real primary + replica watched by 3 Sentinels (``redis+sentinel://``): a
conversation goes on through a failover. The primary is killed (SIGKILL) while a reply streams;
the Sentinels promote the replica; the reply is stored on the new primary and the conversation
continues, and every message the client was told about before the kill is in the history after.
Writes wait for the replica (``WAIT 1``, the Sentinel default), so none was only on the primary."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from assistant.config import Settings
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from tests.support.redis_topology import redis_sentinels
from tests.support.ws import turn, until

#: A server that never answers would leave the WebSocket waiting: fail instead, well after the
#: few seconds these take.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def user_item(text: str, item_id: str) -> dict:
    content = [{"type": "input_text", "text": text}]
    return {"type": "conversation.item.create",
            "item": {"id": item_id, "type": "message", "role": "user", "content": content}}  # fmt: skip


def history(client: TestClient, session_id: str) -> list[str]:
    answer = client.get(f"/v1/sessions/{session_id}/messages")
    assert answer.status_code == 200, answer.text
    return [m["content"][0]["text"] for m in answer.json()["data"]]


def test_a_conversation_goes_on_through_a_sentinel_failover(tmp_path):
    with redis_sentinels(tmp_path) as deployment:
        llm = ScriptedLM()
        app = create_app(Settings(redis_url=deployment.url), llm=llm)
        told: list[str] = []  # what the client was told is stored, in order
        with TestClient(app) as client:
            store = app.state.components.store
            with client.websocket_connect("/v1/realtime") as ws:
                session_id = ws.receive_json()["session"]["id"]
                for t in range(3):
                    text = f"before the failover {t}"
                    told += [text, turn(ws, text, item_id=f"before-{t}")]

                # A turn in flight: its item stored, its reply streaming when the primary dies.
                llm.token_delay_s = 0.05
                ws.send_json(user_item("while the primary dies", "during"))
                until(ws, "conversation.item.created")
                told.append("while the primary dies")
                ws.send_json({"type": "response.create"})
                until(ws, "response.output_text.delta")
                assert store._lines.wait.shortfalls == 0  # every write so far is on the replica
                killed_at = deployment.processes.kill("primary")
                done = until(ws, "response.done")[-1]["response"]
                stored_after_s = time.monotonic() - killed_at
                assert done["status"] == "completed", done
                told.append(done["output"][0]["content"][0]["text"])

                llm.token_delay_s = 0.0
                for t in range(3):
                    text = f"after the failover {t}"
                    told += [text, turn(ws, text, item_id=f"after-{t}")]
            assert deployment.master_port() == deployment.replica
            assert history(client, session_id) == told
            with client.websocket_connect(f"/v1/realtime?session_id={session_id}") as ws:
                assert ws.receive_json()["session"]["id"] == session_id
                assert turn(ws, "one more", item_id="resumed") == "You said: one more"
            assert history(client, session_id) == [*told, "one more", "You said: one more"]
        print(f"failover: the reply in flight was stored {stored_after_s:.2f} s after the kill")
        assert stored_after_s < Settings().memory.retry_s
