"""The support bot end to end: two real ``assistant serve`` workers on one real redis-server, the
real all-MiniLM-L6-v2 in both. The test corpus (all four formats) is uploaded through worker A
(the scripted model: it only ingests); worker B (the real SmolLM2) answers from it over the WebSocket with a streamed reply and a
citation of the right document; ``POST /v1/chat/completions`` answers with the same annotations;
an out-of-scope question gets the profile's fallback, no model call (no tokens), stored
``unanswered``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support.server import ServerProcess, link_prepared_models, serve_env
from tests.support.ws import next_event

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"
FALLBACK = "I can't find that in our help pages."
IN_SCOPE = ("What does error code E-517 mean at checkout?", "payments.pdf")
OUT_OF_SCOPE = "Can you write me a poem about the sea?"


@pytest.fixture(scope="module")
def workers(redis_server, tmp_path_factory):
    """Worker A (scripted model) and worker B (SmolLM2): one Redis, the bot answering from
    knowledge base ``help``."""
    started = []
    try:
        for name, model in (("a", {"ASSISTANT_LLM__ADAPTER": "scripted"}), ("b", {})):
            data_dir = tmp_path_factory.mktemp(f"bot-{name}")
            link_prepared_models(data_dir)
            env = serve_env(
                data_dir, ASSISTANT_REDIS_URL=redis_server.url, HF_HUB_OFFLINE="1",
                ASSISTANT_MEMORY__KEY_PREFIX="support-bot", ASSISTANT_BOT__KNOWLEDGE_BASE="help",
                ASSISTANT_BOT__FALLBACK=FALLBACK, ASSISTANT_LLM__MAX_NEW_TOKENS="24", **model,
            )  # fmt: skip
            started.append(ServerProcess(env).__enter__())
        yield started
    finally:
        for server in reversed(started):
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def ingested(workers):
    """The corpus, uploaded through worker A (open mode on loopback: the caller is admin)."""
    files = [("file", (p.name, p.read_bytes())) for p in sorted(CORPUS.glob("*.*"))
             if p.suffix != ".jsonl"]  # fmt: skip
    answer = httpx.post(workers[0].url("/v1/knowledge/help/documents"), files=files, timeout=300)
    assert answer.status_code == 200, answer.text
    assert {d["status"] for d in answer.json()["data"]} == {"added"}, answer.json()
    listed = httpx.get(workers[1].url("/v1/knowledge/help/documents"), timeout=30).json()
    assert {d["format"] for d in listed["data"]} == {"markdown", "text", "html", "pdf"}
    return workers


async def ask(server, text):
    """One WebSocket turn: (the text deltas, ``response.done``'s response)."""
    async with websockets.connect(server.ws_url + "/v1/realtime", max_size=None) as ws:
        await next_event(ws, "session.created")
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]}  # fmt: skip
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await next_event(ws, "conversation.item.created")
        await ws.send(json.dumps({"type": "response.create"}))
        done, seen = await next_event(ws, "response.done", timeout_s=120)
        assert not [e for e in seen if e["type"] == "error"], seen
        deltas = [e["delta"] for e in seen if e["type"] == "response.output_text.delta"]
        return deltas, done["response"]


async def test_a_second_worker_answers_from_what_the_first_ingested_with_a_citation(ingested):
    question, document = IN_SCOPE
    deltas, response = await ask(ingested[1], question)
    assert response["status"] in ("completed", "incomplete") and deltas  # (max 24 tokens)
    (item,) = response["output"]
    assert item["status"] == response["status"]
    part = item["content"][0]
    assert part["text"] == "".join(deltas) and response["usage"]["output_tokens"] > 0
    cited = part["annotations"]
    assert cited and cited[0]["type"] == "file_citation", part
    assert cited[0]["filename"] == document, cited  # the best passage is the right document
    assert cited[0]["page"] == 1 and "E-517" in " ".join(c["quote"] for c in cited)


async def test_an_out_of_scope_question_gets_the_fallback_without_the_model(ingested):
    deltas, response = await ask(ingested[1], OUT_OF_SCOPE)
    assert "".join(deltas) == FALLBACK
    (item,) = response["output"]
    assert item["status"] == "unanswered" and item["content"][0]["annotations"] == []
    assert response["usage"]["input_tokens"] == 0 and response["usage"]["output_tokens"] == 0


def test_chat_completions_answer_with_the_same_annotations(ingested):
    question, document = IN_SCOPE
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": question}]}
    whole = httpx.post(ingested[1].url("/v1/chat/completions"), json=body, timeout=120).json()
    choice = whole["choices"][0]
    assert choice["message"]["content"] and "unanswered" not in choice
    assert choice["message"]["annotations"][0]["filename"] == document, choice
    refused = httpx.post(ingested[1].url("/v1/chat/completions"), timeout=120, json={
        **body, "messages": [{"role": "user", "content": OUT_OF_SCOPE}], "stream": True,
    }).text  # fmt: skip
    chunks = [json.loads(line[6:]) for line in refused.splitlines()
              if line.startswith("data: {")]  # fmt: skip
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == FALLBACK and chunks[-1]["choices"][0]["unanswered"] is True
