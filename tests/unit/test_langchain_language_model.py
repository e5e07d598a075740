"""LangChainLanguageModel: a LangChain chat model behind the LanguageModel port, serving a
WebSocket turn in process, with its options, usage, images and the registry's import path."""

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from adapters.langchain import LangChainLanguageModel
from assistant.config import LLMSettings, Settings
from assistant.errors import ConfigurationError
from assistant.ports import IMAGE_MARKER, GenerationOptions, Prompt, PromptImage, PromptMessage
from assistant.registry import build_language_model
from assistant.server.app import create_app
from assistant.testing.memory import MemoryStore
from tests.support.langchain_models import HELLO, hello, recording
from tests.support.ws import until

pytestmark = pytest.mark.filterwarnings(
    "error::langchain_core._api.deprecation.LangChainDeprecationWarning"
)


def prompt(*messages):
    return Prompt(tuple(PromptMessage(role, text, images) for role, text, images in messages))


async def collect(llm, the_prompt, options=None):
    generation = llm.stream(the_prompt, options)
    deltas = [d async for d in generation]
    return deltas, generation


def test_it_serves_a_websocket_turn():
    llm = LangChainLanguageModel(hello())
    store = MemoryStore()
    with TestClient(create_app(Settings(), llm=llm, store=store)) as client:
        with client.websocket_connect("/v1/realtime") as ws:
            session_id = ws.receive_json()["session"]["id"]
            ws.send_json({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "hi"}]}})  # fmt: skip
            until(ws, "conversation.item.created")
            ws.send_json({"type": "response.create"})
            events = until(ws, "response.done")
        stored = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) >= 5 and "".join(deltas) == HELLO
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["usage"]["output_tokens"] > 0
    assert [m["role"] for m in stored] == ["user", "assistant"]


async def test_options_are_bound_where_the_model_has_fields_and_usage_is_its_own():
    model = recording(usage={"input_tokens": 11, "output_tokens": 7})
    llm = LangChainLanguageModel(model)
    assert llm.generation_kwargs == {"max_new_tokens": "max_tokens", "temperature": "temperature"}
    the_prompt = prompt(("system", "be kind", ()), ("user", "hello", ()), ("assistant", "hi!", ()),
                        ("user", "again", ()))  # fmt: skip
    options = GenerationOptions(max_new_tokens=9, temperature=0.5, stop=("at a time",))
    deltas, generation = await collect(llm, the_prompt, options)
    assert "".join(deltas) == "Hello from LangChain, one word "  # the port cuts at the stop string
    messages, kwargs = model.calls[-1]
    assert kwargs == {"max_tokens": 9, "temperature": 0.5, "stop": ["at a time"]}
    assert [(m.type, m.content) for m in messages] == [
        ("system", "be kind"), ("human", "hello"), ("ai", "hi!"), ("human", "again"),
    ]  # fmt: skip
    assert generation.finish_reason == "stop"
    assert generation.usage.input_tokens > 0  # estimated: the usage chunk never came
    deltas, generation = await collect(llm, the_prompt)
    assert "".join(deltas) == HELLO and "stop" not in model.calls[-1][1]
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (11, 7)


async def test_a_model_without_option_fields_gets_none_and_usage_is_estimated():
    model = recording()
    llm = LangChainLanguageModel(model, generation_kwargs={})
    _, generation = await collect(llm, prompt(("user", "count me", ())))
    assert model.calls[-1][1] == {}
    assert generation.usage.input_tokens == llm.count_tokens("count me") + 4
    assert generation.usage.output_tokens == llm.count_tokens(HELLO)
    with pytest.raises(ConfigurationError, match="no GenerationOptions field"):
        LangChainLanguageModel(model, generation_kwargs={"top_k": "top_k"})


async def test_images_go_as_standard_blocks_to_a_model_declared_image_capable():
    pixels = np.zeros((6, 9, 3), np.uint8)
    pixels[..., 1] = 200
    the_prompt = prompt(("user", f"look {IMAGE_MARKER} there", (PromptImage("k", pixels=pixels),)))
    model = recording()
    await collect(LangChainLanguageModel(model, image_input=True), the_prompt)
    text_before, image, text_after = model.calls[-1][0][0].content
    assert (text_before, text_after) == ({"type": "text", "text": "look "}, {"type": "text", "text": " there"})
    assert image["type"] == "image" and image["mime_type"] == "image/png"
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(image["base64"]))).convert("RGB"))
    assert np.array_equal(decoded, pixels)
    text_only = recording()
    await collect(LangChainLanguageModel(text_only), the_prompt)
    assert text_only.calls[-1][0][0].content == "look  there"


async def test_cancel_stops_the_reply():
    llm = LangChainLanguageModel(hello())
    generation = llm.stream(prompt(("user", "hi", ())))
    deltas = []
    async for delta in generation:
        deltas.append(delta)
        generation.cancel()
    assert deltas == ["Hello"] and generation.finish_reason == "cancelled"


def test_the_registry_builds_it_from_an_import_path():
    def settings(model):
        return Settings(llm=LLMSettings(adapter="langchain", model=model, token_timeout_s=7))

    for path in ("tests.support.langchain_models:hello", "tests.support.langchain_models:HELLO_MODEL"):
        llm = build_language_model(settings(path))
        assert isinstance(llm, LangChainLanguageModel) and llm.token_timeout_s == 7
        assert llm.name == "langchain:GenericFakeChatModel"
    for path, why in [
        ("", "import path 'package.module:attribute'"),
        ("tests.support.langchain_models", "import path"),
        ("no_such_module_here:chat", "cannot import the langchain chat model 'no_such_module_here:chat'"),
        ("tests.support.langchain_models:nothing", "cannot import .*langchain_models:nothing"),
        ("tests.support.langchain_models:HELLO", "is a str, not a LangChain chat model"),
    ]:
        with pytest.raises(ConfigurationError, match=why):
            build_language_model(settings(path))
