"""RedisCheckpointSaver on a real redis-server (no modules): the same answers as LangGraph's own
InMemorySaver for the same calls, its key layout, TTL, tenants, and a LangGraph graph on it."""

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import ERROR, INTERRUPT
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver

from adapters.langchain import RedisCheckpointSaver
from assistant.errors import ConfigurationError
from tests.support.langgraph_chat import chat_graph

pytestmark = [
    pytest.mark.filterwarnings("error::langchain_core._api.deprecation.LangChainDeprecationWarning"),
    pytest.mark.integration,
]


@pytest.fixture
def url(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def raw(url):
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def saver(url):
    saver = RedisCheckpointSaver(url, ttl_s=3600)
    yield saver
    saver.close()


def config(thread, ns="", checkpoint_id=None):
    configurable = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(values, versions, checkpoint_id=None):
    return {
        "v": 4, "id": checkpoint_id or str(uuid6(clock_seq=-2)), "ts": "2025-01-01T00:00:00+00:00",
        "channel_values": values, "channel_versions": versions, "versions_seen": {},
        "updated_channels": sorted(values),
    }  # fmt: skip


V1 = "00000000000000000000000000000001.0.1"
V2 = "00000000000000000000000000000002.0.2"
IDS = [str(uuid6(clock_seq=-2)) for _ in range(4)]


def history(saver):
    """The same calls on any saver; returns the configs it handed back."""
    v1, v2 = V1, V2
    c1 = saver.put(config("t1"), checkpoint({"a": 1, "messages": ["x"]}, {"a": v1, "messages": v1},
                   IDS[0]), {"source": "input", "step": -1}, {"a": v1, "messages": v1})  # fmt: skip
    saver.put_writes(c1, [("a", 2), ("messages", ["y"])], "task-1", "~p1")
    saver.put_writes(c1, [("a", 99)], "task-1", "~p1")  # a regular write stored before: kept
    saver.put_writes(c1, [(ERROR, "boom")], "task-2")
    saver.put_writes(c1, [(ERROR, "boom again")], "task-2")  # a special one: replaced
    c2 = saver.put(c1, checkpoint({"a": 2}, {"a": v2, "messages": v1}, IDS[1]),
                   {"source": "loop", "step": 0, "user": "ann"}, {"a": v2})  # fmt: skip
    saver.put_writes(c2, [(INTERRUPT, {"why": "ask"})], "task-3", "~p3")
    c3 = saver.put(config("t1", "child:1"), checkpoint({"b": "sub"}, {"b": v1}, IDS[2]),
                   {"source": "loop", "step": 1}, {"b": v1})  # fmt: skip
    c4 = saver.put(config("t2"), checkpoint({}, {}, IDS[3]), {"source": "input", "step": -1}, {})
    return c1, c2, c3, c4


def answers(saver, configs):
    c1, c2, c3, _ = configs
    return {
        "latest": saver.get_tuple(config("t1")),
        "c1": saver.get_tuple(c1),
        "child": saver.get_tuple(config("t1", "child:1")),
        "unknown": saver.get_tuple(config("nobody")),
        "all": list(saver.list(config("t1"))),
        "all ns": list(saver.list({"configurable": {"thread_id": "t1"}})),
        "filter": list(saver.list(config("t1"), filter={"source": "loop", "user": "ann"})),
        "filter none": list(saver.list(config("t1"), filter={"source": "update"})),
        "before": list(saver.list(config("t1"), before=c2)),
        "limit": list(saver.list(config("t1"), limit=1)),
        "by id": list(saver.list(c1)),
        "every thread": list(saver.list(None)),
        "every thread, limit": list(saver.list(None, limit=2)),
    }


def test_answers_as_in_memory_saver(saver):
    reference = InMemorySaver()
    expected = answers(reference, history(reference))
    got = answers(saver, history(saver))
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == expected[name], name
    latest = got["latest"]
    assert latest.checkpoint["channel_values"] == {"a": 2, "messages": ["x"]}
    assert latest.pending_writes == [("task-3", INTERRUPT, {"why": "ask"})]
    assert got["c1"].pending_writes == [
        ("task-2", ERROR, "boom again"), ("task-1", "a", 2), ("task-1", "messages", ["y"]),
    ]  # fmt: skip
    assert [t.metadata["step"] for t in got["all ns"]] == [0, -1, 1]


async def test_async_methods_answer_as_the_sync_ones(saver, url):
    configs = history(saver)
    expected = answers(saver, configs)
    async_saver = RedisCheckpointSaver(url, ttl_s=3600)
    try:
        c1, c2, _, _ = configs
        assert await async_saver.aget_tuple(config("t1")) == expected["latest"]
        assert await async_saver.aget_tuple(c1) == expected["c1"]
        assert await async_saver.aget_tuple(config("nobody")) is None
        listed = [t async for t in async_saver.alist(config("t1"), filter={"source": "loop", "user": "ann"})]
        assert listed == expected["filter"]
        assert [t async for t in async_saver.alist(config("t1"), before=c2)] == expected["before"]
        assert [t async for t in async_saver.alist(None, limit=2)] == expected["every thread, limit"]
        stored = await async_saver.aput(config("t3"), checkpoint({"z": 1}, {"z": "1"}), {"step": 5}, {"z": "1"})
        await async_saver.aput_writes(stored, [("z", 2)], "task-9")
        again = saver.get_tuple(config("t3"))  # written async, read sync
        assert again.checkpoint["channel_values"] == {"z": 1}
        assert again.pending_writes == [("task-9", "z", 2)]
        await async_saver.adelete_thread("t3")
        assert saver.get_tuple(config("t3")) is None
    finally:
        await async_saver.aclose()


async def test_a_sync_client_alone_serves_the_async_methods(url):
    client = redis.Redis.from_url(url)
    try:
        saver = RedisCheckpointSaver(client=client)
        stored = await saver.aput(config("solo"), checkpoint({"k": "v"}, {"k": "1"}), {}, {"k": "1"})
        found = await saver.aget_tuple(stored)
        assert found.checkpoint["channel_values"] == {"k": "v"}
        assert [t.config async for t in saver.alist(config("solo"))] == [stored]
    finally:
        client.close()


def test_a_thread_is_four_keys_under_the_tenant_with_one_hash_tag(saver, raw):
    history(saver)
    thread = "odd:{id}%"
    saver.put(config(thread), checkpoint({"a": 1}, {"a": "1"}), {}, {"a": "1"})
    keys = sorted(k.decode() for k in raw.keys(f"assistant:default:lg:{{{'odd%3A%7Bid%7D%25'}}}:*"))
    assert keys == [f"assistant:default:lg:{{odd%3A%7Bid%7D%25}}:{name}" for name in ("bv", "cv", "cx")]
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"t1", "t2", thread}
    assert len(raw.keys("assistant:default:lg:{t1}:*")) == 4  # cx, cv, wx, bv, whatever it holds


def test_the_ttl_is_refreshed_by_reads_and_writes(saver, raw):
    c1, *_ = history(saver)
    keys = [k.decode() for k in raw.keys("assistant:default:lg:{t1}:*")]
    assert all(3_590_000 < raw.pttl(k) <= 3_600_000 for k in keys)

    def shorten():
        for key in keys:
            raw.pexpire(key, 5_000)

    for touch in (
        lambda: saver.get_tuple(config("t1")),
        lambda: list(saver.list(config("t1"), limit=1)),
        lambda: saver.put_writes(c1, [("a", 3)], "task-7"),
        lambda: saver.put(c1, checkpoint({}, {}), {}, {}),
    ):
        shorten()
        touch()
        assert all(raw.pttl(k) > 3_500_000 for k in keys)


def test_ttl_none_keeps_the_keys(url, raw):
    saver = RedisCheckpointSaver(url, ttl_s=None)
    try:
        saver.put(config("kept"), checkpoint({"a": 1}, {"a": "1"}), {}, {"a": "1"})
        assert {raw.pttl(k) for k in raw.keys("assistant:default:lg:{kept}:*")} == {-1}
    finally:
        saver.close()


def test_tenants_do_not_see_each_others_threads(saver, url):
    history(saver)
    other = RedisCheckpointSaver(url, tenant="acme")
    try:
        assert other.get_tuple(config("t1")) is None
        assert list(other.list(None)) == []
        other.put(config("t1"), checkpoint({"mine": True}, {"mine": "1"}), {}, {"mine": "1"})
        other.delete_thread("t1")
        assert saver.get_tuple(config("t1")).checkpoint["channel_values"]["a"] == 2
    finally:
        other.close()


def test_delete_thread_removes_its_keys_only(saver, raw):
    history(saver)
    saver.delete_thread("t1")
    assert raw.keys("assistant:default:lg:{t1}:*") == []
    assert saver.get_tuple(config("t1")) is None
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None)] == ["t2"]


def test_versions_increase(saver):
    versions = [saver.get_next_version(None, None)]
    for _ in range(20):
        versions.append(saver.get_next_version(versions[-1], None))
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_bad_construction_is_a_clear_error(url):
    with pytest.raises(ConfigurationError, match="redis_url, client or async_client"):
        RedisCheckpointSaver()
    with pytest.raises(ConfigurationError, match="pass the redis-py client"):
        RedisCheckpointSaver("redis+cluster://127.0.0.1:7000")
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisCheckpointSaver(client=redis.Redis.from_url(url, decode_responses=True))
    with pytest.raises(ValueError, match="tenant"):
        RedisCheckpointSaver(url, tenant="no spaces")
    async_only = RedisCheckpointSaver(async_client=aioredis.Redis.from_url(url))
    with pytest.raises(ConfigurationError, match="only an async client"):
        async_only.get_tuple(config("t1"))
    with pytest.raises(ValueError, match="NUL"):
        RedisCheckpointSaver(url).put(config("t", "bad\0ns"), checkpoint({}, {}), {}, {})


def test_a_graph_resumes_its_thread_sync_and_async(saver, url):
    from assistant.testing.language_models import ScriptedLM

    graph, lm = chat_graph(saver, ScriptedLM())
    thread = {"configurable": {"thread_id": "chat-1"}}
    graph.invoke({"messages": [HumanMessage("my name is Ann")]}, thread)
    second = RedisCheckpointSaver(url)  # another saver: nothing shared but Redis
    try:
        graph2, lm2 = chat_graph(second, ScriptedLM())

        async def turn():
            try:
                return await graph2.ainvoke({"messages": [HumanMessage("what is my name?")]}, thread)
            finally:
                await second.aclose()

        result = asyncio.run(turn())
    finally:
        second.close()
    contents = [m.content for m in result["messages"]]
    assert contents == ["my name is Ann", "You said: my name is Ann", "what is my name?",
                        "You said: what is my name?"]  # fmt: skip
    assert isinstance(result["messages"][1], AIMessage)
    seen = [m.text for m in lm2.prompts[-1].messages]
    assert seen == ["my name is Ann", "You said: my name is Ann", "what is my name?"]


def test_from_settings_takes_the_configured_redis_tenant_prefix_and_ttl(url, raw):
    from assistant.config import MemorySettings, Settings

    settings = Settings(redis_url=url, memory=MemorySettings(tenant="acme", key_prefix="shop", ttl_s=60))
    saver = RedisCheckpointSaver.from_settings(settings)
    try:
        saver.put(config("t"), checkpoint({"a": 1}, {"a": "1"}), {}, {"a": "1"})
        keys = raw.keys("shop:acme:lg:{t}:*")
        assert len(keys) == 3 and all(0 < raw.pttl(k) <= 60_000 for k in keys)
    finally:
        saver.close()
    with pytest.raises(ConfigurationError, match="ASSISTANT_REDIS_URL"):
        RedisCheckpointSaver.from_settings(Settings(redis_url=""))
