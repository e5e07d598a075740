"""AssistantChatModel in process: LCEL chains (sync and async), streaming as chunks arrive, the
last chunk's usage, images from content blocks, options, and the errors it gives."""

import base64
import io

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from PIL import Image

from adapters.langchain import AssistantChatModel
from assistant.config import LLMSettings, Settings
from assistant.errors import InvalidRequestError
from assistant.ports import IMAGE_MARKER, LanguageModelCapabilities
from assistant.testing.language_models import GatedLM, ScriptedLM
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.filterwarnings(
    "error::langchain_core._api.deprecation.LangChainDeprecationWarning"
)

PROMPT = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{question}")])


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_message(*pictures: np.ndarray, text="what is this?") -> HumanMessage:
    """Text, a standard image block (base64) and an OpenAI image_url block (a data URL)."""
    first, second = (base64.b64encode(png(p)).decode() for p in pictures)
    return HumanMessage(content=[
        {"type": "text", "text": text},
        {"type": "image", "base64": first, "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{second}"}},
    ])  # fmt: skip


async def test_an_lcel_chain_streams_several_chunks_and_ends_with_usage():
    lm = ScriptedLM()
    model = AssistantChatModel(language_model=lm)
    chain = PROMPT | model | StrOutputParser()
    pieces = [p async for p in chain.astream({"question": "is the sky blue"})]
    assert len([p for p in pieces if p]) >= 5
    assert "".join(pieces) == "You said: is the sky blue"
    assert [(m.role, m.text) for m in lm.prompts[-1].messages] == [
        ("system", "Be brief."), ("user", "is the sky blue"),
    ]  # fmt: skip

    chunks = [c async for c in model.astream("one two")]
    assert [c.chunk_position for c in chunks] == [None] * (len(chunks) - 1) + ["last"]
    last = chunks[-1]
    assert last.usage_metadata == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert last.response_metadata == {"finish_reason": "stop", "model_name": "scripted"}
    whole = await model.ainvoke("one two")
    assert whole.content == "You said: one two" and whole.usage_metadata["output_tokens"] == 4


def test_the_sync_methods_answer_too():
    model = AssistantChatModel(language_model=ScriptedLM(), model="my-model")
    chain = PROMPT | model | StrOutputParser()
    assert chain.invoke({"question": "hello"}) == "You said: hello"
    assert "".join(chain.stream({"question": "a b c"})) == "You said: a b c"
    reply = model.invoke([SystemMessage("x"), HumanMessage("hi")])
    assert reply.response_metadata == {"finish_reason": "stop", "model_name": "my-model"}
    assert reply.usage_metadata["total_tokens"] == reply.usage_metadata["input_tokens"] + 3
    thread = model._loop_thread._thread
    model.close()
    assert not thread.is_alive()
    assert model.invoke("again").content == "You said: again"  # a new loop thread
    model.close()


@pytest.mark.timeout(60)  # a stream that waited for the whole reply would hang here
def test_sync_stream_yields_while_the_model_is_still_generating():
    lm = GatedLM()
    stream = AssistantChatModel(language_model=lm).stream("wait for it")
    assert next(stream).content == "You"  # the model is held after its first word
    assert not lm.release.is_set() and not lm.closed.is_set()
    lm.release.set()
    assert "".join(c.content for c in stream) == " said: wait for it"
    wait_for(lm.closed.is_set, what="the generation to end")


@pytest.mark.timeout(60)  # a stream that waited for the whole reply would hang here
def test_leaving_a_sync_stream_early_closes_the_generation():
    lm = GatedLM()
    stream = AssistantChatModel(language_model=lm).stream("never finished")
    assert next(stream).content == "You"
    stream.close()
    wait_for(lm.closed.is_set, what="the cancelled generation to be closed")
    assert not lm.release.is_set()


@pytest.mark.timeout(60)  # a stream that waited for the whole reply would hang here
async def test_leaving_an_async_stream_early_closes_the_generation():
    lm = GatedLM()
    stream = AssistantChatModel(language_model=lm).astream("never finished")
    assert (await anext(stream)).content == "You"
    await stream.aclose()
    await wait_for_async(lm.closed.is_set, what="the closed generation to end")


async def test_images_in_content_blocks_reach_a_model_that_takes_images_as_pixels():
    lm = ScriptedLM()
    lm.capabilities = LanguageModelCapabilities(images=True, context_tokens=4096)
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 2] = 255
    await AssistantChatModel(language_model=lm).ainvoke([image_message(red, blue)])
    seen = lm.prompts[-1].messages[-1]
    assert seen.text == f"what is this?{IMAGE_MARKER}{IMAGE_MARKER}"
    assert [image.pixels.shape for image in seen.images] == [(20, 30, 3), (8, 8, 3)]
    assert np.array_equal(seen.images[0].pixels, red) and np.array_equal(seen.images[1].pixels, blue)


async def test_images_are_described_to_a_text_only_model():
    lm = ScriptedLM()
    described = []

    async def describe(pixels):
        described.append(pixels.shape)
        return f"a picture {pixels.shape[1]} wide"

    model = AssistantChatModel(language_model=lm, describe_images=describe)
    reply = await model.ainvoke([image_message(np.zeros((4, 5, 3), np.uint8), np.zeros((6, 7, 3), np.uint8))])
    assert described == [(4, 5, 3), (6, 7, 3)]
    assert lm.prompts[-1].messages[-1].text == (
        "what is this?[Image: a picture 5 wide]\n[Image: a picture 7 wide]\n"
    )
    assert "a picture 5 wide" in reply.content


@pytest.mark.parametrize("with_store", [False, True], ids=["model", "completions"])
async def test_in_process_images_go_through_the_configured_vision_encoder(with_store):
    """The real EfficientNet-Lite0 names the cat: directly (no store), or through the server's
    own completions and image pipeline (a store)."""
    from skimage import data

    from assistant.testing.memory import MemoryStore

    settings = Settings(llm=LLMSettings(adapter="scripted"))
    store = MemoryStore() if with_store else None
    model = AssistantChatModel.in_process(settings, store=store)
    cat = data.chelsea()
    picture = base64.b64encode(png(cat)).decode()
    message = HumanMessage(content=[
        {"type": "text", "text": "what is this?"},
        {"type": "image", "base64": picture, "mime_type": "image/png"},
    ])  # fmt: skip
    reply = await model.ainvoke([message])
    assert "cat" in reply.content, reply.content
    assert reply.usage_metadata["input_tokens"] > 0
    if store is not None:
        assert store.blobs, "the image pipeline stores the image it read"


async def test_options_stop_and_max_tokens():
    model = AssistantChatModel(language_model=ScriptedLM())
    assert (await model.ainvoke("one two three four", stop=[" three"])).content == "You said: one two"
    short = await model.bind(max_tokens=2).ainvoke("one two three")
    assert short.content == "You said:" and short.response_metadata["finish_reason"] == "length"
    with pytest.raises(ValueError, match="takes no option \\['top_k'\\]"):
        await model.ainvoke("x", top_k=3)


async def test_what_it_refuses():
    model = AssistantChatModel(language_model=ScriptedLM())
    with pytest.raises(NotImplementedError, match="does not call tools"):
        model.bind_tools([])
    with pytest.raises(InvalidRequestError) as refused:
        await model.ainvoke([HumanMessage(content=[{"type": "image", "url": "https://x.test/a.png"}])])
    assert refused.value.code == "image_url_not_allowed"
    with pytest.raises(InvalidRequestError, match="'tool' message is not supported"):
        await model.ainvoke([ToolMessage("42", tool_call_id="t1")])
    with pytest.raises(ValueError, match="one of base_url"):
        AssistantChatModel()
    with pytest.raises(ValueError, match="one of base_url"):
        AssistantChatModel(base_url="http://127.0.0.1:1/v1", language_model=ScriptedLM())
