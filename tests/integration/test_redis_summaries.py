"""The session summary in the Redis store (a real, private redis-server): claimed by one token at a
time (with a lease), written atomically with the claim given back, never replaced by a late one
covering fewer messages, not written into a session created again since; returned by ``load``
and by each turn's ``begin_turn`` with the index of the history's first message; and the
orchestrator's background summaries over it."""

from __future__ import annotations

import pytest

from adapters.memory.redis import RedisSessionStore
from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.messages import Message, SessionInfo
from assistant.orchestrator import Orchestrator
from assistant.ports import ConversationSummary
from assistant.summaries import SUMMARY_HEADER
from assistant.testing.language_models import ScriptedLM
from tests.support.redis import wait_until_expired

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_url):
    store = RedisSessionStore.from_url(redis_url, ttl_s=60, lock_ttl_ms=450)
    yield store
    await store.aclose()


async def test_claim_finish_and_a_late_summary(store):
    info = await store.create(SessionInfo(id="s1"))
    newer = ConversationSummary("up to ten: order PP-204816", 10, "m9", ("Order PP-204816.",))
    late = ConversationSummary("up to six", 6, "m5")
    assert await store.claim_summary("s1", "a", 60_000)
    assert not await store.claim_summary("s1", "b", 60_000)  # one claim at a time
    assert await store.finish_summary("s1", "a", newer, info.created_at)
    assert await store.claim_summary("s1", "b", 60_000)  # given back with the write
    assert not await store.finish_summary("s1", "b", late, info.created_at)
    assert not await store.finish_summary("s1", "c", newer, info.created_at)  # not more than it
    snapshot = await store.load("s1")
    assert snapshot.summary == newer and snapshot.info == info  # not a SessionInfo field
    assert await store.finish_summary(
        "s1", "c", ConversationSummary("x", 12, "m11"), info.created_at
    )
    assert (await store.load("s1")).summary.upto == 12
    # A session created again under the id: no summary, and an old one is not written into it.
    again = await store.create(SessionInfo(id="s1", created_at=info.created_at + 1))
    assert (await store.load("s1")).summary is None
    assert not await store.finish_summary("s1", "d", newer, info.created_at)
    assert await store.finish_summary("s1", "d", newer, again.created_at)


async def test_a_claim_lapses_with_its_lease(store):
    await store.create(SessionInfo(id="s2"))
    assert await store.claim_summary("s2", "dead-process", 200)
    await wait_until_expired(store.client, store.keys("s2")["sumlock"])
    assert await store.claim_summary("s2", "next", 60_000)


async def test_a_turn_reads_the_summary_and_where_its_history_starts(store):
    info = await store.create(SessionInfo(id="s3"))
    for i in range(6):
        await store.append("s3", Message.from_text("user" if i % 2 == 0 else "assistant", f"m{i}"))
    summary = ConversationSummary("the first four", 4, "x")
    assert await store.finish_summary("s3", "a", summary, info.created_at)
    started = await store.begin_turn("s3", "tok", last=3)
    assert started.snapshot.summary == summary and started.snapshot.first == 3
    assert [m.text for m in started.snapshot.messages] == ["m3", "m4", "m5"]
    loaded = await store.load("s3", last=2)
    assert loaded.summary == summary and loaded.first == 4


async def test_the_orchestrator_summarises_over_redis(store):
    llm = ScriptedLM()
    orchestrator = Orchestrator(
        llm, store, llm_settings=LLMSettings(),
        prompt_settings=PromptSettings(context_tokens=200, summary_max_tokens=16),
        memory_settings=MemorySettings(lock_wait_s=0.5),
    )  # fmt: skip
    session = await orchestrator.open_session()
    texts = ["My order number is PP-204816."] + [
        f"turn {'abcdefgh'[n]} " + "lorem " * 20 for n in range(7)
    ]
    for text in texts:
        await orchestrator.add_item(session.id, Message.from_text("user", text))
        run = orchestrator.start_response()
        _ = [d async for d in orchestrator.respond(session.id, run)]
        await orchestrator.summaries.idle()
    assert orchestrator.summaries.made >= 1
    stored = (await store.load(session.id)).summary
    assert stored is not None and stored.notes == ("My order number is PP-204816.",)
    system = llm.prompts[-1].messages[0].text
    assert SUMMARY_HEADER in system and "PP-204816" in system
    assert "PP-204816" not in " ".join(m.text for m in llm.prompts[-1].messages[1:])
