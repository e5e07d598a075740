"""The conversations port on the Redis session store (``assistant.ports.conversations``).

Keys, beside the session's own (``redis``: the same ``{<session_id>}`` hash tag, so the
transition script touches one slot):

    meta     hash    the session's; fields ``status`` (JSON, absent: "bot", so it reaches every
                     turn in the begin-turn script's HGETALL) and ``handoff`` (the rest of the
                     ``ConversationState``), written only by the ``TRANSITION`` script
    events   stream  the session's events, field ``e`` (JSON); trimmed to about ``maxlen``
                     (``XADD MAXLEN ~``), its time to live the session's, renewed by each event

and one per tenant, outside any session (its own slot: single-key commands only):

    {prefix}:{tenant}:conversations   zset  session ids that were ever handed off, by when;
                                            an index for ``GET /v1/conversations``: each entry's
                                            status is read from its session (the truth), the
                                            entries of expired sessions are dropped as found
    {prefix}:{tenant}:queue           stream the tenant's status changes (``QUEUE``), written
                                            after each applied transition; trimmed to about
                                            ``QUEUE_MAXLEN``, expiring as a session would

and one for the whole deployment:

    {prefix}:handoff:waiting          zset  ``[tenant, session id]`` (JSON) of conversations
                                            gone to ``waiting_human``, by when: the
                                            claim-timeout sweeper's work list (``due``)

``wait`` is one ``XREAD BLOCK`` over all the streams a process watches, on a connection of its own
(a blocking read holds its connection); ``unblock`` ends it with ``CLIENT UNBLOCK`` from the
store's shared connection, so a stream added is read at once. On a Redis Cluster one XREAD
cannot span slots: there ``wait`` reads the streams one by one without blocking, then sleeps a
poll interval (``POLL_S``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the redis conversations need redis-py: pip install 'assistant[redis]' ({exc})"
    ) from exc

from adapters.memory import redis_scripts as lua
from adapters.memory.redis import RedisSessionStore
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
)

POLL_S = 0.05
#: Status changes kept in a tenant's queue stream (a console resumes within them).
QUEUE_MAXLEN = 1_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[tuple[str, Event]]:
    """XRANGE / XREAD entries ``[[id, [field, value, ...]], ...]`` -> (id, event)."""
    out: list[tuple[str, Event]] = []
    for entry_id, fields in raw or []:
        if isinstance(fields, dict):
            value = fields.get("e", fields.get(b"e"))
        else:
            pairs = dict(zip(map(_text, fields[::2]), fields[1::2]))
            value = pairs.get("e")
        if value is not None:
            out.append((_text(entry_id), json.loads(_text(value))))
    return out


def _state(status_json: Any, handoff_json: Any) -> ConversationState:
    status = json.loads(_text(status_json)) if status_json else "bot"
    fields = json.loads(_text(handoff_json)) if handoff_json else {}
    return ConversationState.model_validate({**fields, "status": status})


class RedisConversations(ConversationStore):
    name = "redis_conversations"
    backend_errors = (RedisError,)

    def __init__(self, sessions: RedisSessionStore, *, maxlen: int = 10_000) -> None:
        self.sessions = sessions
        self.tenant = sessions.tenant
        self.maxlen = maxlen
        for view in {sessions, *sessions._root._views.values()}:  # its turn scripts append
            view.events_maxlen = maxlen  # to the same streams
        self._script = sessions.client.register_script(lua.TRANSITION)
        self._root = self
        self._views: dict[str, RedisConversations] = {self.tenant: self}
        self._reader: aioredis.Redis | None = None  # the blocking reads' own connection
        self._reader_id: int | None = None
        self._cluster = sessions._lines is not None and "Cluster" in type(sessions.client).__name__

    def for_tenant(self, tenant: str) -> RedisConversations:
        root = self._root
        view = root._views.get(tenant)
        if view is None:
            view = RedisConversations.__new__(RedisConversations)
            view.__dict__.update(root.__dict__)
            view.sessions = root.sessions.for_tenant(tenant)
            view.tenant = view.sessions.tenant
            root._views[tenant] = view
        return view

    @property
    def _pipe(self) -> Any:
        return self.sessions.pipe

    def _stream(self, session_id: str, tenant: str | None = None) -> str:
        store = self.sessions if tenant is None else self.sessions.for_tenant(tenant)
        if session_id == QUEUE:
            return f"{store.key_prefix}:{store.tenant}:queue"
        return store.keys(session_id)["events"]  # made once per session (codec.SessionKeys)

    def _index(self) -> str:
        return f"{self.sessions.key_prefix}:{self.tenant}:conversations"

    async def _state_impl(self, session_id: str) -> ConversationState | None:
        meta = self.sessions.keys(session_id)["meta"]
        replies = await self._pipe.transaction(
            [("EXISTS", meta), ("HMGET", meta, "status", "handoff")]
        )
        if not int(replies[0]):
            return None
        status, handoff = replies[1]
        return _state(status, handoff)

    async def _transition_impl(
        self,
        session_id: str,
        expected: frozenset[ConversationStatus],
        new: ConversationState,
        event: Event,
    ) -> Transitioned:
        keys = [self.sessions.keys(session_id)["meta"], self._stream(session_id)]
        rest = new.model_dump(mode="json", exclude={"status"})
        args = [str(self.sessions.ttl_ms), str(self.maxlen), " ".join(sorted(expected)),
                json.dumps(new.status), json.dumps(rest), json.dumps(event)]  # fmt: skip
        reply = await self._pipe.evalsha(self._script.sha, self._script.script, keys, args)
        status = int(reply[0])
        if status < 0:
            raise SessionNotFoundError(f"no session {session_id!r} (it may have expired)")
        if status == 0:
            return Transitioned(False, _state(reply[1], reply[2]))
        if new.handoff_at is not None:
            await self._pipe.call("ZADD", self._index(), str(new.handoff_at), session_id)
        await self._append(QUEUE, queue_event(session_id, new, event), QUEUE_MAXLEN)
        if new.status == "waiting_human":
            member = json.dumps([self.tenant, session_id])
            await self._pipe.call("ZADD", self._waiting(), str(new.since), member)
        return Transitioned(True, new, _text(reply[1]))

    def _waiting(self) -> str:
        return f"{self.sessions.key_prefix}:handoff:waiting"

    async def _due_impl(self, before_ms: int, limit: int) -> list[StreamKey]:
        raw = await self._pipe.call(
            "ZRANGEBYSCORE", self._waiting(), "-inf", f"({before_ms}", "LIMIT", 0, limit
        )
        return [tuple(json.loads(_text(member))) for member in raw or []]  # type: ignore[misc]

    async def _swept_impl(self, keys: list[StreamKey]) -> None:
        if keys:
            members = [json.dumps([tenant, sid]) for tenant, sid in keys]
            await self._pipe.call("ZREM", self._waiting(), *members)

    async def _listed_impl(self, status: ConversationStatus | None, limit: int) -> list[Listed]:
        ids = [_text(x) for x in await self._pipe.call("ZREVRANGE", self._index(), 0, 9_999)]
        if not ids:
            return []
        reads = [("HMGET", self.sessions.keys(sid)["meta"], "status", "handoff", "created_at")
                 for sid in ids]  # fmt: skip
        if self._cluster:  # the sessions' slots differ: one read each (pipelined by the client)
            replies = await asyncio.gather(*(self._pipe.call(*read) for read in reads))
        else:
            replies = await self._pipe.transaction(reads)
        found: list[Listed] = []
        gone: list[str] = []
        for session_id, (state_status, handoff, created) in zip(ids, replies):
            if created is None:
                gone.append(session_id)
                continue
            state = _state(state_status, handoff)
            if status is None or state.status == status:
                found.append(Listed(session_id, state))
        if gone:
            await self._pipe.call("ZREM", self._index(), *gone)
        return found[:limit]

    async def _publish_impl(self, session_id: str, event: Event) -> str:
        return await self._append(session_id, event, self.maxlen)

    async def _append(self, session_id: str, event: Event, maxlen: int) -> str:
        stream = self._stream(session_id)
        replies = await self._pipe.transaction([
            ("XADD", stream, "MAXLEN", "~", str(maxlen), "*", "e", json.dumps(event)),
            ("PEXPIRE", stream, self.sessions.ttl_ms),
        ])  # fmt: skip
        return _text(replies[0])

    async def _events_impl(
        self, session_id: str, after: str, count: int
    ) -> list[tuple[str, Event]]:
        raw = await self._pipe.call(
            "XRANGE", self._stream(session_id), f"({after}", "+", "COUNT", count
        )
        return _entries(raw)

    async def _edge(self, session_id: str, command: str, ends: tuple[str, str]) -> str:
        raw = await self._pipe.call(command, self._stream(session_id), *ends, "COUNT", 1)
        entries = _entries(raw)
        return entries[0][0] if entries else "0"

    async def _first_seq_impl(self, session_id: str) -> str:
        return await self._edge(session_id, "XRANGE", ("-", "+"))

    async def _last_seq_impl(self, session_id: str) -> str:
        return await self._edge(session_id, "XREVRANGE", ("+", "-"))

    async def _wait_impl(
        self, cursors: Mapping[StreamKey, str], block_ms: int, count: int
    ) -> dict[StreamKey, list[tuple[str, Event]]]:
        if not cursors:
            return {}
        names = {self._stream(sid, tenant): (tenant, sid) for tenant, sid in cursors}
        root = self._root
        if self._cluster:
            return await self._poll(names, cursors, count)
        reader = await root._blocking_reader()
        ids = [cursors[names[name]] for name in names]
        try:
            raw = await reader.execute_command(
                "XREAD", "COUNT", count, "BLOCK", max(int(block_ms), 1), "STREAMS", *names, *ids
            )
        except BaseException:
            await root.aclose()  # a new connection (and CLIENT ID) next time
            raise
        if isinstance(raw, dict):
            raw = list(raw.items())
        return {names[_text(name)]: _entries(entries) for name, entries in raw or []}

    async def _poll(
        self, names: dict[str, StreamKey], cursors: Mapping[StreamKey, str], count: int
    ) -> dict[StreamKey, list[tuple[str, Event]]]:
        found: dict[StreamKey, list[tuple[str, Event]]] = {}
        for name, key in names.items():
            raw = await self._pipe.call("XRANGE", name, f"({cursors[key]}", "+", "COUNT", count)
            if raw:
                found[key] = _entries(raw)
        if not found:
            await asyncio.sleep(POLL_S)
        return found

    async def _blocking_reader(self) -> aioredis.Redis:
        if self._reader is None:
            pool = self.sessions.client.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": True}
            # One connection, always the same (its CLIENT ID is what ``unblock`` names).
            own = aioredis.BlockingConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **kwargs
            )
            reader = aioredis.Redis(connection_pool=own)
            self._reader_id = int(await reader.execute_command("CLIENT", "ID"))
            self._reader = reader
        return self._reader

    async def unblock(self) -> None:
        root = self._root
        if root._reader_id is not None:
            await self._call(self._pipe.call("CLIENT", "UNBLOCK", root._reader_id))

    async def aclose(self) -> None:
        root = self._root
        if root is self and self._reader is not None:
            reader, self._reader, self._reader_id = self._reader, None, None
            await reader.aclose()
            await reader.connection_pool.disconnect()


def build(store: Any, settings: Any) -> RedisConversations:
    """The conversations of the session store's Redis, through its connections."""
    return RedisConversations(store, maxlen=settings.handoff.stream_maxlen)
