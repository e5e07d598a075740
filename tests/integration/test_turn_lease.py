"""The hot path of a text turn on a real Redis: begin_turn / end_turn semantics, and two round
trips for a whole turn through the real WebSocket (user item, then the reply)."""

import asyncio

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from adapters.memory.redis import RedisSessionStore
from assistant.config import MemorySettings, Settings
from assistant.errors import SessionBusyError, SessionNotFoundError
from assistant.messages import Message, SessionInfo, now_ms
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.turn_lease import TurnLease
from tests.support.redis import CountingConnection, wait_until_expired
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_url):
    store = RedisSessionStore.from_url(redis_url, ttl_s=60, lock_ttl_ms=600)
    await store.create(SessionInfo(id="s1"))
    yield store
    await store.aclose()


@pytest.fixture
async def raw(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_begin_takes_the_lease_appends_and_returns_the_history(store):
    started = await store.begin_turn(
        "s1", "tok-a", message=Message.from_text("user", "hi", turn_id="t1")
    )
    assert started.appended is not None and started.appended.created
    assert [m.text for m in started.snapshot.messages] == ["hi"]
    # The same token may write again (a second item of the same turn); a retry is stored once.
    again = await store.begin_turn(
        "s1", "tok-a", message=Message.from_text("user", "hi", turn_id="t1")
    )
    assert not again.appended.created and again.appended.message.id == started.appended.message.id
    # Another writer is refused while the lease is held...
    with pytest.raises(SessionBusyError):
        await store.begin_turn("s1", "tok-b", message=Message.from_text("user", "other"))
    # ...and gets it once the reply is stored and the lease given back.
    reply = await store.end_turn("s1", "tok-a", Message.from_text("assistant", "hello"))
    assert reply is not None and reply.created
    other = await store.begin_turn("s1", "tok-b", last=1)
    assert [m.text for m in other.snapshot.messages] == ["hello"]
    await store.end_turn("s1", "tok-b")


async def test_a_waiting_writer_gets_the_lease_when_it_is_given_back(store):
    await store.begin_turn("s1", "tok-a", message=Message.from_text("user", "first"))
    asked = store.round_trips
    waiter = asyncio.create_task(
        store.begin_turn("s1", "tok-b", message=Message.from_text("user", "second"), wait_s=5)
    )
    # It asks again only after it was refused: the lease holder keeps it waiting.
    await wait_for_async(lambda: store.round_trips >= asked + 2, what="the waiter to ask twice")
    assert not waiter.done()
    await store.end_turn("s1", "tok-a", Message.from_text("assistant", "reply"))
    started = await waiter
    assert [m.text for m in started.snapshot.messages] == ["first", "reply", "second"]


async def test_a_lapsed_lease_is_not_renewed_and_end_does_not_free_another_writers(store, raw):
    await store.begin_turn("s1", "tok-a")
    assert await raw.get(store.keys("s1")["lock"]) == store.turns.lock("tok-a")
    await wait_until_expired(raw, store.keys("s1")["lock"])  # lock_ttl_ms=600, no renewal
    assert not await store.renew_turn("s1", "tok-a")
    await store.begin_turn("s1", "tok-b")
    await store.end_turn("s1", "tok-a", Message.from_text("assistant", "late reply"))
    assert await raw.get(store.keys("s1")["lock"]) == store.turns.lock("tok-b")
    with pytest.raises(SessionNotFoundError):
        await store.begin_turn("nope", "tok-a")


async def test_turn_lease_rereads_the_history_when_its_snapshot_is_stale(store, raw):
    lease = TurnLease(store, "s1", lease_s=0.6, wait_s=0, last=50)
    await lease.add(Message.from_text("user", "mine"))
    assert lease.fresh
    sent = store.round_trips
    await lease.history()
    assert store.round_trips == sent  # fresh: the history came with the write
    # The lease lapses (no renewal: no reply is streaming), in the lease and in Redis.
    await wait_for_async(lambda: not lease.fresh, what="the lease to go stale")
    await wait_until_expired(raw, store.keys("s1")["lock"])
    # Meanwhile another connection wrote a turn; a stale lease must see it.
    await store.begin_turn("s1", "tok-other", message=Message.from_text("user", "theirs"))
    await store.end_turn("s1", "tok-other")
    snapshot = await lease.history()
    assert [m.text for m in snapshot.messages] == ["mine", "theirs"]
    await lease.finish(None)


def test_a_text_turn_costs_two_redis_round_trips(redis_url):
    pool = aioredis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, decode_responses=True
    )
    # No heartbeat during the turns (it is the process's, not a turn's, and would be a write).
    store = RedisSessionStore(aioredis.Redis(connection_pool=pool), owner_heartbeat_ms=60_000,
                              owner_ttl_ms=180_000)  # fmt: skip
    settings = Settings(memory=MemorySettings(lock_ttl_ms=60_000))
    app = create_app(settings, llm=ScriptedLM("a short reply here"), store=store)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    with TestClient(app) as client, client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        counts = []
        for _ in range(3):  # the first turn also loads the scripts
            before = (store.round_trips, store.pipe.writes, CountingConnection.sends)
            ws.send_json({"type": "conversation.item.create", "item": item})
            assert ws.receive_json()["type"] == "conversation.item.created"
            ws.send_json({"type": "response.create"})
            while ws.receive_json()["type"] != "response.done":
                pass
            counts.append((store.round_trips - before[0], store.pipe.writes - before[1],
                           CountingConnection.sends - before[2]))  # fmt: skip
        client.portal.call(store.aclose)
    # The turn's own cost: 2 round trips on the store's line, 2 writes, which also append the
    # user's item and the reply to the session's event stream (the fan-out). Beside them, on the
    # stream reader's own connection, the XREAD it issues again each time an append wakes it:
    # one per append, or one for both when they come before it asks again.
    for trips, line_writes, reader_writes in counts[1:]:
        assert (trips, line_writes) == (2, 2), counts
        assert 1 <= reader_writes <= 2, counts


async def test_a_kept_alive_lease_outlives_its_time_and_stops_being_renewed_when_finished(store):
    lease = TurnLease(store, "s1", lease_s=0.6, wait_s=0, last=50)  # store's lease: 600 ms
    await lease.add(Message.from_text("user", "a long reply is coming"))
    lease.keep_alive()
    # The time passing is what is tested: without renewals the lease would have lapsed twice over.
    await asyncio.sleep(1.5)
    with pytest.raises(SessionBusyError):
        await store.begin_turn("s1", "tok-other")
    await lease.finish(Message.from_text("assistant", "done"))
    started = await store.begin_turn("s1", "tok-other")
    assert started.snapshot.messages[-1].text == "done"


async def test_begin_sends_only_the_messages_after_those_the_caller_knows(store):
    for i in range(6):
        await store.append("s1", Message.from_text("user", f"m{i}"))
    whole = await store.begin_turn("s1", "tok-a", last=4)
    assert (whole.first, whole.length) == (2, 6)
    assert [m.text for m in whole.snapshot.messages] == ["m2", "m3", "m4", "m5"]
    started = await store.begin_turn("s1", "tok-a", message=Message.from_text("user", "m6"),
                                     last=4, known=6)  # fmt: skip
    assert (started.first, started.length) == (6, 7)
    assert [m.text for m in started.snapshot.messages] == ["m6"]
    # More new messages than ``last``: the window, not everything after ``known``.
    assert (await store.begin_turn("s1", "tok-a", last=2, known=3)).first == 5
    # ``known`` beyond the list (the caller's view is wrong): as if nothing was known.
    beyond = await store.begin_turn("s1", "tok-a", last=10, known=99)
    assert (beyond.first, len(beyond.snapshot.messages)) == (0, 7)
    nothing_new = await store.begin_turn("s1", "tok-a", last=10, known=7)
    assert (nothing_new.first, nothing_new.snapshot.messages) == (7, ())
    await store.end_turn("s1", "tok-a")


async def test_two_connections_taking_turns_each_see_the_whole_history(store):
    """Each lease caches what it read and asks only for later messages; the history it builds
    must equal the stored one after every turn, whoever wrote last."""
    leases = [TurnLease(store, "s1", lease_s=5, wait_s=5, last=5) for _ in range(2)]
    for turn in range(8):
        lease = leases[turn % 2]
        await lease.add(Message.from_text("user", f"q{turn}"))
        snapshot = await lease.history()
        stored = await store.load("s1", last=5)
        assert [m.id for m in snapshot.messages] == [m.id for m in stored.messages], turn
        await lease.finish(Message.from_text("assistant", f"a{turn}"))
    # The last reads brought only what the other connection had written since.
    sent_before = await store.begin_turn("s1", "tok-x", last=5, known=16)
    assert sent_before.snapshot.messages == ()
    await store.end_turn("s1", "tok-x")


async def test_a_session_created_again_under_the_same_id_is_read_from_the_start(store):
    lease = TurnLease(store, "s1", lease_s=5, wait_s=0, last=50)
    await lease.add(Message.from_text("user", "old life"))
    await lease.finish(Message.from_text("assistant", "old reply"))
    old = (await store.load("s1", last=0)).info.created_at
    await wait_for_async(lambda: now_ms() > old, what="the clock to pass the old created_at")
    await store.create(SessionInfo(id="s1"))
    for text in ("new", "life", "here"):
        await store.append("s1", Message.from_text("user", text))
    await lease.add(Message.from_text("user", "again"))
    assert [m.text for m in (await lease.history()).messages] == ["new", "life", "here", "again"]
    await lease.finish(None)


async def test_the_turn_scripts_append_a_created_messages_event_to_the_stream_once(store, raw):
    from adapters.memory.redis_conversations import RedisConversations

    conversations = RedisConversations(store, maxlen=500)
    asked = Message.from_text("user", "hi", turn_id="t-ev")
    event = {"type": "conversation.item.added", "item": {"id": asked.id}, "origin": "conn_1"}
    started = await store.begin_turn("s1", "tok-a", message=asked, event=event)
    assert started.appended.seq
    retried = await store.begin_turn("s1", "tok-a", message=asked, event=event)  # stored once:
    assert not retried.appended.created and retried.appended.seq is None  # not appended again
    reply = Message.from_text("assistant", "hello")
    ended = await store.end_turn("s1", "tok-a", reply, {"type": "x", "item": {"id": reply.id}})
    assert ended.seq and ended.seq > started.appended.seq
    events = await conversations.events("s1", "0", 10)
    assert [(seq, e["item"]["id"]) for seq, e in events] == [
        (started.appended.seq, asked.id), (ended.seq, reply.id)
    ]  # fmt: skip
    stream = store.keys("s1")["events"]
    assert 0 < await raw.pttl(stream) <= 60_000  # expiring with the session (ttl_s=60)
    plain = await store.begin_turn("s1", "tok-b", message=Message.from_text("user", "no event"))
    assert plain.appended.seq is None and len(await conversations.events("s1", "0", 10)) == 2
    await store.end_turn("s1", "tok-b")
