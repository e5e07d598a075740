"""A session store in a dict, behind the real ``SessionStore`` port (leases, idempotent turn ids,
blobs and the embedding cache included).

Crash safety as the Redis store has it: a lease belongs to a process (``owner``); ``process()``
gives the same data as another server process sees it, and ``crash()`` kills this one: its calls
fail from then on, its leases are free for the others, and the partial reply it was streaming is
stored as ``interrupted`` by the next process to take the session's lease. Leases here do not
expire with time (the Redis store's tests cover that).

The sessions' ``limits`` are enforced as the Redis store enforces them: a message's bytes are its
stored JSON's plus the blobs of the images it brings."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Awaitable
from typing import Any, TypeVar

from assistant.errors import RateLimitError, SessionNotFoundError, StoreError
from assistant.messages import Message, SessionInfo
from assistant.ports import (
    AppendResult,
    ConversationSummary,
    PartialReply,
    SessionLimits,
    SessionSnapshot,
    SessionStore,
    TurnStart,
    check_tenant,
)

_T = TypeVar("_T")
_Lease = tuple[str, str]  # (owner, token)


def _once(message: Message) -> str:
    return message.turn_id or f"id:{message.id}"


class MemoryStore(SessionStore):
    name = "memory"

    def __init__(self, tenant: str = "default", *, limits: SessionLimits | None = None) -> None:
        self.tenant = tenant
        self.limits = limits or SessionLimits()
        self._tenants: dict[str, MemoryStore] = {tenant: self}  # shared by all the views
        self.infos: dict[str, SessionInfo] = {}
        self.messages: dict[str, list[Message]] = {}
        #: session id -> the bytes its messages take (``SessionLimits``)
        self.stored_bytes: dict[str, int] = {}
        self.leases: dict[str, _Lease] = {}  # session id -> who holds its writer lease
        #: session id -> the reply streaming now, and the lease that writes it
        self.partials: dict[str, tuple[_Lease, PartialReply]] = {}
        self.blobs: dict[str, bytes] = {}
        #: session id -> its summary, and who holds its summary claim (claims do not expire here)
        self.summaries: dict[str, ConversationSummary] = {}
        self.summary_claims: dict[str, str] = {}
        self.cache: dict[str, bytes] = {}
        #: This "process"; ``live`` is shared by every view and process of the store.
        self.owner = secrets.token_hex(4)
        self.live: set[str] = {self.owner}
        #: Calls of ``renew_turn`` that carried a partial reply (for tests).
        self.partial_writes = 0

    def for_tenant(self, tenant: str) -> MemoryStore:
        view = self._tenants.get(check_tenant(tenant))
        if view is None:
            view = self._tenants[tenant] = MemoryStore(tenant, limits=self.limits)
            view._tenants, view.live, view.owner = self._tenants, self.live, self.owner
        return view if view.owner == self.owner else view._as(self.owner)

    def process(self) -> MemoryStore:
        """The same sessions as another server process sees them (its own owner)."""
        other = self._as(secrets.token_hex(4))
        self.live.add(other.owner)
        return other

    def crash(self) -> None:
        """This process dies: its heartbeat stops (its leases are free) and it writes no more."""
        self.live.discard(self.owner)

    def _as(self, owner: str) -> MemoryStore:
        view = copy.copy(self)
        view.owner = owner
        return view

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        if self.owner not in self.live:
            if hasattr(awaitable, "close"):
                awaitable.close()  # type: ignore[union-attr]
            raise StoreError(f"{self.name}: this process is dead")
        return await super()._call(awaitable)

    async def _create_impl(self, info: SessionInfo) -> SessionInfo:
        self.infos[info.id] = info
        self.messages[info.id] = []
        self.stored_bytes[info.id] = 0
        self.partials.pop(info.id, None)
        self.summaries.pop(info.id, None)
        return info

    async def _load_impl(self, session_id: str, last: int | None) -> SessionSnapshot | None:
        if session_id not in self.infos:
            return None
        messages = self.messages[session_id]
        chosen = messages[-last:] if last else ([] if last == 0 else messages)
        first = len(messages) - len(chosen)
        summary = self.summaries.get(session_id)
        return SessionSnapshot(self.infos[session_id], tuple(chosen), summary, first)

    async def _update_info_impl(self, session_id: str, fields: dict[str, object]) -> SessionInfo:
        if session_id not in self.infos:
            raise SessionNotFoundError(session_id)
        info = self.infos[session_id].model_copy(update=fields)
        self.infos[session_id] = info
        return info

    async def _append_impl(self, session_id: str, message: Message) -> AppendResult:
        return self._store(session_id, message, limited=True)

    def _store(self, session_id: str, message: Message, *, limited: bool) -> AppendResult:
        """Append once per turn id; ``limited`` (the client's writes): refused past the limits."""
        if session_id not in self.infos:
            raise SessionNotFoundError(session_id)
        once = _once(message)
        messages = self.messages[session_id]
        for stored in messages:
            if _once(stored) == once:
                return AppendResult(stored, created=False)
        limits = self.limits
        if limited and limits.messages and len(messages) >= limits.messages:
            raise limits.too_many_messages()
        size = len(message.model_dump_json().encode())
        size += sum(len(self.blobs.get(part.sha256, b"")) for part in message.images)
        used = self.stored_bytes.get(session_id, 0) + size
        if limited and limits.bytes and used > limits.bytes:
            raise limits.too_large(size)
        messages.append(message)
        self.stored_bytes[session_id] = used
        return AppendResult(message, created=True)

    async def _begin_turn_impl(
        self, session_id: str, token: str, message: Message | None, last: int | None, known: int,
        event: dict[str, Any] | None = None,
    ) -> TurnStart | None:  # fmt: skip
        if session_id not in self.infos:
            raise SessionNotFoundError(session_id)
        mine = (self.owner, token)
        holder = self.leases.get(session_id)
        if holder is not None and holder != mine and holder[0] in self.live:
            return None
        self.leases[session_id] = mine
        recovered = holder != mine and await self._recover(session_id, mine)
        try:
            appended = self._store(session_id, message, limited=True) if message else None
        except RateLimitError:  # refused: nothing stored, the lease not kept unless it was ours
            if holder != mine:
                del self.leases[session_id]
            raise
        messages = self.messages[session_id]
        length = len(messages)
        first = 0 if last is None else max(length - last, 0) if last else length
        if 0 < known <= length and known > first:
            first = known
        summary = self.summaries.get(session_id)
        snapshot = SessionSnapshot(self.infos[session_id], tuple(messages[first:]), summary, first)
        return TurnStart(appended, snapshot, first, length, recovered)

    async def _recover(self, session_id: str, mine: _Lease) -> bool:
        """A partial another lease left: stored as the reply, ``interrupted``, once."""
        left = self.partials.get(session_id)
        if left is None or left[0] == mine:
            return False
        del self.partials[session_id]
        self._store(session_id, left[1].as_interrupted(), limited=False)
        return True

    async def _end_turn_impl(
        self, session_id: str, token: str, message: Message | None,
        event: dict[str, Any] | None = None,
    ) -> AppendResult | None:  # fmt: skip
        mine = (self.owner, token)
        if self.leases.get(session_id) == mine:
            del self.leases[session_id]
        if self.partials.get(session_id, (None,))[0] == mine:
            del self.partials[session_id]
        return self._store(session_id, message, limited=False) if message else None

    async def _renew_turn_impl(
        self, session_id: str, token: str, partial: PartialReply | None
    ) -> bool:
        mine = (self.owner, token)
        if self.leases.get(session_id) != mine:
            return False
        if partial is not None:
            self.partial_writes += 1
            self.partials[session_id] = (mine, partial)
        return True

    async def _claim_summary_impl(self, session_id: str, token: str, lease_ms: int) -> bool:
        return self.summary_claims.setdefault(session_id, token) == token

    async def _finish_summary_impl(
        self, session_id: str, token: str, summary: ConversationSummary | None, created_at: int
    ) -> bool:
        if self.summary_claims.get(session_id) == token:
            del self.summary_claims[session_id]
        info = self.infos.get(session_id)
        if summary is None or info is None or info.created_at != created_at:
            return False
        stored = self.summaries.get(session_id)
        if stored is not None and stored.upto >= summary.upto:
            return False
        self.summaries[session_id] = summary
        return True

    async def _put_blob_impl(self, sha256: str, data: bytes) -> None:
        self.blobs[sha256] = data

    async def _get_blob_impl(self, sha256: str) -> bytes | None:
        return self.blobs.get(sha256)

    async def _cache_get_impl(self, key: str) -> bytes | None:
        return self.cache.get(key)

    async def _cache_set_impl(self, key: str, value: bytes, ttl_s: int) -> None:
        self.cache[key] = value

    async def _ping_impl(self) -> bool:
        return True
