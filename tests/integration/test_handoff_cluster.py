"""The handoff on a real 3-master Redis Cluster (``redis+cluster://``, the session store's cluster
client): the status compare-and-set and the turn scripts' stream appends run on each session's
slot, the tenant's index and queue stream on their own; the event hub, which cannot block on one
XREAD across slots there, polls: a console following two conversations on different nodes and
its tenant's queue gets every event once, in order, and resumes from a sequence number."""

from __future__ import annotations

import asyncio

import pytest

from adapters.memory.redis_conversations import RedisConversations
from assistant.config import Settings
from assistant.handoff.hub import EventHub
from assistant.handoff.service import Handoff, item_event
from assistant.handoff.settings import HandoffSettings
from assistant.knowledge.answer import BotProfile
from assistant.messages import Message, SessionInfo, secret_id
from assistant.ports.conversations import QUEUE
from assistant.registry import build_session_store
from tests.support.redis_topology import redis_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("handoff-cluster")) as cluster:
        yield cluster


async def _profile(tenant: str) -> BotProfile:
    return BotProfile()


async def _take(sub, count: int) -> list[tuple[str, dict]]:
    got = []
    async with asyncio.timeout(20):
        async for seq, event in sub:
            got.append((seq, event))
            if len(got) == count:
                return got
    raise AssertionError(f"the subscription ended after {got}")


async def test_a_console_follows_conversations_on_several_nodes_and_the_queue(cluster):
    store = build_session_store(Settings(redis_url=cluster.url), redis_url=cluster.url)
    sessions = store.for_tenant("acme")
    conversations = RedisConversations(store).for_tenant("acme")
    hub = EventHub(conversations, block_ms=1_000)
    handoff = Handoff(conversations, sessions, HandoffSettings(), profile=_profile)
    try:
        ids = [(await sessions.create(SessionInfo(id=secret_id("sess")))).id for _ in range(6)]
        slots = {await store.client.cluster_keyslot(sessions.keys(i)["meta"]) for i in ids}
        assert len(slots) > 1
        one, two = ids[0], ids[-1]
        queue = await hub.subscribe("acme", QUEUE, await conversations.last_seq(QUEUE))
        followed = {sid: await hub.subscribe("acme", sid, "0") for sid in (one, two)}
        for sid in (one, two):  # a turn: the customer's item and the reply, from the scripts
            asked = Message.from_text("user", f"help with {sid}")
            started = await sessions.begin_turn(sid, "tok", message=asked,
                                                event=item_event(asked, "conn"))  # fmt: skip
            assert started.appended.seq
            reply = Message.from_text("assistant", "a person will help")
            ended = await sessions.end_turn(sid, "tok", reply, item_event(reply, "conn"))
            assert ended.seq > started.appended.seq
            await handoff.request("acme", sid, "customer_request")
        await handoff.claim("acme", one, "agent:a")
        for sid, sub in followed.items():
            got = await _take(sub, 3)
            kinds = [(e["type"], e.get("status")) for _, e in got]
            assert kinds == [("conversation.item.added", None), ("conversation.item.added", None),
                             ("conversation.status.updated", "waiting_human")]  # fmt: skip
            assert got[0][1]["item"]["content"][0]["text"] == f"help with {sid}"
        changes = await _take(queue, 3)
        assert [(e["conversation"], e["status"]) for _, e in changes] == [
            (one, "waiting_human"), (two, "waiting_human"), (one, "human")
        ]  # fmt: skip
        again = await hub.subscribe("acme", QUEUE, changes[0][0])  # a console that reconnects
        assert [e["status"] for _, e in await _take(again, 2)] == ["waiting_human", "human"]
        listed = await handoff.listed("acme", "waiting_human", 10)
        assert [x.session_id for x in listed] == [two]
    finally:
        await hub.aclose()
        await conversations.aclose()
        await store.aclose()
