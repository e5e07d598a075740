"""Streams of the OpenAI-compatible chat completions in process: the chunks, usage and
``[DONE]``; a model failing mid-reply; a client that hangs up cancelling the generation; the key's
generating place held until the reply ends."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from assistant.config import LimitsSettings
from assistant.testing.language_models import FailingLM, ScriptedLM
from tests.support.openai_app import CHAT, LONG_REPLY, AppClients, RawCall, events, user


@pytest.fixture
def make(tmp_path):
    with AppClients(tmp_path) as make:
        yield make


@pytest.fixture
def http(make) -> TestClient:
    return make()


def test_a_stream_of_chunks_with_usage_then_done(http):
    body = {"messages": user("one two"), "stream": True, "stream_options": {"include_usage": True}}
    response = http.post(CHAT, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response.text)
    assert chunks[-1] == "[DONE]"
    first, *deltas, last, usage, _ = chunks
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"]["content"] for c in deltas) == "You said: one two"
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in deltas)
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert len({c["id"] for c in chunks[:-1]}) == 1
    plain = events(http.post(CHAT, json={"messages": user("x"), "stream": True}).text)
    assert all("usage" not in c for c in plain[:-1])  # usage only when asked for


def test_a_client_that_goes_away_cancels_the_generation(make):
    llm = ScriptedLM(LONG_REPLY, token_delay_s=0.01)
    http = make(llm=llm)
    app = http.app
    # the role chunk and two deltas, then the client hangs up
    call = http.portal.call(RawCall(app, {"messages": user("go"), "stream": True}, hang_up_after=3))
    assert call.status == 200 and 3 <= len(call.sent) < 10 and b"[DONE]" not in b"".join(call.sent)
    assert app.state.metrics._counts.responses["cancelled"] == 1
    assert llm.prompts and 0 < app.state.metrics._counts.output_tokens < 200


def test_a_session_tied_reply_cut_short_is_stored_interrupted(make):
    http = make(llm=ScriptedLM(LONG_REPLY, token_delay_s=0.01))
    session = http.portal.call(http.app.state.components.orchestrator.open_session)
    body = {"messages": user("go"), "stream": True}
    call = RawCall(http.app, body, hang_up_after=3, extra_headers={"X-Session-Id": session.id})
    assert http.portal.call(call).status == 200
    stored = http.get(f"/v1/sessions/{session.id}/messages").json()["data"]
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "completed"),
        ("assistant", "interrupted"),
    ]
    assert stored[1]["content"][0]["text"].startswith("w0 w1")


def test_a_generating_place_is_held_until_the_reply_ends(make):
    key = "sk-test-0123456789abcdef"
    http = make(llm=ScriptedLM(LONG_REPLY, token_delay_s=0.01), api_keys=f"acme:{key}",
                limits=LimitsSettings(generations=1))  # fmt: skip
    body = {"messages": user("go"), "stream": True}

    async def scenario() -> tuple[RawCall, RawCall]:
        first = RawCall(http.app, body, key=key)
        running = asyncio.ensure_future(first())
        await first.streaming.wait()
        refused = await RawCall(http.app, body, key=key)()
        first.hang_up()
        await running
        return refused, await RawCall(http.app, {**body, "max_tokens": 2}, key=key)()

    refused, after = http.portal.call(scenario)
    assert refused.status == 429 and b"too_many_generations" in refused.sent[0]
    assert after.status == 200 and after.sent[-1].endswith(b"data: [DONE]\n\n")


def test_a_model_failing_mid_reply_is_an_error_event_or_a_503(make):

    http = make(llm=FailingLM(good=2))
    chunks = events(http.post(CHAT, json={"messages": user("hi"), "stream": True}).text)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["w0 ", "w1 "]
    assert chunks[3] == {"error": {"message": "failing failed (RuntimeError)", "type": "server_error",
                                   "param": None, "code": "model_error"}}  # fmt: skip
    assert chunks[4:] == ["[DONE]"]
    whole = http.post(CHAT, json={"messages": user("hi")})
    assert whole.status_code == 503 and whole.json()["error"]["code"] == "model_error"
    assert http.app.state.metrics._counts.responses["failed"] == 2
