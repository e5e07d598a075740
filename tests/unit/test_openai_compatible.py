"""The openai_compatible language model against httpx's own test transport: SSE parsing cut
anywhere, usage and finish reasons, retries before the first token only, the remote's errors,
the API key kept out of messages and logs, images as ``image_url`` parts."""

from __future__ import annotations

import base64
import io
import logging

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from adapters.llm import openai_compatible
from adapters.llm.openai_compatible import OpenAICompatibleLanguageModel
from assistant.config import LLMSettings, Settings
from assistant.errors import (
    ConfigurationError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
)
from assistant.ports import (
    IMAGE_MARKER,
    GenerationOptions,
    Prompt,
    PromptImage,
    PromptMessage,
)
from assistant.registry import build_language_model

KEY = "sk-remote-very-secret-123"
PROMPT = Prompt((PromptMessage("system", "Be brief."), PromptMessage("user", "Hello there")))


def sse(*events: object, done: bool = True) -> bytes:
    lines = [b"data: " + orjson.dumps(event) + b"\n\n" for event in events]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                     "completion_tokens": completion_tokens}}  # fmt: skip


class Body(httpx.AsyncByteStream):
    """A response body in the given pieces; ``fail`` is raised after them (a broken stream);
    remembers whether it was closed."""

    def __init__(self, pieces: list[bytes], fail: Exception | None = None) -> None:
        self.pieces, self.fail, self.closed, self.sent = pieces, fail, False, 0

    async def __aiter__(self):
        for piece in self.pieces:
            self.sent += 1
            yield piece
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.closed = True


class Remote:
    """A scripted remote: each request takes the next answer (a Response, or an exception to
    raise as the transport would); the requests are kept."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> dict:
        return orjson.loads(self.requests[index].content)


def streamed(pieces: Body | list[bytes] | bytes, status: int = 200, **headers) -> httpx.Response:
    if not isinstance(pieces, Body):
        pieces = Body([pieces] if isinstance(pieces, bytes) else pieces)
    headers = {"content-type": "text/event-stream", **headers}
    return httpx.Response(status, stream=pieces, headers=headers)


def model(remote: Remote, **kw) -> OpenAICompatibleLanguageModel:
    kw.setdefault("api_key", KEY)
    return OpenAICompatibleLanguageModel(
        kw.pop("base_url", "http://gpu-box:8000/v1"), model="served-model",
        transport=httpx.MockTransport(remote), **kw,
    )  # fmt: skip


async def run(llm, prompt=PROMPT, options=None):
    generation = llm.stream(prompt, options or GenerationOptions(max_new_tokens=16))
    deltas = [d async for d in generation]
    return generation, deltas


# -- SSE through the adapter --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.text("abcé€😀 ", min_size=1, max_size=5), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
async def test_the_reply_streams_whole_through_any_cutting_of_the_body(words, cuts):
    wire = sse(*[delta(w) for w in words], usage_chunk(9, len(words)))
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in zip(points, points[1:], strict=False)]
    llm = model(Remote(streamed(pieces)))
    try:
        generation, deltas = await run(llm, options=GenerationOptions(max_new_tokens=64))
    finally:
        await llm.aclose()
    assert "".join(deltas) == "".join(words)
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (9, len(words))


# -- the request, usage, finish reasons -----------------------------------------------------------


async def test_the_request_is_an_openai_streamed_chat_completion_with_the_bearer_key():
    remote = Remote(streamed(sse(delta("Hi"), delta(" you", "stop"), usage_chunk(12, 2))))
    llm = model(remote)
    options = GenerationOptions(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    generation, deltas = await run(llm, options=options)
    await llm.aclose()
    assert deltas == ["Hi", " you"] and generation.finish_reason == "stop"
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (12, 2)
    request = remote.requests[0]
    assert str(request.url) == "http://gpu-box:8000/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = remote.body()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"},
    ]  # fmt: skip
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (7, 0.5, 0.9)
    assert (body["model"], body["seed"]) == ("served-model", 3)
    assert "stop" not in body


async def test_stop_strings_are_passed_on_to_the_remote():
    remote = Remote(streamed(sse(delta("Hi", "stop"))))
    llm = model(remote)
    await run(llm, options=GenerationOptions(max_new_tokens=5, stop=("\nUser:", "###")))
    await llm.aclose()
    assert remote.body()["stop"] == ["\nUser:", "###"]


async def test_without_a_usage_chunk_the_deltas_are_counted_and_length_is_reported():
    remote = Remote(streamed(sse(delta("a"), delta("b"), delta("c d", "length"))))
    llm = model(remote)
    generation, deltas = await run(llm, options=GenerationOptions(max_new_tokens=4))
    assert deltas == ["a", "b", "c d"]
    # "length": the remote stopped at max_tokens though its chunks held fewer deltas
    assert generation.usage.output_tokens == 4 and generation.finish_reason == "length"
    assert generation.usage.input_tokens == sum(llm.count_tokens(m.text) + 4 for m in PROMPT.messages)

    remote.answers = [streamed(sse(delta("a"), delta("b", "stop")))]
    generation, _ = await run(llm, options=GenerationOptions(max_new_tokens=4))
    await llm.aclose()
    assert generation.usage.output_tokens == 2 and generation.finish_reason == "stop"


def test_tokens_are_estimated_from_ascii_and_other_utf8_bytes():
    llm = model(Remote(streamed(b"")))
    assert llm.count_tokens("") == 0
    assert llm.count_tokens("four") == 1 and llm.count_tokens("hello") == 2
    assert llm.count_tokens("日本語") == 5  # 9 bytes / 2, rounded up
    assert llm.count_tokens("schön") == 2  # 4 ASCII bytes / 4 + 2 bytes / 2


async def test_after_done_the_body_is_read_to_its_end_so_the_connection_is_kept():
    body = Body([sse(delta("ok", "stop")), b": the chunked body's end\n\n"])
    llm = model(Remote(streamed(body)))
    _, deltas = await run(llm)
    await llm.aclose()
    assert deltas == ["ok"] and body.sent == 2


# -- retries --------------------------------------------------------------------------------------


async def test_a_refused_connection_is_retried_before_the_first_token():
    remote = Remote(httpx.ConnectError("[Errno 111] Connection refused"),
                    httpx.ConnectError("[Errno 111] Connection refused"),
                    streamed(sse(delta("ok", "stop"))))  # fmt: skip
    llm = model(remote, retries=2)
    _, deltas = await run(llm)
    await llm.aclose()
    assert deltas == ["ok"] and len(remote.requests) == 3


async def test_retries_run_out_into_a_model_error_naming_the_remote_only():
    remote = Remote(httpx.ConnectError("[Errno 111] Connection refused"))
    llm = model(remote, retries=1, base_url="http://bob:hunter22@gpu-box:8000/v1?token=xyz",
                api_key=None)  # fmt: skip
    with pytest.raises(ModelError) as failed:
        await run(llm)
    await llm.aclose()
    assert len(remote.requests) == 2
    assert str(remote.requests[0].url) == "http://gpu-box:8000/v1/chat/completions?token=xyz"
    assert remote.requests[0].headers["authorization"].startswith("Basic ")  # from the URL
    assert failed.value.code == "model_error"
    message = failed.value.message
    assert "gpu-box:8000" in message and "unreachable" in message and "refused" in message
    for secret in ("hunter22", "bob", "xyz", KEY):
        assert secret not in message


async def test_429_and_503_are_retried_after_their_retry_after():
    remote = Remote(streamed(b"busy", status=429, **{"retry-after": "0"}),
                    streamed(b'{"error": "loading"}', status=503),
                    streamed(sse(delta("ok", "stop"))))  # fmt: skip
    llm = model(remote, retries=2)
    _, deltas = await run(llm)
    await llm.aclose()
    assert deltas == ["ok"] and len(remote.requests) == 3


async def test_a_stream_broken_before_its_first_token_is_retried():
    broken = Body([sse(delta(""), done=False)], fail=httpx.RemoteProtocolError("peer closed"))
    remote = Remote(streamed(broken), streamed(sse(delta("ok", "stop"))))
    llm = model(remote)
    _, deltas = await run(llm)
    await llm.aclose()
    assert deltas == ["ok"] and len(remote.requests) == 2 and broken.closed


async def test_no_retry_once_a_token_was_yielded():
    broken = Body([sse(delta("Hel"), done=False)], fail=httpx.ReadError("connection reset"))
    remote = Remote(streamed(broken), streamed(sse(delta("never", "stop"))))
    llm = model(remote, retries=2)
    generation = llm.stream(PROMPT, GenerationOptions(max_new_tokens=16))
    deltas = []
    with pytest.raises(ModelError) as failed:
        async for piece in generation:
            deltas.append(piece)
    await llm.aclose()
    assert deltas == ["Hel"] and len(remote.requests) == 1
    assert "broke off" in failed.value.message and generation.finish_reason == "error"


# -- the remote's errors --------------------------------------------------------------------------


async def test_a_4xx_is_a_model_error_with_the_remotes_message_and_never_the_key():
    echo = {"error": {"message": f"model 'served-model' not found (key {KEY})", "code": 404}}
    remote = Remote(streamed(orjson.dumps(echo), status=404))
    llm = model(remote, retries=2)
    with pytest.raises(ModelError) as failed:
        await run(llm)
    await llm.aclose()
    assert len(remote.requests) == 1  # a 4xx is not retried
    message = failed.value.message
    assert failed.value.code == "model_error" and "HTTP 404" in message
    assert "model 'served-model' not found" in message and KEY not in message


async def test_a_400_about_the_context_length_is_context_length_exceeded():
    too_long = {"object": "error", "message": "This model's maximum context length is 2048 tokens"}
    llm = model(Remote(streamed(orjson.dumps(too_long), status=400)))
    with pytest.raises(ContextLengthError) as failed:
        await run(llm)
    await llm.aclose()
    assert failed.value.code == "context_length_exceeded"
    assert "maximum context length is 2048" in failed.value.message


async def test_an_error_sent_in_the_stream_and_a_read_timeout_are_mapped():
    llm = model(Remote(streamed(sse(delta("a"), {"error": {"message": "CUDA out of memory"}}))))
    with pytest.raises(ModelError) as failed:
        await run(llm)
    assert "CUDA out of memory" in failed.value.message and failed.value.code == "model_error"
    await llm.aclose()

    stalled = Body([], fail=httpx.ReadTimeout("timed out"))
    llm = model(Remote(streamed(stalled)), read_timeout_s=30)
    with pytest.raises(ModelTimeoutError) as slow:
        await run(llm)
    await llm.aclose()
    assert slow.value.code == "model_timeout" and "30 s" in slow.value.message


async def test_the_key_never_reaches_a_log_record(caplog):
    remote = Remote(httpx.ConnectError(f"refused (Bearer {KEY})"), streamed(b"{}", status=401))
    llm = model(remote, retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as failed:
        await run(llm)
    await llm.aclose()
    assert "HTTP 401" in failed.value.message
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)
    assert KEY not in repr(llm) and KEY not in failed.value.message


# -- cancel and close -----------------------------------------------------------------------------


async def test_cancel_closes_the_remote_stream_at_once():
    body = Body([sse(delta(f"w{i} "), done=False) for i in range(100)])
    llm = model(Remote(streamed(body)))
    generation = llm.stream(PROMPT, GenerationOptions(max_new_tokens=200))
    deltas = []
    async for piece in generation:
        deltas.append(piece)
        if len(deltas) == 3:
            generation.cancel()
    await llm.aclose()
    assert deltas == ["w0 ", "w1 ", "w2 "] and generation.finish_reason == "cancelled"
    assert body.closed and body.sent < 100


async def test_a_consumer_that_stops_closes_the_remote_stream():
    body = Body([sse(delta(f"w{i} "), done=False) for i in range(100)])
    llm = model(Remote(streamed(body)))
    generation = llm.stream(PROMPT, GenerationOptions(max_new_tokens=200))
    async for _ in generation:
        break
    await generation.aclose()
    await llm.aclose()
    assert body.closed and body.sent < 100


# -- images ---------------------------------------------------------------------------------------


def pixels(color: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros((16, 24, 3), np.uint8)
    image[:] = color
    return image


async def test_images_go_as_image_url_parts_where_their_markers_stand():
    remote = Remote(streamed(sse(delta("A red and a blue square.", "stop"))))
    llm = model(remote, image_input=True)
    assert llm.capabilities.images and not llm.capabilities.embeddings
    red = PromptImage(key="red", pixels=pixels((255, 0, 0)))
    blue = PromptImage(key="blue", pixels=pixels((0, 0, 255)))
    text = f"Image 1: {IMAGE_MARKER}\nImage 2: {IMAGE_MARKER}\nWhat colours?"
    prompt = Prompt((PromptMessage("user", text, (red, blue)),))
    await run(llm, prompt)
    await llm.aclose()
    parts = remote.body()["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
    assert parts[0]["text"] == "Image 1: " and parts[4]["text"] == "\nWhat colours?"
    for part, color in ((parts[1], (255, 0, 0)), (parts[3], (0, 0, 255))):
        url = part["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        assert decoded.shape == (16, 24, 3)
        assert np.abs(decoded.astype(int) - color).max() < 8  # JPEG: near, not exact


async def test_without_image_input_no_image_capability_and_plain_text_content():
    remote = Remote(streamed(sse(delta("ok", "stop"))))
    llm = model(remote)
    assert not llm.capabilities.images and not llm.capabilities.embeddings
    await run(llm, Prompt((PromptMessage("user", "[Image 1: a cat]\nWhat is it?"),)))
    await llm.aclose()
    assert remote.body()["messages"][0]["content"] == "[Image 1: a cat]\nWhat is it?"


# -- settings and the registry --------------------------------------------------------------------


async def test_the_registry_builds_it_from_settings_and_needs_a_base_url():
    settings = Settings(llm=LLMSettings(
        adapter="openai_compatible", base_url="http://gpu-box:8000/v1", api_key=KEY,
        model="m", image_input=True, context_tokens=8192, retries=0,
    ))  # fmt: skip
    llm = build_language_model(settings)
    assert isinstance(llm, OpenAICompatibleLanguageModel)
    assert (llm.remote, llm.model, llm.retries) == ("gpu-box:8000", "m", 0)
    assert llm.capabilities.context_tokens == 8192 and llm.capabilities.images
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    await llm.aclose()
    assert "gpu-box:8000" in openai_compatible.prepare(settings)[0]

    with pytest.raises(ConfigurationError) as missing:
        build_language_model(Settings(llm=LLMSettings(adapter="openai_compatible")))
    assert "ASSISTANT_LLM__BASE_URL" in missing.value.message
    with pytest.raises(ConfigurationError):
        OpenAICompatibleLanguageModel("localhost:8000")  # no scheme
