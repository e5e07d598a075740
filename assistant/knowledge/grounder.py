"""What a turn asks of the knowledge bases: the tenant's bot profile, and the passages its words
find in the profile's knowledge base (``answer.ground``). One per process, shared by the
orchestrator's tenant views and the stateless completions.

    grounder = Grounder(store, retriever_of, BotProfile.from_settings(settings.bot), top_k=3)
    profile = await grounder.profile("acme")         # stored, else the configured default
    grounding = await grounder.ground("acme", "Where is my order #A-1043?")
    grounding is None           the profile names no knowledge base: the plain assistant answers

``store`` holds the profiles; ``retriever_of`` gives the retriever (awaited: a server builds the
knowledge service, its reader and embedder, on the first turn that searches).

A profile is read from the store at most once per ``profile_cache_s`` per tenant (a turn of a
tenant with no knowledge base then costs no store call), so a profile stored through another
worker applies there within that time; ``forget(tenant)`` drops this worker's copy at once (the
profile route calls it after a write).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from assistant import heap
from assistant.knowledge.answer import BotProfile, Grounding, ground
from assistant.ports.retrieval import KnowledgeStore, Retriever

_MAX_TENANTS = 4096


class Grounder:
    def __init__(
        self,
        store: KnowledgeStore,
        retriever_of: Callable[[], Awaitable[Retriever]],
        default: BotProfile,
        *,
        top_k: int,
        profile_cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._retriever_of = retriever_of
        self.default = default
        self.top_k = top_k
        self.profile_cache_s = profile_cache_s
        self._clock = clock
        self._profiles: dict[str, tuple[float, BotProfile]] = {}
        heap.track("bot_profiles", self, _MAX_TENANTS, lambda grounder: len(grounder._profiles))
        self._reading: dict[str, asyncio.Task[BotProfile]] = {}

    async def profile(self, tenant: str) -> BotProfile:
        """The tenant's profile; when it must be read, one read for every turn that asks
        meanwhile (the turns in flight when the copy expired each opened a Redis connection of
        their own: 200 soak sessions left two workers with ~110 each)."""
        cached = self._profiles.get(tenant)
        if cached is not None and self._clock() - cached[0] < self.profile_cache_s:
            return cached[1]
        task = self._reading.get(tenant)
        if task is None:
            task = self._reading[tenant] = asyncio.create_task(self._read(tenant))
            task.add_done_callback(lambda done: self._read_done(tenant, done))
        return await asyncio.shield(task)

    def _read_done(self, tenant: str, task: asyncio.Task[BotProfile]) -> None:
        self._reading.pop(tenant, None)
        if not task.cancelled():
            task.exception()  # retrieved: the turns still waiting get it

    async def _read(self, tenant: str) -> BotProfile:
        now = self._clock()
        stored = await self.store.for_tenant(tenant).profile()
        profile = BotProfile.from_stored(stored, self.default)
        if len(self._profiles) >= _MAX_TENANTS:
            self._profiles.clear()  # cheap to read again
        self._profiles[tenant] = (now, profile)
        return profile

    def forget(self, tenant: str) -> None:
        self._profiles.pop(tenant, None)

    async def ground(self, tenant: str, query: str) -> Grounding | None:
        """The passages for ``query`` (see ``answer.ground``); None without a knowledge base."""
        profile = await self.profile(tenant)
        if not profile.knowledge_base:
            return None
        return await ground(await self._retriever_of(), profile, tenant, query, self.top_k)
