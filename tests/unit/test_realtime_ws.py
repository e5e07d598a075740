"""The WebSocket protocol end to end in process: the real app, a scripted model, an in-memory store."""

import contextlib
import os

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from assistant.config import PromptSettings, Settings
from assistant.prompt import OMITTED_NOTE
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.ws import until


def user_item(text, item_id=None, event_id=None):
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id:
        item["id"] = item_id
    event = {"type": "conversation.item.create", "item": item}
    if event_id:
        event["event_id"] = event_id
    return event


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def make_app(request):
    """Builds the app on the in-memory fake store, or on the real Redis store with a real
    redis-server; yields ``(TestClient, ScriptedLM)``."""
    with contextlib.ExitStack() as stack:

        def make(settings=None):
            if request.param == "memory":
                store = MemoryStore()
            else:
                from adapters.memory.redis import RedisSessionStore

                store = RedisSessionStore.from_url(request.getfixturevalue("redis_url"))
            llm = ScriptedLM()
            client = stack.enter_context(TestClient(create_app(settings or Settings(), llm=llm, store=store)))
            stack.callback(client.portal.call, store.aclose)
            return client, llm

        yield make


@pytest.fixture
def app_parts(make_app):
    return make_app()


def stored(client, session_id):
    response = client.get(f"/v1/sessions/{session_id}/messages")
    assert response.status_code == 200
    return response.json()["data"]


def test_text_turn(app_parts):
    client, _ = app_parts
    with client.websocket_connect("/v1/realtime") as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created"
        session_id = created["session"]["id"]
        ws.send_json(user_item("hello world"))
        item = ws.receive_json()
        assert item["type"] == "conversation.item.created"
        assert item["item"]["content"] == [
            {"type": "input_text", "text": "hello world", "transcript": None, "image_sha256": None}
        ]
        ws.send_json({"type": "response.create"})
        events = until(ws, "response.done")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) >= 2 and "".join(deltas) == "You said: hello world"
    assert kinds[-2:] == ["response.output_text.done", "response.done"]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "You said: hello world"
    assert done["usage"]["output_tokens"] == len(deltas)
    assert [m["role"] for m in stored(client, session_id)] == ["user", "assistant"]


def test_bad_events_get_errors_and_the_socket_stays_usable(app_parts):
    client, _ = app_parts
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ws.send_text("{oops")
        assert ws.receive_json()["error"]["code"] == "invalid_json"
        ws.send_json({"type": "no.such.thing", "event_id": "ev1"})
        error = ws.receive_json()["error"]
        assert (error["code"], error["event_id"]) == ("unknown_event", "ev1")
        ws.send_json({"type": "conversation.item.create", "event_id": "ev2"})
        error = ws.receive_json()["error"]
        assert (error["code"], error["event_id"], error["type"]) == (
            "invalid_event", "ev2", "invalid_request_error")
        ws.send_bytes(b"\x00\x01\x02")  # binary frames are PCM16 audio: whole samples only
        assert ws.receive_json()["error"]["code"] == "invalid_audio_bytes"
        ws.send_json({"type": "response.create", "event_id": "ev3"})
        events = until(ws, "response.done")
        assert events[-1]["response"]["status"] == "failed"
        errors = [e for e in events if e["type"] == "error"]
        assert errors[0]["error"]["code"] == "no_input" and errors[0]["error"]["event_id"] == "ev3"
        ws.send_json({"type": "response.cancel"})
        assert ws.receive_json()["error"]["code"] == "response_cancel_not_active"
        # Still usable: a real turn works after all that.
        ws.send_json(user_item("still here"))
        until(ws, "conversation.item.created")
        ws.send_json({"type": "response.create"})
        assert until(ws, "response.done")[-1]["response"]["status"] == "completed"


def test_cancel_mid_stream(app_parts):
    client, llm = app_parts
    llm.reply = " ".join(f"w{i}" for i in range(200))
    llm.token_delay_s = 0.01
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        ws.send_json(user_item("talk a lot"))
        until(ws, "conversation.item.created")
        ws.send_json({"type": "response.create"})
        until(ws, "response.output_text.delta")
        ws.send_json({"type": "response.create"})  # a second one while streaming is refused
        ws.send_json({"type": "response.cancel"})
        events = until(ws, "response.done")
    codes = [e["error"]["code"] for e in events if e["type"] == "error"]
    assert codes == ["response_in_progress"]
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    produced = done["usage"]["output_tokens"]
    assert 1 <= produced < 200
    reply = stored(client, session_id)[-1]
    assert reply["status"] == "interrupted"
    assert len(reply["content"][0]["text"].split()) == produced


def test_resume_and_history_over_rest(app_parts):
    client, _ = app_parts
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        ws.send_json({"type": "session.update", "session": {"instructions": "be terse"}})
        assert ws.receive_json()["session"]["instructions"] == "be terse"
        ws.send_json(user_item("first", item_id="turn-1"))
        until(ws, "conversation.item.created")
        ws.send_json({"type": "response.create"})
        until(ws, "response.done")
    with client.websocket_connect(f"/v1/realtime?session_id={session_id}") as ws:
        created = ws.receive_json()
        assert created["session"]["id"] == session_id
        assert created["session"]["instructions"] == "be terse"
        ws.send_json(user_item("first", item_id="turn-1"))  # a retried send: stored once
        until(ws, "conversation.item.created")
        ws.send_json(user_item("second"))
        until(ws, "conversation.item.created")
        ws.send_json({"type": "response.create"})
        until(ws, "response.done")
    messages = stored(client, session_id)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m["status"] for m in messages] == ["completed"] * 4
    assert messages[0]["turn_id"] == "turn-1"
    assert messages[3]["content"][0]["text"] == "You said: second"


def test_unknown_session_is_refused(app_parts):
    client, _ = app_parts
    with client.websocket_connect("/v1/realtime?session_id=sess_nope") as ws:
        assert ws.receive_json()["error"]["code"] == "session_not_found"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4404
    response = client.get("/v1/sessions/sess_nope/messages")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def test_health_and_metrics(app_parts):
    client, _ = app_parts
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "store": True, "model": "scripted", "worker": os.getpid()}
    before = client.get("/metrics").text
    assert 'assistant_errors_total{code="invalid_json"}' not in before
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ws.send_text("nope")
        ws.receive_json()
    text = client.get("/metrics").text
    assert 'assistant_errors_total{code="invalid_json"} 1.0' in text


def test_history_is_fitted_to_the_token_budget(make_app):
    client, llm = make_app(Settings(prompt=PromptSettings(instructions="sys", context_tokens=40)))
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        for i in range(8):
            ws.send_json(user_item(f"message number {i} is here"))
            until(ws, "conversation.item.created")
            ws.send_json({"type": "response.create"})
            assert until(ws, "response.done")[-1]["response"]["status"] == "completed"
    prompt = llm.prompts[-1].messages
    assert prompt[0].text == f"sys\n{OMITTED_NOTE}"
    assert prompt[-1].text == "message number 7 is here"
    assert 2 < len(prompt) < 16  # some history kept, the oldest dropped
    assert sum(len(m.text.split()) + 1 for m in prompt) <= 40
    assert len(stored(client, session_id)) == 16  # dropped from the prompt, never from the store
