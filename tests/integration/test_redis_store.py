"""The Redis session store against a real, private redis-server."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from adapters.memory.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port
from adapters.memory.redis import RedisSessionStore
from assistant.errors import SessionNotFoundError, StoreError
from assistant.messages import AudioPart, ImagePart, Message, SessionInfo, TextPart
from tests.support.redis import CountingConnection, wait_until_expired, writes
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_url):
    store = RedisSessionStore.from_url(redis_url, ttl_s=60, lock_ttl_ms=450)
    yield store
    await store.aclose()


@pytest.fixture
async def raw(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def new_session(store: RedisSessionStore, session_id: str = "s1") -> SessionInfo:
    return await store.create(SessionInfo(id=session_id, instructions="Be brief."))


async def test_create_load_round_trip_with_content_parts(store):
    info = await new_session(store)
    message = Message(
        role="user",
        content=(
            TextPart(text="What is in this picture? — ünïcode"),
            ImagePart(sha256="ab" * 32, mime_type="image/jpeg"),
            AudioPart(transcript="and tell me more", duration_s=1.5),
        ),
        turn_id="turn-1",
    )
    assert (await store.append("s1", message)).created
    snapshot = await store.load("s1")
    assert snapshot is not None
    assert snapshot.info == info
    assert snapshot.messages == (message,)
    assert await store.load("unknown") is None


async def test_order_kept_and_last_n(store):
    await new_session(store)
    sent = [Message.from_text("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(7)]
    for message in sent:
        await store.append("s1", message)
    assert (await store.load("s1")).messages == tuple(sent)
    assert (await store.load("s1", last=3)).messages == tuple(sent[-3:])
    assert (await store.load("s1", last=100)).messages == tuple(sent)
    empty = await store.load("s1", last=0)
    assert empty.messages == () and empty.info.id == "s1"


async def test_update_info(store):
    await new_session(store)
    updated = await store.update_info("s1", instructions="Answer in French.")
    assert updated.instructions == "Answer in French." and updated.id == "s1"
    assert (await store.load("s1", last=0)).info == updated
    cleared = await store.update_info("s1", instructions=None)
    assert cleared.instructions is None
    assert (await store.load("s1", last=0)).info == cleared
    with pytest.raises(ValueError, match="no field"):
        await store.update_info("s1", summary="not a field any more")
    assert (await store.load("s1", last=0)).info == cleared  # nothing written
    with pytest.raises(SessionNotFoundError):
        await store.update_info("nope", instructions="x")


async def test_a_session_stored_with_fields_since_dropped_still_loads(store):
    """Sessions written before ``owner`` and ``summary`` were dropped keep loading."""
    await new_session(store)
    meta = store.keys("s1")["meta"]
    await store.client.hset(meta, mapping={"owner": '"alice"', "summary": "null"})
    info = (await store.load("s1", last=0)).info
    assert info.id == "s1" and info.instructions == "Be brief."


async def test_sliding_ttl_refreshed_on_read(redis_url, raw):
    ttl_ms = 1_200
    store = RedisSessionStore.from_url(redis_url, ttl_s=ttl_ms / 1000)
    try:
        for session_id in ("read", "untouched"):
            await new_session(store, session_id)
            await store.append(session_id, Message.from_text("user", "hi", turn_id="t1"))
        read_keys = [store.keys("read")[part] for part in ("meta", "msgs", "turns")]

        async def run_down_to_half() -> bool:  # PTTL does not refresh a key; a load would
            return all([0 < await raw.pttl(key) <= ttl_ms // 2 for key in read_keys])

        await wait_for_async(run_down_to_half, what="the session's TTL to run down to half")
        assert await store.load("read", last=0) is not None  # a read, no write
        for key in read_keys:
            assert await raw.pttl(key) > 1_000
        # The first expiry: the untouched session is gone, the one that was read is still alive.
        await wait_until_expired(raw, *store.keys("untouched").values())
        assert await store.load("untouched") is None
        snapshot = await store.load("read")
        assert snapshot is not None and [m.text for m in snapshot.messages] == ["hi"]
        assert await raw.exists(*store.keys("untouched").values()) == 0
    finally:
        await store.aclose()


async def test_writes_refresh_ttl(store, raw):
    await new_session(store)
    keys = store.keys("s1")
    await raw.pexpire(keys["meta"], 5_000)
    await store.append("s1", Message.from_text("user", "hi", turn_id="t"))
    assert all([await raw.pttl(keys[p]) > 55_000 for p in ("meta", "msgs", "turns")])
    await raw.pexpire(keys["meta"], 5_000)
    await store.update_info("s1", instructions="s")
    assert await raw.pttl(keys["meta"]) > 55_000


async def test_same_turn_id_is_stored_once(store):
    await new_session(store)
    first = Message.from_text("user", "hello", turn_id="turn-7")
    retry = Message.from_text("user", "hello", turn_id="turn-7")  # a new message id, same turn
    assert first.id != retry.id
    one = await store.append("s1", first)
    two = await store.append("s1", retry)
    assert one.created and one.message == first
    assert not two.created and two.message == first
    other = await store.append("s1", Message.from_text("user", "again", turn_id="turn-8"))
    assert other.created
    assert [m.id for m in (await store.load("s1")).messages] == [first.id, other.message.id]


async def test_interrupted_status_round_trips(store):
    await new_session(store)
    cut = Message.from_text("assistant", "The capital of Fra", status="interrupted")
    await store.append("s1", cut)
    (stored,) = (await store.load("s1")).messages
    assert stored.status == "interrupted" and stored == cut


async def test_append_to_unknown_session(store, raw):
    with pytest.raises(SessionNotFoundError):
        await store.append("ghost", Message.from_text("user", "hi"))
    assert await raw.exists(*store.keys("ghost").values()) == 0


async def test_hot_path_is_one_round_trip(redis_url):
    pool = aioredis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, decode_responses=True
    )
    store = RedisSessionStore(aioredis.Redis(connection_pool=pool))
    try:
        await store.ping()  # connection handshake and script loading out of the way
        await new_session(store)
        await store.append("s1", Message.from_text("user", "warm", turn_id="w"))
        await store.update_info("s1", instructions="warm")
        checks = {
            "create": lambda: new_session(store, "s2"),
            "load": lambda: store.load("s1", last=10),
            "append": lambda: store.append("s1", Message.from_text("user", "x", turn_id="t")),
            "append_retry": lambda: store.append("s1", Message.from_text("user", "x", turn_id="t")),
            "update_info": lambda: store.update_info("s1", instructions="y"),
        }
        for name, call in checks.items():
            counted, sent = store.round_trips, writes(store)
            await call()
            assert (store.round_trips - counted, writes(store) - sent) == (1, 1), name
    finally:
        await store.aclose()


async def test_data_survives_restart(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        store = RedisSessionStore.from_url(server.url)
        await new_session(store)
        await store.append("s1", Message.from_text("user", "remember me", turn_id="t1"))
        await store.aclose()
    finally:
        server.stop()
    assert not server.running
    with EmbeddedRedis(tmp_path / "redis") as again:
        store = RedisSessionStore.from_url(again.url)
        try:
            snapshot = await store.load("s1")
            assert snapshot is not None and [m.text for m in snapshot.messages] == ["remember me"]
            retry = Message.from_text("user", "x", turn_id="t1")
            assert not (await store.append("s1", retry)).created
        finally:
            await store.aclose()


def test_second_server_on_same_dir_is_refused(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        assert server.start() is server  # idempotent
        with pytest.raises(EmbeddedRedisError, match=f"pid {server.pid}"):
            EmbeddedRedis(tmp_path).start()
    assert not (tmp_path / "redis.pid").exists()


async def test_unreachable_store_raises_store_error():
    store = RedisSessionStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", retry=Retry(NoBackoff(), 1), socket_connect_timeout=1
    )
    try:
        with pytest.raises(StoreError):
            await new_session(store)
        with pytest.raises(StoreError):
            await store.load("s1")
        with pytest.raises(StoreError):
            await store.begin_turn("s1", "token")
        assert await store.ping() is False
    finally:
        await store.aclose()
