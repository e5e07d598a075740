"""The handoff in a server process: the conversations store beside the session store (Redis, or
the in-memory one a unit test hands in), the ``Handoff`` service, the process's ``EventHub`` and
its claim-timeout sweeper (``ClaimTimeouts``), built with the app and closed with it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from assistant.config import Settings
from assistant.handoff.hub import EventHub
from assistant.handoff.service import Handoff
from assistant.handoff.sweeper import ClaimTimeouts
from assistant.knowledge.answer import BotProfile
from assistant.orchestrator import Orchestrator
from assistant.ports import SessionStore
from assistant.ports.conversations import ConversationStore
from assistant.registry import build_conversations
from assistant.webhooks.service import Webhooks


@dataclass
class HandoffRuntime:
    handoff: Handoff
    hub: EventHub
    sweeper: ClaimTimeouts


async def start_handoff(
    settings: Settings,
    store: SessionStore,
    orchestrator: Orchestrator,
    webhooks: Webhooks | None,
    stack: contextlib.AsyncExitStack,
) -> HandoffRuntime:
    conversations = _conversations(settings, store)
    stack.push_async_callback(conversations.aclose)
    default = BotProfile.from_settings(settings.bot)
    grounder = orchestrator.grounder

    async def profile(tenant: str) -> BotProfile:
        return default if grounder is None else await grounder.profile(tenant)

    handoff = Handoff(conversations, store, settings.handoff, profile=profile, webhooks=webhooks)
    hub = EventHub(conversations, block_ms=settings.handoff.block_ms)
    stack.push_async_callback(hub.aclose)
    sweeper = ClaimTimeouts(handoff)
    sweeper.start()
    stack.push_async_callback(sweeper.aclose)
    return HandoffRuntime(handoff, hub, sweeper)


def _conversations(settings: Settings, store: SessionStore) -> ConversationStore:
    if getattr(store, "client", None) is not None:
        return build_conversations(settings, store)
    from assistant.testing.conversations import MemoryConversations
    from assistant.testing.memory import MemoryStore

    if not isinstance(store, MemoryStore):
        raise TypeError(f"no conversations store for a {type(store).__name__}")
    return MemoryConversations(store, maxlen=settings.handoff.stream_maxlen)
