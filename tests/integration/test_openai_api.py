"""The OpenAI-compatible API of a real ``assistant serve`` with the real default models (SmolLM2,
EfficientNet-Lite0, Whisper tiny.en), through the official ``openai`` client: streamed and whole
completions, stop strings and ``length``, usage, an image's object named, spoken audio answered,
the models, errors; a REST turn and a WebSocket client on one session; and, on a slow scripted
model, a client that goes away mid-stream cancels the generation on the server."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import openai
import pytest
import websockets
from PIL import Image
from skimage import data as samples

from tests.support.audio import require_speech_tools, speak
from tests.support.server import ServerProcess, link_prepared_models, serve_env
from tests.support.waiting import wait_for
from tests.support.ws import next_event

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def png_url(pixels) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("openai-api")
    link_prepared_models(data_dir)
    with ServerProcess(serve_env(data_dir)) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url("/v1"), api_key="unused-in-open-mode") as client:
        yield client


def test_a_whole_and_a_streamed_completion(client):
    whole = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=16)
    reply = whole.choices[0].message.content
    assert "Paris" in reply, reply
    assert whole.model == MODEL and whole.choices[0].finish_reason in ("stop", "length")
    assert 0 < whole.usage.completion_tokens <= 16 and whole.usage.prompt_tokens > 10
    stream = client.chat.completions.create(
        model=MODEL, messages=FRANCE, max_tokens=16, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply  # greedy: the same reply, streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[
        0
    ].finish_reason
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )


def test_stop_strings_and_the_length_limit(client):
    reply = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=16)
    text = reply.choices[0].message.content
    stop = text.split()[2]  # a word in the middle of the reply
    cut = client.chat.completions.create(
        model=MODEL, messages=FRANCE, max_tokens=16, stop=[stop, "\n\n\n"]
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_a_photo_in_an_image_url_part_is_named(client):
    content = [{"type": "text", "text": "What animal is in this picture?"},
               {"type": "image_url", "image_url": {"url": png_url(samples.chelsea())}}]  # fmt: skip
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=32
    )
    assert "cat" in reply.choices[0].message.content.lower(), reply.choices[0].message.content


def test_a_spoken_question_in_an_input_audio_part_is_answered(client, tmp_path):
    require_speech_tools()
    wav = speak("What is the capital of France?", tmp_path, "france")
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.read_bytes()).decode(),
                                                    "format": "wav"}}  # fmt: skip
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [part]}], max_tokens=16
    )
    assert "Paris" in reply.choices[0].message.content, reply.choices[0].message.content


def test_the_models_and_the_errors(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "transformers_local"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=FRANCE, n=2)
    assert "n must be 1" in refused.value.message and refused.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=FRANCE)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as no_session:
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, extra_headers={"X-Session-Id": "sess_0000"}
        )
    assert no_session.value.body["code"] == "session_not_found"


async def _ws_turn(ws, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 8}}))
    await next_event(ws, "response.done")


async def test_a_rest_turn_and_a_websocket_client_share_a_session(server, client):
    async with websockets.connect(server.ws_url + "/v1/realtime") as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
    reply = await asyncio.to_thread(
        client.chat.completions.create, model=MODEL, messages=FRANCE, max_tokens=8,
        extra_headers={"X-Session-Id": session_id},
    )  # fmt: skip
    async with websockets.connect(f"{server.ws_url}/v1/realtime?session_id={session_id}") as ws:
        await ws.recv()
        await _ws_turn(ws, "And of Germany?")
    stored = httpx.get(server.url(f"/v1/sessions/{session_id}/messages")).json()["data"]
    texts = [(m["role"], m["content"][0]["text"]) for m in stored]
    assert texts[:2] == [
        ("user", FRANCE[0]["content"]),
        ("assistant", reply.choices[0].message.content),
    ]
    assert [role for role, _ in texts[2:]] == ["user", "assistant"] and texts[2][
        1
    ] == "And of Germany?"


def test_a_client_that_goes_away_mid_stream_cancels_the_generation(tmp_path):
    words = 400
    env = serve_env(
        tmp_path, ASSISTANT_LLM__ADAPTER="scripted", ASSISTANT_LLM__TOKEN_DELAY_S="0.05",
        ASSISTANT_LLM__MODEL=" ".join(f"w{i}" for i in range(words)),
        ASSISTANT_LLM__MAX_NEW_TOKENS=str(words),
    )  # fmt: skip
    with ServerProcess(env, log_level="info") as slow:
        with openai.OpenAI(base_url=slow.url("/v1"), api_key="unused") as client:
            stream = client.chat.completions.create(model="scripted", messages=FRANCE, stream=True)
            received = 0
            for chunk in stream:
                received += bool(chunk.choices[0].delta.content)
                if received == 3:
                    break
            stream.close()  # the client goes away

        def cancelled() -> dict[str, float] | None:
            metrics = _metrics(httpx.get(slow.url("/metrics")).text)
            return metrics if metrics.get('assistant_responses_total{status="cancelled"}') else None

        metrics = wait_for(
            cancelled, what=lambda: "the cancellation on the server:\n" + slow.log_tail()
        )
        assert "cancelled: the client went away" in slow.log_text()
    generated = metrics["assistant_output_tokens_total"]
    print(
        f"\ncancelled after {received} deltas received: {generated:.0f} of {words} tokens generated"
    )
    assert received <= generated < words


def _metrics(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
