"""Session memory in Redis.

Every key of a session lives under ``{prefix}:{tenant}:s:{<session_id>}:`` (the braces are a Redis
Cluster hash tag: a session's keys share one slot, so the multi-key scripts work on a cluster too):

    meta    hash   SessionInfo fields, each value JSON, and ``#bytes``: what the session's
                   messages take, counted towards its limits (``redis_scripts``)
    msgs    list   Message JSON, oldest first (append-only)
    turns   hash   client turn id (or ``id:<message id>`` when there is none) -> index of the
                   message in ``msgs``: a retried send, or a write redis-py retries after a dropped
                   connection, is stored once
    lock    string the writer lease: ``<process instance> <token>`` (taken by begin_turn,
                   renewed while a reply streams, given back by end_turn; SET PX,
                   compare-and-delete); taken over when the instance's heartbeat is gone
    partial string the reply streaming now, written with the lease's renewal and deleted by
                   end_turn; begin_turn stores one a dead writer left as ``interrupted``
                   (``redis_turns`` explains both, and the one key outside a session,
                   ``{prefix}:owner:<instance>``, each process's heartbeat)
    sumlock string who makes the session's summary now; the summary is in meta
                   (``#summary``, ``#summary_upto``: ``redis_summaries``)

Every read and write refreshes the sliding time to live of ``meta``, ``msgs`` and ``turns``.
Each call is one round trip: ``load`` and ``create`` one MULTI/EXEC block, the others one Lua
script. ``round_trips`` counts what was sent. On one node (``redis://``), session keys go through
one shared, automatically pipelined connection (``redis_pipe.RedisPipe``: the requests of all
sessions in a loop iteration leave in one write); image blobs and the embedding cache go through
redis-py's pool. A ``redis+sentinel://`` or ``redis+cluster://`` URL (``redis_topology``) gets
redis-py's Sentinel or Cluster clients for everything instead (``redis_lines``): they follow a
failover, retrying a request for up to ``retry_s``, and on Sentinel can ``WAIT`` for a replica.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable
from typing import Any, TypeVar

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the redis session store needs redis-py: pip install 'assistant[redis]' ({exc})"
    ) from exc

from adapters.memory import redis_codec as codec
from adapters.memory import redis_scripts as lua
from adapters.memory import redis_summaries
from adapters.memory.redis_lines import Lines, open_lines
from adapters.memory.redis_owner import OwnerHeartbeat
from adapters.memory.redis_pipe import RedisPipe
from adapters.memory.redis_topology import parse_redis_url
from adapters.memory.redis_turns import RedisTurns
from assistant.errors import SessionNotFoundError
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
from assistant.ports.conversations import Event

_T = TypeVar("_T")


def _binary_client(client: aioredis.Redis) -> aioredis.Redis:
    """A client of ``client``'s server whose replies are not decoded (blobs, the cache)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    binary_pool = aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return aioredis.Redis(connection_pool=binary_pool)


class RedisSessionStore(SessionStore):
    name = "redis"
    backend_errors = (RedisError,)  # redis-py's errors do not derive from the builtin ones
    appends_events = True  # the turn scripts append to the session's event stream (``events``)

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str = "assistant",
        tenant: str = "default",
        ttl_s: float = 7 * 24 * 3600,
        lock_ttl_ms: int = 10_000,
        owner_heartbeat_ms: int = 1_000,
        owner_ttl_ms: int = 3_000,
        lines: Lines | None = None,
    ) -> None:
        """``client``: a single node's redis-py client (the pipe and the blob pool reach its
        server), or a Sentinel or Cluster deployment's ``lines.client``, with ``lines``."""
        self.client = client
        self.key_prefix = key_prefix
        self.tenant = check_tenant(tenant)
        self._root = self  # the store whose connections the tenant views share
        self._views: dict[str, RedisSessionStore] = {self.tenant: self}
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.lock_ttl_ms = int(lock_ttl_ms)
        self.round_trips = 0  # requests sent to Redis (a pipeline or a script call counts once)
        self.events_maxlen = 10_000  # the session event streams' MAXLEN ~ (see conversations)
        self._binary: aioredis.Redis | None = None  # for blobs, made on first use
        self._keys = codec.SessionKeys(f"{key_prefix}:{self.tenant}")
        self._lines = lines
        #: Session keys: one shared pipelined connection to ``client``'s server, or the lines'.
        line = lines.line if lines else None
        self.pipe: Any = line or RedisPipe.from_kwargs(client.connection_pool.connection_kwargs)
        self._append_script = client.register_script(lua.APPEND)
        self._begin_script = client.register_script(lua.BEGIN_TURN)
        self._end_script = client.register_script(lua.END_TURN)
        self._update_script = client.register_script(lua.UPDATE_INFO)
        self._renew_script = client.register_script(lua.RENEW)
        #: Leases, this process's heartbeat and partial replies (shared by the tenant views).
        owner = OwnerHeartbeat(self.pipe, key_prefix, interval_ms=owner_heartbeat_ms,
                               ttl_ms=owner_ttl_ms)  # fmt: skip
        self.turns = RedisTurns(owner)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_connections: int = 64,
        pool_timeout_s: float = 10.0,
        retry_s: float = 10.0,
        wait_replicas: int | None = None,
        wait_timeout_ms: int = 100,
        **kwargs: Any,
    ) -> RedisSessionStore:
        """A store over new clients for ``url`` (its forms: ``redis_topology``). A pool holds at
        most ``max_connections``; a request finding them all busy waits for one (up to
        ``pool_timeout_s``) instead of failing, so a thousand concurrent sessions share a few
        dozen connections. Other client options go to a single node's pool. Sentinel and
        Cluster: ``open_lines`` (``retry_s``, ``wait_replicas``, ``wait_timeout_ms``)."""
        names = ("key_prefix", "tenant", "ttl_s", "lock_ttl_ms", "owner_heartbeat_ms",
                 "owner_ttl_ms")  # fmt: skip
        store_options = {name: kwargs.pop(name) for name in names if name in kwargs}
        lines = open_lines(
            parse_redis_url(url), retry_s=retry_s, max_connections=max_connections,
            pool_timeout_s=pool_timeout_s, wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )  # fmt: skip
        if lines is not None:
            if kwargs:
                raise TypeError(f"client options {sorted(kwargs)} are for a redis:// URL")
            return cls(lines.client, lines=lines, **store_options)
        kwargs.setdefault("decode_responses", True)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s, **kwargs
        )
        return cls(aioredis.Redis.from_pool(pool), **store_options)

    def for_tenant(self, tenant: str) -> RedisSessionStore:
        """This store under ``{prefix}:{tenant}:``: the same connections, pipe and scripts."""
        root = self._root
        view = root._views.get(tenant)
        if view is None:
            if len(root._views) >= 1024:  # views are cheap to make again
                root._views = {root.tenant: root}
            view = copy.copy(root)
            view.tenant = check_tenant(tenant)
            view._keys = codec.SessionKeys(f"{root.key_prefix}:{view.tenant}")
            view.round_trips = 0
            root._views[tenant] = view
        return view

    def keys(self, session_id: str) -> dict[str, str]:
        return self._keys(session_id)

    # -- error mapping -----------------------------------------------------------------------------

    def _run(self, script: Any, keys: list[str], args: list[str]) -> Awaitable[Any]:
        return self.pipe.evalsha(script.sha, script.script, keys, args)

    def _sent(self, awaitable: Awaitable[_T]) -> Awaitable[_T]:
        """Counts a request (``round_trips``) and hands it on, to be awaited by the caller."""
        self.round_trips += 1
        return awaitable

    # -- port --------------------------------------------------------------------------------------

    async def _create_impl(self, info: SessionInfo) -> SessionInfo:
        k = self.keys(info.id)
        fields = codec.info_to_mapping(info.model_dump(mode="json"))
        await self._sent(self.pipe.transaction([
            ("DEL", k["meta"], k["msgs"], k["turns"], k["partial"]),  # a new session starts empty
            ("HSET", k["meta"], *[x for pair in fields.items() for x in pair]),
            ("PEXPIRE", k["meta"], self.ttl_ms),
        ]))  # fmt: skip
        return info

    async def _load_impl(self, session_id: str, last: int | None) -> SessionSnapshot | None:
        k = self.keys(session_id)
        commands: list[tuple[Any, ...]] = [("HGETALL", k["meta"]), ("LLEN", k["msgs"])]
        if last != 0:  # LRANGE -0 -1 would be the whole list
            commands.append(("LRANGE", k["msgs"], -last if last else 0, -1))
        commands += [("PEXPIRE", k[name], self.ttl_ms) for name in ("meta", "msgs", "turns")]
        replies = await self._sent(self.pipe.transaction(commands))
        if not replies[0]:
            return None
        raw_messages = replies[2] if last != 0 else []
        messages = tuple(codec.parse_message(raw) for raw in raw_messages)
        meta = dict(zip(replies[0][::2], replies[0][1::2]))
        first = int(replies[1]) - len(messages)
        summary = codec.summary_from_hash(meta)
        return SessionSnapshot(codec.info_from_hash(meta), messages, summary, first)

    async def _update_info_impl(self, session_id: str, fields: dict[str, object]) -> SessionInfo:
        if "id" in fields and fields["id"] != session_id:
            raise ValueError("a session's id cannot change")
        # Validated against the model (unknown fields and wrong types fail here, before Redis).
        checked = SessionInfo.model_validate({"id": session_id, **fields})
        dumped = checked.model_dump(mode="json", include=set(fields) - {"id"})
        mapping = codec.info_to_mapping(dumped)
        args: list[str] = [str(self.ttl_ms)]
        for name, value in mapping.items():
            args += [name, value]
        k = self.keys(session_id)
        keys = [k["meta"], k["msgs"], k["turns"]]
        raw = await self._sent(self._run(self._update_script, keys, args))
        if not raw:
            raise SessionNotFoundError(f"no session {session_id!r} (it may have expired)")
        pairs = dict(zip(raw[::2], raw[1::2]))
        return codec.info_from_hash(pairs)

    async def _append_impl(self, session_id: str, message: Message) -> AppendResult:
        k = self.keys(session_id)
        keys = [k["meta"], k["msgs"], k["turns"]]
        args = [codec.dump(message), codec.once_key(message), str(self.ttl_ms),
                *codec.limit_args(message, self.limits)]  # fmt: skip
        reply = await self._sent(self._run(self._append_script, keys, args))
        status = int(reply[0])
        if status in (codec.TOO_MANY_MESSAGES, codec.TOO_LARGE):
            raise codec.refusal(status, message, args[0], self.limits)
        if status < 0:
            raise SessionNotFoundError(f"no session {session_id!r} (it may have expired)")
        return codec.append_result(message, status, reply[1] if status == 0 else "")

    async def _begin_turn_impl(
        self, session_id: str, token: str, message: Message | None, last: int | None, known: int,
        event: Event | None = None,
    ) -> TurnStart | None:  # fmt: skip
        return await self.turns.begin(self, session_id, token, message, last, known, event)

    async def _end_turn_impl(
        self, session_id: str, token: str, message: Message | None, event: Event | None = None
    ) -> AppendResult | None:
        return await self.turns.end(self, session_id, token, message, event)

    async def _renew_turn_impl(
        self, session_id: str, token: str, partial: PartialReply | None
    ) -> bool:
        return await self.turns.renew(self, session_id, token, partial)

    async def _claim_summary_impl(self, session_id: str, token: str, lease_ms: int) -> bool:
        return await redis_summaries.claim(self, session_id, token, lease_ms)

    async def _finish_summary_impl(
        self, session_id: str, token: str, summary: ConversationSummary | None, created_at: int
    ) -> bool:
        return await redis_summaries.finish(self, session_id, token, summary, created_at)

    # -- blobs and cache: raw bytes, through a client that does not decode replies ----------------

    @property
    def _bytes_client(self) -> aioredis.Redis:
        root = self._root  # one binary pool for all the tenant views
        if root._binary is None:
            root._binary = _binary_client(root.client)
        return root._binary

    def _tenant_key(self, kind: str, name: str) -> str:
        return f"{self.key_prefix}:{self.tenant}:{kind}:{name}"

    def _bytes_call(self, *command: Any) -> Awaitable[Any]:
        """One single-key command (it routes by its key on a cluster), replies not decoded."""
        lines = self._root._lines
        if lines is not None:
            return self._sent(lines.bytes_line.call(*command))
        return self._sent(self._bytes_client.execute_command(*command))

    async def _put_blob_impl(self, sha256: str, data: bytes) -> None:
        key = self._tenant_key("blob", sha256)
        await self._bytes_call("SET", key, data, "PX", self.ttl_ms)
        codec.blob_sizes.wrote(sha256, len(data))  # the message bringing it counts its bytes

    async def _get_blob_impl(self, sha256: str) -> bytes | None:
        # GETEX refreshes the time to live: an image referenced by a live session stays.
        key = self._tenant_key("blob", sha256)
        return await self._bytes_call("GETEX", key, "PX", self.ttl_ms)

    async def _cache_get_impl(self, key: str) -> bytes | None:
        return await self._bytes_call("GET", self._tenant_key("cache", key))

    async def _cache_set_impl(self, key: str, value: bytes, ttl_s: int) -> None:
        full = self._tenant_key("cache", key)
        await self._bytes_call("SET", full, value, "EX", max(int(ttl_s), 1))

    async def _ping_impl(self) -> bool:
        return await self._sent(self.pipe.call("PING")) in ("PONG", True)  # a cluster: True

    def forget_session(self, session_id: str) -> None:
        self._keys.forget(session_id)
        codec.session_meta.forget(session_id)

    async def aclose(self) -> None:
        if self._root is not self:  # a tenant view: the root owns the connections
            return
        await self.turns.owner.aclose()
        if self._lines is not None:
            await self._lines.aclose()
            return
        if self._binary is not None:
            await self._binary.aclose()
            await self._binary.connection_pool.disconnect()
        await self.pipe.aclose()
        await self.client.aclose()


def build(settings: Any, *, redis_url: str) -> RedisSessionStore:
    """The store ``assistant.registry`` builds from ``settings.memory``, with the sessions'
    limits from ``settings.limits``."""
    memory = settings.memory
    store = RedisSessionStore.from_url(
        redis_url,
        key_prefix=memory.key_prefix,
        tenant=memory.tenant,
        ttl_s=memory.ttl_s,
        lock_ttl_ms=memory.lock_ttl_ms,
        owner_heartbeat_ms=memory.owner_heartbeat_ms,
        owner_ttl_ms=memory.owner_ttl_ms,
        retry_s=memory.retry_s,
        wait_replicas=memory.wait_replicas,
        wait_timeout_ms=memory.wait_timeout_ms,
    )
    store.limits = SessionLimits.from_settings(settings.limits)
    return store


__all__ = ["RedisSessionStore", "build"]
