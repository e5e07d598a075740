"""Crash-safe turns on a real Redis: two stores are two server processes (each its own instance
and heartbeat). A killed process (its heartbeat stopped, its key left to expire) loses its lease
long before the lease's own time is up, and the reply it was streaming is stored as
``interrupted`` by the next turn, once; a live process keeps its lease; a streaming reply's
partial is extended with only its new text, dropped at the end of the turn, and not written at
all for a reply done within the first flush interval."""

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from adapters.memory.redis import RedisSessionStore
from adapters.memory.redis_turns import decode_partial
from assistant.config import MemorySettings, Settings
from assistant.errors import SessionBusyError
from assistant.messages import Message, SessionInfo
from assistant.ports import PartialReply
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from tests.support.redis import wait_until_expired
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

LEASE_MS = 30_000


def new_store(redis_url, **options):
    options = {"ttl_s": 60, "lock_ttl_ms": LEASE_MS, "owner_heartbeat_ms": 100,
               "owner_ttl_ms": 300, **options}  # fmt: skip
    return RedisSessionStore.from_url(redis_url, **options)


@pytest.fixture
async def stores(redis_url):
    first, second = new_store(redis_url), new_store(redis_url)
    await first.create(SessionInfo(id="s1"))
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.fixture
async def raw(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_dead_processs_lease_is_taken_over_and_its_reply_stored_interrupted_once(
    stores, raw
):
    first, second = stores
    keys = first.keys("s1")
    await first.begin_turn("s1", "tok-a", message=Message.from_text("user", "tell me"))
    assert await first.renew_turn("s1", "tok-a", PartialReply("msg_r", "Once upon"))
    assert await first.renew_turn("s1", "tok-a", PartialReply("msg_r", 'Once upon a "time"'))
    assert decode_partial(await raw.get(keys["partial"])) == (
        first.turns.lock("tok-a"), 'Once upon a "time"'
    )
    first.turns.owner.stop_beating()  # killed: its heartbeat key is left to expire
    lease_left_ms = await raw.pttl(keys["lock"])
    asked = time.monotonic()
    started = await second.begin_turn(
        "s1", "tok-b", message=Message.from_text("user", "go on"), wait_s=LEASE_MS / 1000
    )
    took_s = time.monotonic() - asked
    # Before the dead writer's lease would have run out (30 s; its heartbeat lived 300 ms).
    assert took_s < lease_left_ms / 1000
    assert await raw.get(keys["lock"]) == second.turns.lock("tok-b")
    assert started.recovered and not await raw.exists(keys["partial"])
    assert [(m.role, m.status, m.text) for m in started.snapshot.messages] == [
        ("user", "completed", "tell me"),
        ("assistant", "interrupted", 'Once upon a "time"'),
        ("user", "completed", "go on"),
    ]
    assert started.snapshot.messages[1].id == "msg_r"
    # The dead writer, had it only stalled, writes nothing more and stores its reply once.
    assert not await first.renew_turn("s1", "tok-a", PartialReply("msg_r", "Once upon a time."))
    assert not await raw.exists(keys["partial"])
    late = await first.end_turn("s1", "tok-a", Message.from_text("assistant", "x", id="msg_r"))
    assert not late.created and late.message.status == "interrupted"
    assert await raw.get(keys["lock"]) == second.turns.lock("tok-b")
    await second.end_turn("s1", "tok-b")
    assert len((await second.load("s1")).messages) == 3


async def test_a_live_processs_lease_is_not_taken_over(stores):
    first, second = stores
    await first.begin_turn("s1", "tok-a")
    sent = second.round_trips
    # Several of the owner key's lifetimes (300 ms): its heartbeat keeps it.
    with pytest.raises(SessionBusyError):
        await second.begin_turn("s1", "tok-b", wait_s=1.0)
    assert second.round_trips - sent >= 4  # it asked, and asked whether the holder lives
    await first.end_turn("s1", "tok-a")
    await second.begin_turn("s1", "tok-b")


async def test_a_closed_process_frees_its_leases_at_once(redis_url, raw):
    first = new_store(redis_url, owner_ttl_ms=60_000, owner_heartbeat_ms=1_000)
    second = new_store(redis_url)
    try:
        await first.create(SessionInfo(id="s1"))
        await first.begin_turn("s1", "tok-a")
        await first.aclose()  # its owner key is deleted: nothing to wait for
        assert not await raw.exists(first.turns.owner.key)
        assert not (await second.begin_turn("s1", "tok-b")).recovered
    finally:
        await second.aclose()


async def test_a_partial_grows_by_appends_is_sent_whole_after_a_lost_write_and_ends_with_the_turn(
    stores, raw
):
    first, _ = stores
    key = first.keys("s1")["partial"]
    await first.begin_turn("s1", "tok-a")
    text = ""
    for word in ["Hello", " there,", " ünïcode", " 😀", ' "quoted"\n']:
        text += word
        assert await first.renew_turn("s1", "tok-a", PartialReply("msg_p", text))
        assert decode_partial(await raw.get(key))[1] == text
    await raw.append(key, "garbage")  # the partial is not what the writer thinks it is
    assert await first.renew_turn("s1", "tok-a", PartialReply("msg_p", text + " more"))
    assert await first.renew_turn("s1", "tok-a", PartialReply("msg_p", text + " more!"))
    assert decode_partial(await raw.get(key))[1] == text + " more!"
    assert (await raw.pttl(first.keys("s1")["lock"])) > LEASE_MS - 5_000  # renewed with it
    await first.end_turn("s1", "tok-a", Message.from_text("assistant", text + " more!", id="msg_p"))
    assert not await raw.exists(key)
    assert [m.status for m in (await first.load("s1")).messages] == ["completed"]


async def test_recovering_a_partial_is_idempotent_on_its_message_id(stores, raw):
    first, second = stores
    await first.begin_turn("s1", "tok-a")
    await first.renew_turn("s1", "tok-a", PartialReply("msg_q", "half"))
    partial = await raw.get(first.keys("s1")["partial"])
    await first.end_turn("s1", "tok-a", Message.from_text("assistant", "whole", id="msg_q"))
    await raw.set(first.keys("s1")["partial"], partial)  # as if the end had not dropped it
    started = await second.begin_turn("s1", "tok-b")
    assert started.recovered
    assert [m.text for m in started.snapshot.messages] == ["whole"]
    await second.end_turn("s1", "tok-b")


def ws_turn(ws, text):
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    ws.send_json({"type": "conversation.item.create", "item": item})
    assert ws.receive_json()["type"] == "conversation.item.created"
    ws.send_json({"type": "response.create"})
    deltas = []
    while (event := ws.receive_json())["type"] != "response.done":
        if event["type"] == "response.output_text.delta":
            deltas.append(event["delta"])
    return deltas, event


def test_a_reply_streaming_past_the_flush_interval_is_kept_and_dropped_at_the_end(redis_url):
    store = new_store(redis_url)
    reply = " ".join(f"w{i}" for i in range(30))
    settings = Settings(memory=MemorySettings(lock_ttl_ms=LEASE_MS, partial_flush_ms=50))
    app = create_app(settings, llm=ScriptedLM(reply, token_delay_s=0.02), store=store)
    seen, stop = [], asyncio.Event()

    async def watch(session_id):
        """The partials Redis holds while the reply streams, and whether one is left after."""
        client = aioredis.from_url(redis_url, decode_responses=True)
        key = store.keys(session_id)["partial"]
        try:
            while not stop.is_set():
                value = await client.get(key)
                if value and decode_partial(value)[1] not in seen:
                    seen.append(decode_partial(value)[1])
                await asyncio.sleep(0.005)  # the poll interval
            return await client.exists(key)
        finally:
            await client.aclose()

    with TestClient(app) as client, client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        watcher = client.portal.start_task_soon(watch, session_id)
        before = store.round_trips
        deltas, done = ws_turn(ws, "talk")
        trips = store.round_trips - before
        client.portal.call(stop.set)
        left = watcher.result(timeout=10)
        client.portal.call(store.aclose)
    assert "".join(deltas) == reply and done["response"]["status"] == "completed"
    assert len(seen) >= 2 and all(reply.startswith(text) and text for text in seen)
    assert 2 < trips < 2 + len(deltas)  # the flushes, fewer than the tokens
    assert not left


async def test_a_lapsed_dead_lease_is_free_without_a_takeover(redis_url, raw):
    """The lease's own time still ends it (a holder value with no owner, as older servers wrote)."""
    store = new_store(redis_url, lock_ttl_ms=300)
    try:
        await store.create(SessionInfo(id="s1"))
        await raw.set(store.keys("s1")["lock"], "old-token", px=300)
        with pytest.raises(SessionBusyError):
            await store.begin_turn("s1", "tok-b")
        await wait_until_expired(raw, store.keys("s1")["lock"])
        await store.begin_turn("s1", "tok-b")
        await wait_for_async(lambda: raw.exists(store.turns.owner.key), what="the heartbeat key")
    finally:
        await store.aclose()
