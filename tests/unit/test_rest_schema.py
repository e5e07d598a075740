"""The OpenAPI schema tells what the REST routes answer: the error envelope under each status a
route may send, the bodies as models, ``/metrics`` as text, the transcription upload as a
multipart form. Found by schemathesis (``tests/integration/test_fuzz_rest.py``): the routes
declared only a 200 with an empty JSON schema, and ``/metrics`` as JSON."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from assistant.config import Settings
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore


@pytest.fixture(scope="module")
def spec():
    return create_app(Settings()).openapi()


def _responses(spec, path, method="get"):
    return spec["paths"][path][method]["responses"]


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/v1/sessions/{session_id}/messages", "get", {"200", "401", "403", "404", "429", "503"}),
        ("/v1/audio/transcriptions", "post", {"200", "400", "401", "403", "413", "429", "500", "503"}),
        ("/metrics", "get", {"200", "401", "403", "429"}),
        ("/readyz", "get", {"200", "503"}),
        ("/healthz", "get", {"200"}),
    ],
)
def test_each_route_declares_what_it_answers(spec, path, method, statuses):
    responses = _responses(spec, path, method)
    assert statuses <= set(responses)
    for status in statuses - {"200", "503"} if path == "/readyz" else statuses - {"200"}:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def test_bodies_are_described(spec):
    ok = _responses(spec, "/v1/sessions/{session_id}/messages")["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/SessionMessages"}
    assert set(spec["components"]["schemas"]["ErrorDetail"]["required"]) == {"type", "code", "message"}
    assert list(_responses(spec, "/metrics")["200"]["content"]) == ["text/plain"]
    upload = spec["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]
    form = upload["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and form["properties"]["file"]["format"] == "binary"
    transcript = _responses(spec, "/v1/audio/transcriptions", "post")["200"]["content"]
    assert set(transcript) == {"application/json", "text/plain"}


def test_answers_match_the_declared_bodies():
    from assistant.server.rest_schema import ErrorBody, Health, SessionMessages

    with TestClient(create_app(Settings(), llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        Health.model_validate(client.get("/healthz").json())
        missing = client.get("/v1/sessions/nope/messages")
        assert missing.status_code == 404
        ErrorBody.model_validate(missing.json())
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")
        with client.websocket_connect("/v1/realtime") as ws:
            session_id = ws.receive_json()["session"]["id"]
            part = {"type": "input_text", "text": "hi"}
            item = {"type": "message", "role": "user", "content": [part]}
            ws.send_json({"type": "conversation.item.create", "item": item})
            assert ws.receive_json()["type"] == "conversation.item.created"
        body = client.get(f"/v1/sessions/{session_id}/messages").json()
    assert SessionMessages.model_validate(body).data[0].text == "hi"


def test_an_unknown_session_in_the_path_is_not_echoed_whole():
    with TestClient(create_app(Settings(), llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        body = client.get(f"/v1/sessions/{'s' * 5000}/messages").json()
    assert body["error"]["code"] == "session_not_found" and len(body["error"]["message"]) < 120
