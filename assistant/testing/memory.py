"""A session store in a dict, behind the real ``SessionStore`` port (leases, idempotent turn ids,
blobs and the embedding cache included)."""

from __future__ import annotations

from assistant.errors import SessionNotFoundError
from assistant.messages import Message, SessionInfo
from assistant.ports import AppendResult, SessionSnapshot, SessionStore, TurnStart, check_tenant


class MemoryStore(SessionStore):
    name = "memory"

    def __init__(self, tenant: str = "default") -> None:
        self.tenant = tenant
        self._tenants: dict[str, MemoryStore] = {tenant: self}  # shared by all the views
        self.infos: dict[str, SessionInfo] = {}
        self.messages: dict[str, list[Message]] = {}
        self.leases: dict[str, str] = {}  # session id -> token holding the writer lease
        self.blobs: dict[str, bytes] = {}
        self.cache: dict[str, bytes] = {}

    def for_tenant(self, tenant: str) -> MemoryStore:
        view = self._tenants.get(check_tenant(tenant))
        if view is None:
            view = self._tenants[tenant] = MemoryStore(tenant)
            view._tenants = self._tenants
        return view

    async def _create_impl(self, info: SessionInfo) -> SessionInfo:
        self.infos[info.id] = info
        self.messages[info.id] = []
        return info

    async def _load_impl(self, session_id: str, last: int | None) -> SessionSnapshot | None:
        if session_id not in self.infos:
            return None
        messages = self.messages[session_id]
        chosen = messages[-last:] if last else ([] if last == 0 else messages)
        return SessionSnapshot(self.infos[session_id], tuple(chosen))

    async def _update_info_impl(self, session_id: str, fields: dict[str, object]) -> SessionInfo:
        if session_id not in self.infos:
            raise SessionNotFoundError(session_id)
        info = self.infos[session_id].model_copy(update=fields)
        self.infos[session_id] = info
        return info

    async def _append_impl(self, session_id: str, message: Message) -> AppendResult:
        if session_id not in self.infos:
            raise SessionNotFoundError(session_id)
        for stored in self.messages[session_id]:
            if message.turn_id and stored.turn_id == message.turn_id:
                return AppendResult(stored, created=False)
        self.messages[session_id].append(message)
        return AppendResult(message, created=True)

    async def _begin_turn_impl(
        self, session_id: str, token: str, message: Message | None, last: int | None, known: int
    ) -> TurnStart | None:
        if session_id not in self.infos:
            raise SessionNotFoundError(session_id)
        holder = self.leases.get(session_id)
        if holder is not None and holder != token:
            return None
        self.leases[session_id] = token
        appended = await self._append_impl(session_id, message) if message else None
        messages = self.messages[session_id]
        length = len(messages)
        first = 0 if last is None else max(length - last, 0) if last else length
        if 0 < known <= length and known > first:
            first = known
        snapshot = SessionSnapshot(self.infos[session_id], tuple(messages[first:]))
        return TurnStart(appended, snapshot, first, length)

    async def _end_turn_impl(
        self, session_id: str, token: str, message: Message | None
    ) -> AppendResult | None:
        if self.leases.get(session_id) == token:
            del self.leases[session_id]
        return await self._append_impl(session_id, message) if message else None

    async def _renew_turn_impl(self, session_id: str, token: str) -> bool:
        return self.leases.get(session_id) == token

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
