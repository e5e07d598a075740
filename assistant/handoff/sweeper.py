"""``ClaimTimeouts``: a server process's sweeper of conversations nobody claimed in time.

Every ``sweep_s`` it asks the conversations store which conversations went to ``waiting_human``
more than ``claim_timeout_s`` ago (``ConversationStore.due``, one read for every tenant) and reads
each one's state through ``Handoff.state``, which hands a timed-out one back to the bot with the
usual compare-and-set (so the change, reason ``timeout``, reaches the customer's connection, the
tenant's queue and the webhooks at once, not when somebody next looks); then it takes them off the
work list. Several processes sweeping at once apply each change once: the others' compare-and-set
finds it done. A store error is logged and the next sweep tries again."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from assistant.errors import AssistantError
from assistant.handoff.service import Handoff
from assistant.messages import now_ms

log = logging.getLogger(__name__)

#: Conversations looked at per sweep (the rest: the next sweeps).
BATCH = 200


class ClaimTimeouts:
    def __init__(self, handoff: Handoff) -> None:
        self.handoff = handoff
        self.settings = handoff.settings
        self.swept = 0  # conversations handed back to the bot by this sweeper (tests, metrics)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.settings.sweep_s > 0 and self.settings.claim_timeout_s > 0:
            self._task = asyncio.create_task(self._run())

    async def sweep(self) -> int:
        """One sweep: the conversations past the timeout handed back; how many this one did."""
        store = self.handoff.conversations
        before = now_ms() - int(self.settings.claim_timeout_s * 1000)
        due = await store.due(before, BATCH)
        done = 0
        for tenant, session_id in due:
            with contextlib.suppress(AssistantError):  # gone, or changed meanwhile: nothing to do
                state = await self.handoff.state(tenant, session_id)
                done += state.status == "bot"  # handed back (here, or by another sweeper)
        await store.swept(due)
        self.swept += done
        return done

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            try:
                await self.sweep()
            except Exception as exc:  # the store down, or a bug: logged, swept again later
                log.warning("claim-timeout sweep: %s: %s", type(exc).__name__, exc)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
