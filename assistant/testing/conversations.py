"""The conversations port in memory, over a ``MemoryStore`` (the same sessions): the state beside
each session's ``SessionInfo.status``, the streams as lists with Redis-like ids, ``wait`` on a
condition. For unit tests; the Redis store's tests cover trimming and expiry."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping

from assistant.errors import SessionNotFoundError
from assistant.handoff.status import ConversationState
from assistant.messages import ConversationStatus
from assistant.ports.conversations import (
    QUEUE,
    ConversationStore,
    Event,
    Listed,
    StreamKey,
    Transitioned,
    queue_event,
    seq_key,
)
from assistant.testing.memory import MemoryStore


class _Shared:
    def __init__(self) -> None:
        self.states: dict[StreamKey, ConversationState] = {}
        self.streams: dict[StreamKey, list[tuple[str, Event]]] = {}
        self.counter = itertools.count()
        self.changed: asyncio.Condition | None = None
        self.waiting: dict[StreamKey, int] = {}  # the sweeper's work list: key -> since
        self.unblocked = 0


class MemoryConversations(ConversationStore):
    name = "memory_conversations"

    def __init__(self, sessions: MemoryStore, *, maxlen: int = 10_000) -> None:
        self.sessions = sessions
        self.tenant = sessions.tenant
        self.maxlen = maxlen
        self._shared = _Shared()

    def for_tenant(self, tenant: str) -> MemoryConversations:
        view = MemoryConversations.__new__(MemoryConversations)
        view.__dict__.update(self.__dict__)
        view.sessions = self.sessions.for_tenant(tenant)
        view.tenant = tenant
        return view

    def _key(self, session_id: str) -> StreamKey:
        if session_id != QUEUE and session_id not in self.sessions.infos:
            raise SessionNotFoundError(f"no session {session_id!r}")
        return self.tenant, session_id

    def _condition(self) -> asyncio.Condition:
        if self._shared.changed is None:
            self._shared.changed = asyncio.Condition()
        return self._shared.changed

    async def _state_impl(self, session_id: str) -> ConversationState | None:
        if session_id not in self.sessions.infos:
            return None
        return self._shared.states.get((self.tenant, session_id), ConversationState())

    async def _transition_impl(
        self,
        session_id: str,
        expected: frozenset[ConversationStatus],
        new: ConversationState,
        event: Event,
    ) -> Transitioned:
        key = self._key(session_id)
        current = self._shared.states.get(key, ConversationState())
        if current.status not in expected:
            return Transitioned(False, current)
        self._shared.states[key] = new
        infos = self.sessions.infos
        infos[session_id] = infos[session_id].model_copy(update={"status": new.status})
        seq = await self._publish_impl(session_id, event)
        await self._publish_impl(QUEUE, queue_event(session_id, new, event))
        if new.status == "waiting_human":
            self._shared.waiting[key] = new.since
        return Transitioned(True, new, seq)

    async def _listed_impl(self, status: ConversationStatus | None, limit: int) -> list[Listed]:
        found = [
            Listed(sid, state)
            for (tenant, sid), state in self._shared.states.items()
            if tenant == self.tenant and sid in self.sessions.infos and state.handoff_at
            and (status is None or state.status == status)
        ]  # fmt: skip
        found.sort(key=lambda x: -(x.state.handoff_at or 0))
        return found[:limit]

    async def _due_impl(self, before_ms: int, limit: int) -> list[StreamKey]:
        waiting = sorted(self._shared.waiting.items(), key=lambda item: item[1])
        return [key for key, since in waiting if since < before_ms][:limit]

    async def _swept_impl(self, keys: list[StreamKey]) -> None:
        for key in keys:
            self._shared.waiting.pop(key, None)

    async def _publish_impl(self, session_id: str, event: Event) -> str:
        key = self._key(session_id)
        stream = self._shared.streams.setdefault(key, [])
        seq = f"{int(time.time() * 1000)}-{next(self._shared.counter)}"
        stream.append((seq, event))
        del stream[: max(len(stream) - self.maxlen, 0)]
        async with self._condition():
            self._condition().notify_all()
        return seq

    async def _events_impl(
        self, session_id: str, after: str, count: int
    ) -> list[tuple[str, Event]]:
        stream = self._shared.streams.get((self.tenant, session_id), [])
        return [e for e in stream if seq_key(e[0]) > seq_key(after)][:count]

    async def _first_seq_impl(self, session_id: str) -> str:
        stream = self._shared.streams.get((self.tenant, session_id), [])
        return stream[0][0] if stream else "0"

    async def _last_seq_impl(self, session_id: str) -> str:
        stream = self._shared.streams.get((self.tenant, session_id), [])
        return stream[-1][0] if stream else "0"

    def _ready(
        self, cursors: Mapping[StreamKey, str], count: int
    ) -> dict[StreamKey, list[tuple[str, Event]]]:
        found = {}
        for key, after in cursors.items():
            new = [e for e in self._shared.streams.get(key, []) if seq_key(e[0]) > seq_key(after)]
            if new:
                found[key] = new[:count]
        return found

    async def _wait_impl(
        self, cursors: Mapping[StreamKey, str], block_ms: int, count: int
    ) -> dict[StreamKey, list[tuple[str, Event]]]:
        condition = self._condition()
        unblocked = self._shared.unblocked
        async with condition:
            try:
                await asyncio.wait_for(
                    condition.wait_for(
                        lambda: self._ready(cursors, count) or self._shared.unblocked != unblocked
                    ),
                    block_ms / 1000,
                )
            except TimeoutError:
                return {}
        return self._ready(cursors, count)

    async def unblock(self) -> None:
        async with self._condition():
            self._shared.unblocked += 1
            self._condition().notify_all()
