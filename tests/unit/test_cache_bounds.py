"""The process's memory (``assistant.heap``): the bounded caches, each one registered with its
capacity and shown on /metrics, the per-session ones bounded by count and emptied of a session when
its connection closes (the soak found the last prompts of every session seen since start kept,
~6 KB each); and the allocator settings ``assistant serve`` gives its processes."""

from __future__ import annotations

import contextlib
import gc
import json
import os

import pytest
from fastapi.testclient import TestClient

from assistant import heap
from assistant.config import Settings
from assistant.messages import Message, SessionInfo
from assistant.prompt import PromptBudget, PromptCache, build_prompt
from assistant.server.app import create_app
from assistant.server.metrics import Metrics
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.waiting import wait_for
from tests.support.ws import until


def words(text: str) -> int:
    return len(text.split())


class Box(dict):  # a dict that can be weakly referenced
    pass


def test_tracked_caches_are_summed_by_name_while_they_live():
    small, large = Box(a=1), Box(b=1, c=2)
    heap.track("test_boxes", small, 10)
    heap.track("test_boxes", large, lambda box: 4 * len(box))
    assert heap.caches()["test_boxes"] == heap.CacheFill(entries=3, capacity=18)
    assert not heap.caches()["test_boxes"].full
    large["d"] = 3
    assert heap.caches()["test_boxes"] == heap.CacheFill(entries=4, capacity=22)
    del large
    gc.collect()
    assert heap.caches()["test_boxes"] == heap.CacheFill(entries=1, capacity=10)
    del small
    gc.collect()
    assert "test_boxes" not in heap.caches()


def test_metrics_show_each_cache_and_the_worker_that_answered():
    cache = PromptCache(sessions=7)
    cache.build("s", "sys", [Message.from_text("user", "hi")], PromptBudget(100, 1), words)
    lines = set(Metrics().render().decode().splitlines())
    fill = heap.caches()["prompts"]  # other tests' caches may still live in this process
    assert fill.entries >= 1 and fill.capacity >= 7
    assert f'assistant_cache_entries{{cache="prompts"}} {float(fill.entries)}' in lines
    assert f'assistant_cache_capacity{{cache="prompts"}} {float(fill.capacity)}' in lines
    assert f"assistant_worker_pid {float(os.getpid())}" in lines


def test_the_prompt_cache_keeps_its_bound_and_forgets_a_session():
    cache = PromptCache(sessions=3)
    budget = PromptBudget(tokens=1000, per_message=1)
    histories = {f"s{i}": [Message.from_text("user", f"question {i}")] for i in range(5)}
    for session, history in histories.items():
        cache.build(session, "sys", history, budget, words)
    assert len(cache) == 3  # s0 and s1, the least recently built, went first
    cache.forget("s3")
    cache.forget("unknown")
    assert len(cache) == 2
    grown = [*histories["s3"], Message.from_text("assistant", "answer"),
             Message.from_text("user", "and?")]  # fmt: skip
    extended = cache.extended
    built = cache.build("s3", "sys", grown, budget, words)
    assert built == build_prompt("sys", grown, budget, words, cache_key="s3")
    assert cache.extended == extended  # built anew: nothing of s3 was left to extend


async def test_the_renderer_keeps_its_bound_the_oldest_first_out(monkeypatch):
    from assistant import rendering

    monkeypatch.setattr(rendering, "_PLAIN_PROMPTS_MAX", 3)
    renderer = rendering.MessageRenderer(ScriptedLM())
    history = [Message.from_text("user", f"message {i}") for i in range(5)]
    render = await renderer.for_history(history, None)
    first = [render(m) for m in history]
    assert [p.text for p in first] == [f"message {i}" for i in range(5)]
    assert list(renderer._plain) == [m.id for m in history[2:]]  # full, not emptied
    assert render(history[4]) is first[4] and render(history[0]) is not first[0]


def _flat(info: SessionInfo, **extra: str) -> tuple[str, ...]:
    fields = {k: json.dumps(v) for k, v in info.model_dump(mode="json").items()} | extra
    return tuple(x for pair in fields.items() for x in pair)


def test_session_metadata_is_parsed_once_per_content_bounded_and_forgotten():
    from adapters.memory.redis_codec import SUMMARY, SUMMARY_UPTO, SessionMeta

    meta = SessionMeta(size=2)
    first = SessionInfo(id="sess_a")
    info, summary = meta("sess_a", _flat(first))
    assert info == first and summary is None
    assert meta("sess_a", _flat(first))[0] is info  # the same content: not parsed again
    changed = SessionInfo(id="sess_a", created_at=first.created_at, instructions="be brief")
    summed = json.dumps({"text": "earlier", "upto": 4, "last_id": "msg_4", "notes": []})
    info2, summary2 = meta("sess_a", _flat(changed, **{SUMMARY: summed, SUMMARY_UPTO: "4"}))
    assert info2 == changed and summary2 is not None and summary2.text == "earlier"
    meta("sess_b", _flat(SessionInfo(id="sess_b")))
    meta("sess_c", _flat(SessionInfo(id="sess_c")))
    assert len(meta) == 2  # sess_a, the least recently read, went first
    meta.forget("sess_b")
    assert len(meta) == 1 and meta("sess_c", _flat(SessionInfo(id="sess_c")))[0].id == "sess_c"


def test_session_key_names_are_made_once_bounded_and_forgotten():
    from adapters.memory.redis_codec import SessionKeys

    names = SessionKeys("assistant:default", size=2)
    keys = names("sess_a")
    assert keys["meta"] == "assistant:default:s:{sess_a}:meta" and names("sess_a") is keys
    names("sess_b")
    names("sess_c")  # full: sess_a's, the oldest, go
    assert len(names) == 2 and "sess_a" not in names._by_session
    names.forget("sess_c")
    assert len(names) == 1 and names("sess_a") == keys


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def served(request):
    """The real app on the in-memory store or on the Redis store with a real redis-server."""
    with contextlib.ExitStack() as stack:
        if request.param == "memory":
            store = MemoryStore()
        else:
            from adapters.memory.redis import RedisSessionStore

            store = RedisSessionStore.from_url(request.getfixturevalue("redis_url"))
        app = create_app(Settings(), llm=ScriptedLM(), store=store)
        client = stack.enter_context(TestClient(app))
        stack.callback(client.portal.call, store.aclose)
        yield client, request.param


def test_a_closed_connection_leaves_no_prompt_or_metadata_of_its_session(served):
    from adapters.memory import redis_codec

    client, store = served
    orchestrator = client.app.state.components.orchestrator
    held = orchestrator._prompts._by_session
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "hello"}]}  # fmt: skip
        ws.send_json({"type": "conversation.item.create", "item": item})
        ws.send_json({"type": "response.create"})
        until(ws, "response.done")
        assert session_id in held  # kept for the next turn while the connection is open
        kept = [held]
        if store == "redis":
            keys = client.app.state.components.store._keys._by_session
            kept += [redis_codec.session_meta._by_session, keys]
        assert all(session_id in cache for cache in kept)
    wait_for(lambda: not any(session_id in cache for cache in kept),
             what="the session's prompt, metadata and key names dropped as it closed")  # fmt: skip


def test_the_allocator_is_tuned_unless_the_environment_says_otherwise():
    environ = {"MALLOC_ARENA_MAX": "4"}  # an operator's own choice
    assert heap.tune_allocator(environ) == {"MALLOC_MMAP_THRESHOLD_": "131072"}
    assert environ == {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}
    assert heap.tune_allocator(environ) == {}  # nothing left to set
    assert heap.MALLOC_TUNING["MALLOC_ARENA_MAX"] == "2"


def test_a_process_running_the_model_keeps_glibcs_mmap_threshold():
    environ: dict[str, str] = {}
    assert heap.tune_allocator(environ, model_in_process=True) == {"MALLOC_ARENA_MAX": "2"}
    assert "MALLOC_MMAP_THRESHOLD_" not in environ
