"""The handoff on a real redis-server: the status compare-and-set (100 rounds of two agents
claiming the same conversation at once on their own connections: exactly one wins each time),
the session event stream (a burst of 1,000 events read live by a subscriber that drops and
resumes from its last sequence number: nothing missed, nothing twice), one blocking read per
process for many viewers, trimming and expiry, tenants kept apart."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from adapters.memory.redis import RedisSessionStore
from adapters.memory.redis_conversations import RedisConversations
from assistant.errors import ConversationStatusError, SessionNotFoundError
from assistant.handoff.hub import EventHub
from assistant.handoff.service import Handoff
from assistant.handoff.settings import HandoffSettings
from assistant.knowledge.answer import BotProfile
from assistant.messages import Message, SessionInfo, secret_id
from assistant.ports.conversations import QUEUE

pytestmark = pytest.mark.integration


async def _profile(tenant: str) -> BotProfile:
    return BotProfile()


@contextlib.asynccontextmanager
async def stores(redis_url: str, tenant: str = "acme", **kwargs):
    sessions = RedisSessionStore.from_url(redis_url, tenant=tenant, **kwargs)
    conversations = RedisConversations(sessions, maxlen=kwargs.pop("maxlen", 10_000))
    try:
        yield sessions, conversations
    finally:
        await conversations.aclose()
        await sessions.aclose()


def _handoff(sessions, conversations) -> Handoff:
    return Handoff(conversations, sessions, HandoffSettings(), profile=_profile)


async def test_two_agents_claiming_at_once_exactly_one_wins_every_time(redis_url):
    async with stores(redis_url) as (s1, c1), stores(redis_url) as (s2, c2):
        one, two = _handoff(s1, c1), _handoff(s2, c2)  # two processes: own connections
        winners = []
        for _ in range(100):
            session = await s1.create(SessionInfo(id=secret_id("sess")))
            await s1.append(session.id, Message.from_text("user", "my parcel never came"))
            await one.request("acme", session.id, "customer_request")
            results = await asyncio.gather(
                one.claim("acme", session.id, "agent:a"), two.claim("acme", session.id, "agent:b"),
                return_exceptions=True,
            )  # fmt: skip
            won = [r for r in results if not isinstance(r, Exception)]
            lost = [r for r in results if isinstance(r, Exception)]
            assert len(won) == 1 and len(lost) == 1, results
            assert isinstance(lost[0], ConversationStatusError)
            assert lost[0].code == "conversation_status_conflict"
            stored = await c1.state(session.id)
            assert stored.status == "human" and stored.agent == won[0].agent
            winners.append(won[0].agent)
        assert set(winners) <= {"agent:a", "agent:b"}


async def test_the_status_reaches_the_turns_info_and_the_summary_the_agent(redis_url):
    async with stores(redis_url) as (sessions, conversations):
        handoff = _handoff(sessions, conversations)
        session = await sessions.create(SessionInfo(id=secret_id("sess")))
        await sessions.append(session.id, Message.from_text("user", "Where is order 1234?"))
        state = await handoff.request("acme", session.id, "customer_request")
        assert state.status == "waiting_human"
        assert state.summary == "customer: Where is order 1234?"
        started = await sessions.begin_turn(session.id, "tok")  # the turn's own round trip
        assert started.snapshot.info.status == "waiting_human"
        assert (await sessions.load(session.id)).info.status == "waiting_human"
        listed = await handoff.listed("acme", "waiting_human", 10)
        assert [x.session_id for x in listed] == [session.id]
        with pytest.raises(ConversationStatusError):  # nobody claimed it yet
            await handoff.reply("acme", session.id, "agent:a", "hello")
        await handoff.claim("acme", session.id, "agent:a")
        with pytest.raises(ConversationStatusError) as caught:
            await handoff.reply("acme", session.id, "agent:b", "not mine")
        assert caught.value.code == "conversation_not_yours"
        reply = await handoff.reply("acme", session.id, "agent:a", "It ships today.")
        assert reply.author == "agent:a"
        history = await sessions.load(session.id)
        assert history.messages[-1].author == "agent:a" and history.messages[-1].role == "assistant"
        events = await conversations.events(session.id, "0", 100)
        kinds = [(e["type"], e.get("status")) for _, e in events]
        assert kinds == [
            ("conversation.status.updated", "waiting_human"),
            ("conversation.status.updated", "human"),
            ("conversation.item.added", None),
        ]
        await handoff.handback("acme", session.id, "agent:a")
        assert (await sessions.load(session.id, last=0)).info.status == "bot"


async def test_another_tenant_neither_sees_nor_changes_a_conversation(redis_url):
    async with stores(redis_url) as (sessions, conversations):
        handoff = _handoff(sessions, conversations)
        session = await sessions.create(SessionInfo(id=secret_id("sess")))
        await handoff.request("acme", session.id, "api")
        assert await handoff.listed("other", None, 10) == []
        with pytest.raises(SessionNotFoundError):
            await handoff.claim("other", session.id, "agent:x")
        with pytest.raises(SessionNotFoundError):
            await handoff.history("other", session.id)
        with pytest.raises(SessionNotFoundError):
            await conversations.for_tenant("other").transition(
                session.id, {"bot"}, (await conversations.state(session.id)), {"type": "x"}
            )
        assert await conversations.for_tenant("other").events(session.id, "0", 10) == []


async def test_the_tenants_queue_stream_follows_every_change_of_its_conversations_only(redis_url):
    async with stores(redis_url, tenant="queue-a") as (sessions, conversations):
        handoff = _handoff(sessions, conversations)
        hub = EventHub(conversations, block_ms=1_000)
        other = conversations.for_tenant("queue-b")
        start = await conversations.last_seq(QUEUE)
        sub = await hub.subscribe("queue-a", QUEUE, start)  # a console, live from now
        one = await sessions.create(SessionInfo(id=secret_id("sess")))
        two = await sessions.create(SessionInfo(id=secret_id("sess")))
        await sessions.append(one.id, Message.from_text("user", "I want a refund"))
        await handoff.request("queue-a", one.id, "customer_request")
        await handoff.request("queue-a", two.id, "api")
        await handoff.claim("queue-a", one.id, "agent:a")
        await handoff.resolve("queue-a", one.id, "agent:a")
        got = []
        async with asyncio.timeout(10):
            async for seq, event in sub:
                got.append((seq, event))
                if len(got) == 4:
                    break
        hub.unsubscribe(sub)
        changes = [(e["conversation"], e["status"], e["agent"]) for _, e in got]
        assert changes == [(one.id, "waiting_human", None), (two.id, "waiting_human", None),
                           (one.id, "human", "agent:a"), (one.id, "resolved", None)]  # fmt: skip
        first = got[0][1]
        assert first["type"] == "conversation.status.updated"
        assert (
            first["reason"] == "customer_request"
            and first["summary"] == "customer: I want a refund"
        )
        assert "origin" not in first and first["handoff_at"]
        # Resuming from the second change's seq gives the two after it, once each.
        again = await conversations.events(QUEUE, got[1][0], 10)
        assert [e["status"] for _, e in again] == ["human", "resolved"]
        assert await other.events(QUEUE, "0", 10) == []  # another tenant's queue holds none
        assert await other.last_seq(QUEUE) == "0"
        await hub.aclose()


async def test_two_processes_sweeping_at_once_hand_a_timed_out_conversation_back_once(redis_url):
    from assistant.handoff.sweeper import ClaimTimeouts
    from assistant.messages import now_ms

    settings = HandoffSettings(claim_timeout_s=0.001)  # 1 ms: past it by the time we sweep
    async with stores(redis_url, tenant="sweep") as (s1, c1), stores(redis_url) as (s2, c2):
        one = Handoff(c1, s1, settings, profile=_profile)
        two = Handoff(c2.for_tenant("sweep"), s2.for_tenant("sweep"), settings, profile=_profile)
        session = await s1.create(SessionInfo(id=secret_id("sess")))
        state = await one.request("sweep", session.id, "customer_request")
        while now_ms() <= state.since + 1:  # the clock passes the 1 ms timeout
            await asyncio.sleep(0)
        done = await asyncio.gather(ClaimTimeouts(one).sweep(), ClaimTimeouts(two).sweep())
        assert sum(done) >= 1
        assert (await c1.state(session.id)).status == "bot"
        events = await c1.events(session.id, "0", 10)
        assert [e["status"] for _, e in events] == ["waiting_human", "bot"]  # changed once
        assert ("sweep", session.id) not in await c1.due(now_ms() + 1, 100)  # off the list


async def test_a_resumed_subscriber_misses_nothing_and_repeats_nothing_over_1000_events(redis_url):
    async with stores(redis_url) as (sessions, conversations):
        session = await sessions.create(SessionInfo(id=secret_id("sess")))
        hub = EventHub(conversations, block_ms=1_000, page=100)
        seen: list[int] = []

        async def burst() -> None:
            for n in range(1_000):
                await conversations.publish(session.id, {"type": "test", "n": n})
                if n % 50 == 0:
                    await asyncio.sleep(0)

        async def consume(after: str, stop_at: int | None) -> str:
            sub = await hub.subscribe("acme", session.id, after)
            last = after
            try:
                async for seq, event in sub:
                    seen.append(event["n"])
                    last = seq
                    if stop_at is not None and event["n"] >= stop_at or event["n"] == 999:
                        break
            finally:
                hub.unsubscribe(sub)
            return last

        publisher = asyncio.create_task(burst())
        last = await consume("0", 300)  # the connection drops mid-burst...
        last = await consume(last, 650)  # ...resumes, drops again...
        await consume(last, None)  # ...and reads to the end
        await publisher
        assert seen == list(range(1_000))
        await hub.aclose()


async def test_one_blocking_read_serves_many_viewers_of_many_sessions(redis_url):
    async with stores(redis_url) as (sessions, conversations):
        ids = [(await sessions.create(SessionInfo(id=secret_id("sess")))).id for _ in range(20)]
        hub = EventHub(conversations, block_ms=2_000)
        subs = [await hub.subscribe("acme", sid, "0") for sid in ids for _ in range(5)]
        assert hub.watched == 20
        reads_before = hub.reads
        for sid in ids:
            await conversations.publish(sid, {"type": "test", "to": sid})
        for sub in subs:
            seq, event = await anext(aiter(sub))
            assert event["to"] == sub.key[1]
        # 100 viewers, 20 events: a read per batch of events (here about one per event, as
        # they are published one by one), not one per viewer
        assert hub.reads - reads_before <= 20 + 2 < len(subs)
        await hub.aclose()


async def test_the_stream_is_trimmed_and_expires_with_the_session(redis_url):
    async with stores(redis_url, ttl_s=60) as (sessions, conversations):
        conversations.maxlen = 100
        session = await sessions.create(SessionInfo(id=secret_id("sess")))
        for n in range(1_000):
            await conversations.publish(session.id, {"type": "test", "n": n})
        kept = await conversations.events(session.id, "0", 10_000)
        assert 100 <= len(kept) < 1_000 and kept[-1][1]["n"] == 999
        key = conversations._stream(session.id)
        ttl = await sessions.client.pttl(key)
        assert 0 < ttl <= 60_000
        assert key.startswith(f"assistant:acme:s:{{{session.id}}}:")  # the session's hash tag
        # A resume from a seq trimmed away is told so, and goes on from the oldest kept.
        hub = EventHub(conversations, block_ms=500)
        first_written = f"{int(kept[0][0].split('-')[0]) - 1}-0"
        resumed = await hub.subscribe("acme", session.id, first_written)
        assert resumed.lost
        within = await hub.subscribe("acme", session.id, kept[5][0])
        assert not within.lost
        assert not (await hub.subscribe("acme", session.id, "0")).lost
        await hub.aclose()


async def test_each_change_and_an_agents_message_is_published_to_the_tenants_webhooks(redis_url):
    import json

    import redis.asyncio as aioredis

    from adapters.webhooks.redis_queue import RedisWebhookStore
    from assistant.messages import now_ms
    from assistant.webhooks.service import Webhooks
    from assistant.webhooks.settings import WebhookSettings

    settings = WebhookSettings(allow_private_addresses=True)
    client = aioredis.from_url(redis_url)
    queue = RedisWebhookStore(client, settings)
    webhooks = Webhooks(queue, settings)
    events = ["conversation.handoff", "conversation.claimed", "conversation.resolved",
              "message.created"]  # fmt: skip
    await webhooks.create("acme", "http://127.0.0.1:9/hook", events)
    await webhooks.create("other", "http://127.0.0.1:9/hook", events)
    try:
        async with stores(redis_url) as (sessions, conversations):
            handoff = Handoff(conversations, sessions, HandoffSettings(), profile=_profile,
                              webhooks=webhooks)  # fmt: skip
            session = await sessions.create(SessionInfo(id=secret_id("sess")))
            await sessions.append(session.id, Message.from_text("user", "I need a person"))
            await handoff.request("acme", session.id, "customer_request")
            await handoff.claim("acme", session.id, "agent:a")
            await handoff.reply("acme", session.id, "agent:a", "Hello, Sam here.")
            await handoff.resolve("acme", session.id, "agent:a")
            claims = await queue.claim(now_ms() + 1_000, 100, 60_000, 5)
            bodies = [json.loads(c.delivery.body) for c in claims]
            assert {b["tenant"] for b in bodies} == {"acme"}
            by_type = {b["type"]: b["data"] for b in bodies}
            assert sorted(by_type) == sorted(events)
            assert by_type["conversation.handoff"]["reason"] == "customer_request"
            assert by_type["conversation.handoff"]["summary"] == "customer: I need a person"
            assert by_type["conversation.claimed"]["agent"] == "agent:a"
            assert by_type["message.created"]["item"]["author"] == "agent:a"
            assert all(d["session_id"] == session.id and d["seq"] for d in by_type.values())
    finally:
        await client.aclose()
