"""LangChain and LangGraph against real processes: AssistantChatModel in LCEL chains on a running
``assistant serve`` (the scripted model; its vision pipeline describes an image), a LangGraph
thread on a real redis-server resumed by a second process, and a server whose model is a
LangChain chat model (``ASSISTANT_LLM__ADAPTER=langchain``) answering a WebSocket turn."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import websockets
from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from PIL import Image

from adapters.langchain import AssistantChatModel
from tests.support.langchain_models import HELLO
from tests.support.server import ServerProcess, serve_env
from tests.support.ws import next_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("error::langchain_core._api.deprecation.LangChainDeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{question}")])


def _redis_db(redis_server, db: int) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory, redis_server):
    env = serve_env(tmp_path_factory.mktemp("lc-scripted"), ASSISTANT_LLM__ADAPTER="scripted",
                    ASSISTANT_REDIS_URL=_redis_db(redis_server, 9))  # fmt: skip
    with ServerProcess(env) as server:
        yield server


@pytest.fixture(scope="module")
def langchain_server(tmp_path_factory, redis_server):
    env = serve_env(
        tmp_path_factory.mktemp("lc-adapter"),
        ASSISTANT_LLM__ADAPTER="langchain",
        ASSISTANT_LLM__MODEL="tests.support.langchain_models:hello",
        ASSISTANT_REDIS_URL=_redis_db(redis_server, 10),
        PYTHONPATH=str(ROOT),
    )
    with ServerProcess(env) as server:
        yield server


async def test_an_lcel_chain_streams_from_a_running_server(scripted_server):
    model = AssistantChatModel(base_url=scripted_server.url("/v1"))
    try:
        chain = PROMPT | model | StrOutputParser()
        pieces = [p async for p in chain.astream({"question": "is the sky blue today"})]
        assert len([p for p in pieces if p]) >= 5
        assert "".join(pieces) == "You said: is the sky blue today"
        chunks = [c async for c in model.astream("one two three")]
        assert [c.chunk_position for c in chunks][-1] == "last"
        assert all(c.chunk_position is None for c in chunks[:-1])
        usage = chunks[-1].usage_metadata
        assert usage["output_tokens"] == 5 and usage["input_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert chunks[-1].response_metadata["finish_reason"] == "stop"
        short = await model.ainvoke("one two three four", max_tokens=2)
        assert short.content == "You said:" and short.response_metadata["finish_reason"] == "length"
    finally:
        await model.aclose()


def test_the_sync_chain_streams_from_a_running_server(scripted_server):
    model = AssistantChatModel(base_url=scripted_server.url("/v1"))
    chain = PROMPT | model | StrOutputParser()
    assert chain.invoke({"question": "hello"}) == "You said: hello"
    pieces = list(chain.stream({"question": "a b c d"}))
    assert len([p for p in pieces if p]) >= 4 and "".join(pieces) == "You said: a b c d"
    assert model.invoke("stop here please", stop=[" please"]).content == "You said: stop here"


async def test_an_image_in_content_blocks_reaches_the_server(scripted_server):
    """The scripted model takes text only: the server's vision pipeline (EfficientNet-Lite0)
    describes the photo, and the model repeats the description."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="PNG")
    picture = base64.b64encode(buffer.getvalue()).decode()
    model = AssistantChatModel(base_url=scripted_server.url("/v1"))
    try:
        reply = await model.ainvoke([HumanMessage(content=[
            {"type": "text", "text": "what is this?"},
            {"type": "image", "base64": picture, "mime_type": "image/png"},
        ])])  # fmt: skip
    finally:
        await model.aclose()
    assert "cat" in reply.content, reply.content


def _turn(redis_url: str, thread: str, text: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.langgraph_chat", redis_url, thread, text],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_langgraph_thread_resumes_in_another_process(redis_server):
    url = _redis_db(redis_server, 11)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        first = _turn(url, "customer-42", "my order is 1234")
        assert first["messages"] == [["human", "my order is 1234"], ["ai", "You said: my order is 1234"]]
        assert client.keys("assistant:default:lg:{customer-42}:*")  # the first process is gone
        second = _turn(url, "customer-42", "where is it?")
    finally:
        client.close()
    assert second["messages"] == [
        ["human", "my order is 1234"], ["ai", "You said: my order is 1234"],
        ["human", "where is it?"], ["ai", "You said: where is it?"],
    ]  # fmt: skip
    assert second["shown"] == ["my order is 1234", "You said: my order is 1234", "where is it?"]


async def test_a_langchain_model_answers_a_websocket_turn_in_a_server(langchain_server):
    async with websockets.connect(langchain_server.ws_url + "/v1/realtime") as ws:
        await next_event(ws, "session.created")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await next_event(ws, "conversation.item.created")
        await ws.send(json.dumps({"type": "response.create"}))
        done, before = await next_event(ws, "response.done")
    deltas = [e["delta"] for e in before if e["type"] == "response.output_text.delta"]
    assert done["response"]["status"] == "completed", done
    assert len(deltas) >= 5 and "".join(deltas) == HELLO
    model = AssistantChatModel(base_url=langchain_server.url("/v1"))  # and over REST, full circle
    try:
        assert (await model.ainvoke("hi")).content == HELLO
    finally:
        await model.aclose()
