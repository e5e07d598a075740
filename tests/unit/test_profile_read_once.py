"""The turns in flight when a tenant's cached bot profile expires share one read of it: each used
to read it itself, and 200 soak sessions left each worker with ~110 Redis connections open (the
knowledge store's pool grew to the turns in flight at once)."""

import asyncio

import pytest

from assistant.knowledge.answer import BotProfile
from assistant.knowledge.grounder import Grounder
from assistant.testing.knowledge import MemoryKnowledgeStore


async def _no_retriever():
    raise AssertionError("no knowledge base: nothing is searched")


@pytest.fixture
def clock():
    return [0.0]


@pytest.fixture
def grounder(clock):
    store = MemoryKnowledgeStore()
    default = BotProfile(instructions="Be brief.")
    return store, Grounder(store, _no_retriever, default, top_k=2, profile_cache_s=2.0,
                           clock=lambda: clock[0])  # fmt: skip


async def test_turns_asking_at_once_share_one_read(grounder, clock):
    store, grounder = grounder
    profiles = await asyncio.gather(*(grounder.profile("acme") for _ in range(20)))
    assert {p.instructions for p in profiles} == {"Be brief."}
    assert store.profile_reads == 1
    clock[0] = 5.0  # the copy expired: one more read for all of them again
    await asyncio.gather(*(grounder.profile("acme") for _ in range(20)))
    assert store.profile_reads == 2
    await grounder.profile("other")
    assert store.profile_reads == 3  # per tenant


async def test_a_turn_that_goes_away_does_not_cancel_the_read_of_the_others(grounder):
    store, grounder = grounder
    gone = asyncio.create_task(grounder.profile("acme"))
    stays = asyncio.create_task(grounder.profile("acme"))
    await asyncio.sleep(0)  # both wait for the one read
    gone.cancel()
    assert (await stays).instructions == "Be brief."
    assert store.profile_reads == 1
