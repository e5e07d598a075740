"""Per-session limits (``LimitsSettings.session_turns`` / ``session_bytes``), on the in-memory
fake and on a real Redis (the ``redis`` params are integration tests): a client's message that
would take a session past either limit is refused with its code and nothing of it is stored; the
assistant's reply and a dead writer's recovered partial are stored all the same; a message stored
before (its turn id) is returned, not refused; images count by their blob's size. Over the
WebSocket the refusal is an ``error`` event and the socket goes on; REST answers it with 429."""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient

from assistant.config import LimitsSettings, Settings
from assistant.errors import RateLimitError, SessionBusyError
from assistant.messages import ImagePart, Message, SessionInfo, TextPart
from assistant.ports import PartialReply, SessionLimits
from assistant.server.app import create_app
from assistant.server.rest import error_response
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.ws import until


class Processes:
    """Two server processes on the same sessions (``first``, ``second``) and a way to kill the
    first (its leases then go to the second, with the reply it was streaming)."""

    def __init__(self, first, second, kill) -> None:
        self.first, self.second, self.kill = first, second, kill


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def redis_or_not(request):
    """None for the in-memory store, else a real Redis's URL."""
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.fixture
async def processes(redis_or_not):
    if redis_or_not is None:
        first = MemoryStore()
        yield Processes(first, first.process(), first.crash)
        return
    from adapters.memory.redis import RedisSessionStore

    url = redis_or_not
    options = {"ttl_s": 60, "lock_ttl_ms": 30_000, "owner_heartbeat_ms": 100,
               "owner_ttl_ms": 300}  # fmt: skip
    first = RedisSessionStore.from_url(url, **options)
    second = RedisSessionStore.from_url(url, **options)
    yield Processes(first, second, first.turns.owner.stop_beating)
    await first.aclose()
    await second.aclose()


@pytest.fixture
def store(processes):
    return processes.first


def size(message: Message) -> int:
    """What a message counts towards ``SessionLimits.bytes`` (without images)."""
    return len(message.model_dump_json().encode())


def user(text: str, **kwargs: object) -> Message:
    return Message.from_text("user", text, **kwargs)


def reply(text: str) -> Message:
    return Message.from_text("assistant", text)


async def stored(store, session_id="s1"):
    snapshot = await store.load(session_id)
    assert snapshot is not None
    return [(m.role, m.text) for m in snapshot.messages]


async def turn(store, question: Message, answer: Message, token: str = "tok") -> None:
    await store.begin_turn("s1", token, message=question)
    await store.end_turn("s1", token, answer)


def refused(excinfo, code: str) -> None:
    assert excinfo.value.code == code
    assert excinfo.value.type == "rate_limit_error"
    assert excinfo.value.retry_after_s is None


# -- the number of messages -------------------------------------------------------------------------


async def test_at_the_message_limit_the_next_user_message_is_refused_and_not_stored(store):
    store.limits = SessionLimits(messages=4)
    await store.create(SessionInfo(id="s1"))
    await turn(store, user("one"), reply("ONE"))
    await turn(store, user("two"), reply("TWO"))
    with pytest.raises(RateLimitError) as excinfo:
        await store.begin_turn("s1", "tok", message=user("three", turn_id="t3"))
    refused(excinfo, "session_turn_limit")
    with pytest.raises(RateLimitError) as excinfo:
        await store.append("s1", user("three", turn_id="t3"))
    refused(excinfo, "session_turn_limit")
    assert await stored(store) == [
        ("user", "one"), ("assistant", "ONE"), ("user", "two"), ("assistant", "TWO")
    ]
    # The refused turn kept no lease: another writer takes the session at once.
    started = await store.begin_turn("s1", "other", wait_s=0)
    assert started.length == 4


async def test_the_reply_is_stored_past_the_message_limit(store):
    store.limits = SessionLimits(messages=3)
    await store.create(SessionInfo(id="s1"))
    await turn(store, user("one"), reply("ONE"))
    await store.begin_turn("s1", "tok", message=user("two"))  # the third message: allowed
    result = await store.end_turn("s1", "tok", reply("TWO"))  # the fourth: a reply, stored
    assert result is not None and result.created
    assert len(await stored(store)) == 4
    with pytest.raises(RateLimitError) as excinfo:
        await store.append("s1", user("three"))
    refused(excinfo, "session_turn_limit")


async def test_a_message_stored_before_is_returned_at_the_limit_not_refused(store):
    store.limits = SessionLimits(messages=1)
    await store.create(SessionInfo(id="s1"))
    first = await store.append("s1", user("hello", turn_id="t1"))
    again = await store.append("s1", user("hello", turn_id="t1"))  # a retried send
    assert first.created and not again.created and again.message == first.message
    started = await store.begin_turn("s1", "tok", message=user("hello", turn_id="t1"))
    assert started.appended is not None and not started.appended.created


async def test_a_refused_message_leaves_a_lease_the_caller_held_its_own(store):
    store.limits = SessionLimits(messages=1)
    await store.create(SessionInfo(id="s1"))
    await store.begin_turn("s1", "tok", message=user("one"))  # the lease is tok's now
    with pytest.raises(RateLimitError):
        await store.begin_turn("s1", "tok", message=user("two"))
    with pytest.raises(SessionBusyError):
        await store.begin_turn("s1", "other", wait_s=0)
    assert await store.end_turn("s1", "tok", reply("ONE"))
    assert await stored(store) == [("user", "one"), ("assistant", "ONE")]


async def test_a_recovered_partial_reply_is_stored_past_the_limit_the_message_is_not(processes):
    first, second = processes.first, processes.second
    first.limits = second.limits = SessionLimits(messages=1)
    await first.create(SessionInfo(id="s1"))
    await first.begin_turn("s1", "tok-a", message=user("tell me"))
    assert await first.renew_turn("s1", "tok-a", PartialReply("msg_cut", "Once upon"))
    processes.kill()  # mid-reply
    with pytest.raises(RateLimitError) as excinfo:
        await second.begin_turn("s1", "tok-b", message=user("go on"), wait_s=5)
    refused(excinfo, "session_turn_limit")
    assert await stored(second) == [("user", "tell me"), ("assistant", "Once upon")]
    started = await second.begin_turn("s1", "tok-b", wait_s=0)  # no lease was kept
    assert [m.status for m in started.snapshot.messages] == ["completed", "interrupted"]


async def test_zero_is_no_limit(store):
    assert store.limits == SessionLimits(messages=0, bytes=0)  # the stores' default
    await store.create(SessionInfo(id="s1"))
    for i in range(30):
        await store.append("s1", user(f"m{i}"))
    assert len(await stored(store)) == 30


async def test_a_session_created_again_starts_with_nothing_counted(store):
    store.limits = SessionLimits(messages=1, bytes=size(user("x" * 50)) + 10)
    await store.create(SessionInfo(id="s1"))
    await store.append("s1", user("x" * 50))
    await store.create(SessionInfo(id="s1"))
    assert (await store.append("s1", user("x" * 50))).created


# -- bytes ------------------------------------------------------------------------------------------


async def test_at_the_byte_limit_the_next_user_message_is_refused_and_not_stored(store):
    one, answer, big, small = user("a" * 100), reply("b" * 100), user("c" * 100), user("d")
    store.limits = SessionLimits(bytes=size(one) + size(answer) + size(small))
    await store.create(SessionInfo(id="s1"))
    await turn(store, one, answer)
    with pytest.raises(RateLimitError) as excinfo:
        await store.begin_turn("s1", "tok", message=big)
    refused(excinfo, "session_too_large")
    assert str(size(big)) in excinfo.value.message
    with pytest.raises(RateLimitError) as excinfo:
        await store.append("s1", big)
    refused(excinfo, "session_too_large")
    assert len(await stored(store)) == 2
    # The refused message counted nothing: one that fits exactly is still taken.
    assert (await store.append("s1", small)).created
    # The session is full now; the reply to it is stored all the same.
    await store.begin_turn("s1", "tok")
    assert (await store.end_turn("s1", "tok", reply("e" * 500))).created
    with pytest.raises(RateLimitError) as excinfo:
        await store.append("s1", user("f"))
    refused(excinfo, "session_too_large")
    assert [text for _, text in await stored(store)] == ["a" * 100, "b" * 100, "d", "e" * 500]


async def test_an_image_counts_by_its_blobs_size(store):
    sha = "ab" * 32
    image = Message(role="user", content=(TextPart(text="look"), ImagePart(sha256=sha)))
    await store.put_blob(sha, b"\x89PNG" + bytes(4000))
    store.limits = SessionLimits(bytes=size(image) + 4003)  # one byte short
    await store.create(SessionInfo(id="s1"))
    with pytest.raises(RateLimitError) as excinfo:
        await store.append("s1", image)
    refused(excinfo, "session_too_large")
    assert str(size(image) + 4004) in excinfo.value.message
    store.limits = SessionLimits(bytes=size(image) + 4004)
    assert (await store.append("s1", image)).created


@pytest.mark.integration
async def test_redis_counts_the_bytes_in_the_meta_hash_beside_the_session_info(redis_url):
    import redis.asyncio as aioredis

    from adapters.memory.redis import RedisSessionStore

    store = RedisSessionStore.from_url(redis_url)
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:
        info = await store.create(SessionInfo(id="s1", instructions="Be brief."))
        one, answer = user("ünïcode " * 10), reply("fine")
        await turn(store, one, answer)
        meta = store.keys("s1")["meta"]
        assert int(await raw.hget(meta, "#bytes")) == size(one) + size(answer)
        # Not a SessionInfo field: the info reads back the same, from load and from a turn.
        assert (await store.load("s1")).info == info
        started = await store.begin_turn("s1", "tok")
        assert started.snapshot.info == info
        await store.end_turn("s1", "tok", reply("more"))
        # The counter changed, the turn's metadata did not: parsed once (the same object).
        again = await store.begin_turn("s1", "tok")
        assert again.snapshot.info is started.snapshot.info
        await store.end_turn("s1", "tok")
        assert (await store.update_info("s1", instructions="Be long.")).instructions == "Be long."
    finally:
        await raw.aclose()
        await store.aclose()


# -- the settings, the WebSocket, REST --------------------------------------------------------------


@pytest.mark.integration
def test_the_redis_store_takes_its_limits_from_the_settings(redis_url):
    from adapters.memory.redis import build

    settings = Settings(limits=LimitsSettings(session_turns=7, session_bytes=1234))
    store = build(settings, redis_url=redis_url)
    assert store.limits == SessionLimits(messages=7, bytes=1234)
    assert store.for_tenant("acme").limits == store.limits
    assert build(Settings(), redis_url=redis_url).limits == SessionLimits(2_000, 32 * 1024 * 1024)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def client(request):
    with contextlib.ExitStack() as stack:
        if request.param == "memory":
            store = MemoryStore()
        else:
            from adapters.memory.redis import RedisSessionStore

            store = RedisSessionStore.from_url(request.getfixturevalue("redis_url"))
        store.limits = SessionLimits(messages=2)
        app = create_app(Settings(), llm=ScriptedLM(), store=store)
        client = stack.enter_context(TestClient(app))
        stack.callback(client.portal.call, store.aclose)
        yield client


def item(text: str, event_id: str | None = None) -> dict:
    content = [{"type": "input_text", "text": text}]
    event = {"type": "conversation.item.create",
             "item": {"type": "message", "role": "user", "content": content}}  # fmt: skip
    if event_id:
        event["event_id"] = event_id
    return event


def test_a_refused_message_is_an_error_event_and_the_socket_goes_on(client):
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        ws.send_json(item("hello"))
        assert ws.receive_json()["type"] == "conversation.item.created"
        ws.send_json({"type": "response.create"})
        assert until(ws, "response.done")[-1]["response"]["status"] == "completed"
        ws.send_json(item("one more", event_id="evt_full"))
        error = ws.receive_json()
        assert error["type"] == "error"
        assert error["error"]["code"] == "session_turn_limit"
        assert error["error"]["type"] == "rate_limit_error"
        assert error["error"]["event_id"] == "evt_full"
        assert error["error"].get("retry_after_s") is None
        # The socket is still usable: a response (to the stored history) streams and is stored.
        ws.send_json({"type": "response.create"})
        assert until(ws, "response.done")[-1]["response"]["status"] == "completed"
    messages = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant"]
    assert "one more" not in str(messages)


@pytest.mark.parametrize("code", ["session_too_large", "session_turn_limit"])
def test_rest_answers_a_full_session_with_429_and_no_retry_after(code):
    response = error_response(RateLimitError("full", code=code))
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert b'"code":"' + code.encode() + b'"' in response.body
