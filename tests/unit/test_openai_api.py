"""The OpenAI-compatible routes in process (scripted model, in-memory store): the shape of a
completion and of the models; the refusals, each a 400 (or 404) naming its parameter in OpenAI's
error shape; audio and images; the body limit; the session tie; the key's limits; auth."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
from fastapi.testclient import TestClient

from assistant.config import (
    AuthSettings,
    LimitsSettings,
    LLMSettings,
    Settings,
    VisionSettings,
    VoiceSettings,
)
from assistant.server.openai_routes import served_model_id
from tests.support.openai_app import CHAT, AppClients, user


@pytest.fixture
def make(tmp_path):
    with AppClients(tmp_path) as make:
        yield make


@pytest.fixture
def http(make) -> TestClient:
    return make()


def test_a_completion_and_its_usage(http):
    response = http.post(CHAT, json={"model": "scripted", "messages": user("hello there")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "scripted"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "You said: hello there",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 4 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert http.store.infos == {}  # stateless: nothing stored


def test_max_tokens_and_stop_end_the_reply(http):
    body = http.post(CHAT, json={"messages": user("a b c d"), "max_completion_tokens": 3}).json()
    assert body["choices"][0]["message"]["content"] == "You said: a"
    assert body["choices"][0]["finish_reason"] == "length"
    body = http.post(CHAT, json={"messages": user("a b c d"), "stop": [" c", "zz"]}).json()
    assert body["choices"][0]["message"]["content"] == "You said: a b"
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_value"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported_parameter"),
        ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_request"),
        ({"temperature": 3}, "temperature", "invalid_request"),
        ({"frobnicate": 1}, "frobnicate", "invalid_request"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}]}, "messages[0].role",
         "unsupported_value"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content",
         "invalid_request"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {
            "url": "data:,"}}]}]}, "messages[0].content[0].type", "unsupported_value"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
            "data": "AAAA", "format": "midi"}}]}]}, "messages[0].content[0].input_audio.format",
         "unsupported_audio_format"),
    ],
)  # fmt: skip
def test_what_is_not_supported_is_a_400_naming_the_parameter(http, extra, param, code):
    response = http.post(CHAT, json={"messages": user("hi"), **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == code
    assert error["type"] == "invalid_request_error" and error["message"]


def test_harmless_parameters_are_accepted(http):
    extra = {"user": "u-1", "seed": 7, "presence_penalty": 0, "metadata": {"k": "v"}, "n": 1,
             "logprobs": False, "response_format": {"type": "text"}, "store": False}  # fmt: skip
    assert http.post(CHAT, json={"messages": user("hi"), **extra}).status_code == 200


def test_models_and_unknown_ids_are_404s_in_one_shape(http):
    listed = http.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["scripted"]
    card = http.get("/v1/models/scripted").json()
    assert card == {**listed["data"][0], "object": "model"} and isinstance(card["created"], int)
    for response in (
        http.get("/v1/models/gpt-4o"),
        http.post(CHAT, json={"model": "gpt-4o", "messages": user("hi")}),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == {
            "type": "not_found_error", "code": "model_not_found", "param": "model",
            "message": "the model 'gpt-4o' does not exist; this server serves 'scripted'",
        }  # fmt: skip


def test_the_served_model_id():
    def served(**llm) -> str:
        return served_model_id(Settings(llm=LLMSettings(**llm)))

    assert served() == "smollm2-135m-instruct"
    assert served(served_name="house-model") == "house-model"
    assert (
        served(model="HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    )
    assert served(model="/srv/models/my-llama/") == "my-llama"
    assert served(adapter="scripted", model="a fixed reply") == "scripted"


def test_system_messages_are_the_instructions(http):
    llm = http.app.state.components.llm
    messages = [{"role": "developer", "content": "Be terse."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]}]  # fmt: skip
    assert http.post(CHAT, json={"messages": messages}).status_code == 200
    assert [(m.role, m.text) for m in llm.prompts[-1].messages] == [
        ("system", "Be terse."),
        ("user", "hi"),
    ]


def wav_base64(seconds: float = 0.5) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16_000)
        out.writeframes(
            (np.sin(np.arange(int(seconds * 16_000)) / 3) * 8000).astype("<i2").tobytes()
        )
    return base64.b64encode(buffer.getvalue()).decode()


def test_input_audio_is_transcribed_into_the_prompt(http):
    part = {"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}}
    messages = [{"role": "user", "content": [part]}]
    body = http.post(CHAT, json={"messages": messages}).json()
    assert body["choices"][0]["message"]["content"] == "You said: hi there"


def test_without_vision_or_voice_images_and_audio_are_refused(make):
    http = make(vision=VisionSettings(enabled=False), voice=VoiceSettings(enabled=False))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    audio = {"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}}
    for part in (image, audio):
        response = http.post(CHAT, json={"messages": [{"role": "user", "content": [part]}]})
        assert (
            response.status_code == 400
            and response.json()["error"]["code"] == "unsupported_content"
        )


def test_a_body_past_the_chat_limit_is_413_and_under_it_is_read(make):
    http = make(
        vision=VisionSettings(max_image_bytes=1024), voice=VoiceSettings(max_upload_bytes=1024)
    )
    big = [{"type": "text", "text": "x" * 150_000}] * 7  # 1.05 MB: over 1 MiB, under this limit
    response = http.post(CHAT, json={"messages": [{"role": "user", "content": big}]})
    assert (
        response.status_code == 400
        and response.json()["error"]["code"] == "context_length_exceeded"
    )
    response = http.post(CHAT, json={"messages": [{"role": "user", "content": big * 2}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_a_session_tie_stores_the_new_turn_and_the_reply(http):
    created = http.portal.call(http.app.state.components.orchestrator.open_session)
    history = [
        *user("old question"),
        {"role": "assistant", "content": "old answer"},
        *user("new one"),
    ]
    headers = {"X-Session-Id": created.id}
    body = http.post(CHAT, json={"messages": history}, headers=headers).json()
    assert body["choices"][0]["message"]["content"] == "You said: new one"
    stored = http.get(f"/v1/sessions/{created.id}/messages").json()["data"]
    assert [(m["role"], m["content"][0]["text"]) for m in stored] == [
        ("user", "new one"), ("assistant", "You said: new one")]  # fmt: skip
    # ``user`` naming a session of the caller's tenant ties too; the prompt is the stored history.
    http.post(CHAT, json={"messages": user("third"), "user": created.id})
    llm = http.app.state.components.llm
    assert [m.text for m in llm.prompts[-1].messages][1:] == [
        "new one",
        "You said: new one",
        "third",
    ]
    missing = http.post(CHAT, json={"messages": user("x")}, headers={"X-Session-Id": "sess_nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "session_not_found"
    ends = http.post(
        CHAT, json={"messages": [{"role": "assistant", "content": "hi"}]}, headers=headers
    )
    assert ends.status_code == 400 and ends.json()["error"]["code"] == "no_input"


def test_the_keys_limits_hold_with_retry_after(make):
    http = make(
        api_keys="acme:sk-test-0123456789abcdef", limits=LimitsSettings(requests_per_minute=2)
    )
    headers = {"Authorization": "Bearer sk-test-0123456789abcdef"}
    assert http.post(CHAT, json={"messages": user("hi")}).status_code == 200  # open: not limited
    codes = [
        http.post(CHAT, json={"messages": user("hi")}, headers=headers).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    refused = http.post(CHAT, json={"messages": user("hi")}, headers=headers)
    assert (
        int(refused.headers["Retry-After"]) >= 1
        and refused.json()["error"]["code"] == "rate_limited"
    )


def test_in_open_mode_an_api_key_that_is_none_of_the_servers_is_no_key(make):
    open_server = make()
    assert (
        open_server.get("/v1/models", headers={"Authorization": "Bearer unused"}).status_code == 200
    )
    revoked = "Bearer sk_" + "0" * 16 + "_" + "x" * 32  # a key's shape, but no such key
    refused = open_server.get("/v1/models", headers={"Authorization": revoked})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    closed = make(auth=AuthSettings(open=False))
    refused = closed.get("/v1/models", headers={"Authorization": "Bearer unused"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_a_body_that_is_not_json_is_a_400_in_the_error_shape(http):
    response = http.post(CHAT, content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = http.post(CHAT, content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] is None
