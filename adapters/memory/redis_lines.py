"""The session store's line to a Sentinel-watched primary or a Redis Cluster, through redis-py.

A line is what ``RedisSessionStore`` sends its requests through: ``call(*command)``,
``evalsha(sha, script, keys, args)`` and ``transaction(commands)``, replies as Redis sends them
(a flat list for HGETALL). On one node that is ``redis_pipe.RedisPipe``; here:

- Sentinel, session keys: ``RetriedLine`` over a ``RedisPipe`` that asks the Sentinels (redis-py's
  ``Sentinel``) where the primary is whenever it connects, and ends each batch of writes with
  ``WAIT replicas timeout`` (``ReplicaWait``): a write the client hears about is on a replica
  too and survives a failover. One WAIT per batch, for all the sessions' writes in it.
- Sentinel, blobs: ``PooledLine``: each request takes a connection of redis-py's Sentinel pool,
  writes its commands (and the WAIT) in one write and reads their replies.
- ``ClusterLine`` (Cluster): redis-py's ``RedisCluster``, which sends each request to the node of
  its keys' slot and follows MOVED / ASK. A session's keys share a hash tag, so its scripts and
  MULTI blocks go to one node; blobs and the cache are single-key commands.

Both retry a request that failed on a lost connection (or a read-only former primary, a cluster
that is re-forming) until ``retry_s`` has passed, with a short back-off, then raise redis-py's
error (the store makes it ``store_unavailable``). The store's requests may run twice: its scripts
are idempotent on turn and message ids, the lease on its token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    ClusterError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.memory.redis_pipe import RedisPipe, is_write
from adapters.memory.redis_topology import RedisTopology
from assistant.errors import ConfigurationError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Failures a request is sent again after (redis-py's MasterNotFoundError is a ConnectionError;
#: a demoted primary's READONLY reply becomes one in its Sentinel connection).
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterError, TryAgainError,
             SlotNotCoveredError)  # fmt: skip


async def retrying(attempt: Callable[[], Awaitable[_T]], *, retry_s: float, what: str) -> _T:
    """``attempt()``, again after a ``RETRYABLE`` failure (after 50 ms, doubling up to 0.25 s)
    until ``retry_s`` has passed; then its last error."""
    started = time.monotonic()
    deadline = started + retry_s
    pause, failures = 0.05, 0
    while True:
        try:
            result = await attempt()
        except RETRYABLE as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("redis %s: giving up after %d retries", what, failures)
                raise
            failures += 1
            if failures == 1:
                log.warning("redis %s: %s: %s; retrying for up to %.1f s",
                            what, type(exc).__name__, exc, left)  # fmt: skip
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.25)
            continue
        except Exception:  # an answer, if an error one (a script the new primary lacks)
            if failures:
                log.warning("redis %s: reached again after %d retries in %.2f s",
                            what, failures, time.monotonic() - started)  # fmt: skip
            raise
        if failures:
            log.warning("redis %s: reached again after %d retries in %.2f s",
                        what, failures, time.monotonic() - started)  # fmt: skip
        return result


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # no "exception was never retrieved" for work its caller left


async def shielded(awaitable: Awaitable[_T]) -> _T:
    """``await awaitable`` in a task of its own, so a cancel reaches the caller at once (the work
    finishes or fails by itself). redis-py sends with ``asyncio.wait_for``, which on Python 3.11
    returns the result instead of raising a cancel that comes as the send completes: the caller
    then runs on as if never cancelled (a lease renewer that never stops)."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_retrieve)
        raise


class ReplicaWait:
    """``WAIT replicas timeout_ms`` after each write. When fewer replicas acknowledge in time the
    write still stands (it is on the primary), a warning is logged, and writes do not wait for
    the next ``pause_s``: a deployment whose replica is down pays the timeout once a second,
    not on every write."""

    def __init__(self, replicas: int, timeout_ms: int, *, pause_s: float = 1.0) -> None:
        self.replicas, self.timeout_ms, self.pause_s = int(replicas), int(timeout_ms), pause_s
        #: Writes that fewer replicas than asked acknowledged in time.
        self.shortfalls = 0
        self._pause_until = 0.0

    def due(self) -> bool:
        return self.replicas > 0 and time.monotonic() >= self._pause_until

    def command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.timeout_ms)

    def check(self, acknowledged: Any) -> None:
        if int(acknowledged) >= self.replicas:
            return
        self.shortfalls += 1
        self._pause_until = time.monotonic() + self.pause_s
        log.warning("redis: a write reached %s of %d replicas in %d ms (not waiting for %.0f s)",
                    acknowledged, self.replicas, self.timeout_ms, self.pause_s)  # fmt: skip


class _Line:
    """What both lines share: the request methods, on top of ``_request``."""

    retry_s: float
    #: Requests sent (each one write); for tests, like ``RedisPipe.writes``.
    writes = 0

    async def _request(self, commands: list[tuple[Any, ...]], *, transaction: bool) -> Any:
        raise NotImplementedError

    async def call(self, *args: Any) -> Any:
        return await self._request([args], transaction=False)

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[str]) -> Any:
        try:
            return await self._request([("EVALSHA", sha, len(keys), *keys, *args)],
                                       transaction=False)  # fmt: skip
        except NoScriptError:  # a node that has not seen it (a new primary): EVAL caches it
            return await self._request([("EVAL", script, len(keys), *keys, *args)],
                                       transaction=False)  # fmt: skip

    async def transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        return await self._request(list(commands), transaction=True)


class RetriedLine(_Line):
    """A ``RedisPipe`` that follows a Sentinel primary, its requests retried for ``retry_s``."""

    def __init__(self, pipe: RedisPipe, *, retry_s: float) -> None:
        self.pipe, self.retry_s = pipe, retry_s

    @property
    def writes(self) -> int:  # type: ignore[override]
        return self.pipe.writes

    async def call(self, *args: Any) -> Any:
        return await retrying(lambda: self.pipe.call(*args), retry_s=self.retry_s, what=args[0])

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[str]) -> Any:
        return await retrying(lambda: self.pipe.evalsha(sha, script, keys, args),
                              retry_s=self.retry_s, what="EVALSHA")  # fmt: skip

    async def transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        return await retrying(lambda: self.pipe.transaction(commands), retry_s=self.retry_s,
                              what="EXEC")  # fmt: skip

    async def aclose(self) -> None:
        await self.pipe.aclose()


class PooledLine(_Line):
    """Requests on connections of a redis-py pool (a Sentinel master's), optionally WAITed."""

    def __init__(self, pool: Any, *, retry_s: float, wait: ReplicaWait | None = None) -> None:
        self.pool, self.retry_s, self.wait = pool, retry_s, wait

    async def _request(self, commands: list[tuple[Any, ...]], *, transaction: bool) -> Any:
        if transaction:
            commands = [("MULTI",), *commands, ("EXEC",)]
        name = str(commands[-1 if transaction else 0][0])
        return await retrying(lambda: shielded(self._once(commands)), retry_s=self.retry_s,
                              what=name)  # fmt: skip

    async def _once(self, commands: list[tuple[Any, ...]]) -> Any:
        wait = self.wait
        if wait is not None and not (wait.due() and is_write(commands)):
            wait = None
        if wait is not None:
            commands = [*commands, wait.command()]
        connection = await self.pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands), False)
            self.writes += 1
            replies = [await connection.read_response() for _ in commands]
        except BaseException:
            # replies may be left unread (an error reply raises at once): never reuse it
            await connection.disconnect()
            raise
        finally:
            await self.pool.release(connection)
        if wait is not None:
            wait.check(replies.pop())
        return _flat(replies[-1])

class ClusterLine(_Line):
    """Requests through a ``RedisCluster`` client (routing, redirects, topology refreshes)."""

    def __init__(self, client: Any, *, retry_s: float) -> None:
        self.client, self.retry_s = client, retry_s

    async def _request(self, commands: list[tuple[Any, ...]], *, transaction: bool) -> Any:
        async def once() -> Any:
            self.writes += 1
            try:
                if not transaction:
                    return _flat(await self.client.execute_command(*commands[0]))
                async with self.client.pipeline(transaction=True) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    return [_flat(reply) for reply in await pipe.execute()]
            except RedisClusterException as exc:  # not a RedisError: keys on two slots, ...
                if isinstance(exc, SlotNotCoveredError):  # the cluster is re-forming: retried
                    raise
                raise RedisError(f"{type(exc).__name__}: {exc}") from exc

        name = str(commands[0][0])
        return await retrying(lambda: shielded(once()), retry_s=self.retry_s, what=name)


def _flat(reply: Any) -> Any:
    """redis-py's parsed replies back to Redis's shape (HGETALL: a flat field, value list)."""
    if isinstance(reply, dict):
        return [item for pair in reply.items() for item in pair]
    return reply


# -- opening them ----------------------------------------------------------------------------------


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel master's pool that, with all its connections busy, waits for one (up to its
    ``timeout``) as ``BlockingConnectionPool`` does, instead of failing at once."""


@dataclass
class Lines:
    """A topology's clients: ``client`` decodes replies (``store.client``, for code that wants
    redis-py's API on the same deployment); ``line`` and ``bytes_line`` carry the store's session
    keys and its blobs (replies not decoded)."""

    client: Any
    line: _Line
    bytes_line: _Line
    wait: ReplicaWait | None = None
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self._closers:
            try:
                await close()
            except Exception as exc:  # closing the rest matters more
                log.warning("redis: closing: %s: %s", type(exc).__name__, exc)


def open_lines(
    topology: RedisTopology,
    *,
    retry_s: float = 10.0,
    wait_replicas: int | None = None,
    wait_timeout_ms: int = 100,
    max_connections: int = 64,
    pool_timeout_s: float = 10.0,
    socket_timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
) -> Lines | None:
    """Clients and lines for a ``sentinel`` or ``cluster`` topology (nothing connects yet); None
    for a single node, which the store's pipe and pool serve.

    A request failing on a lost connection is sent again until ``retry_s`` has passed. On
    Sentinel each write waits for ``wait_replicas`` replicas to have it (None: 1), at most
    ``wait_timeout_ms`` (``ReplicaWait``); elsewhere it must be 0 or None."""
    if wait_replicas and topology.kind != "sentinel":
        raise ConfigurationError(
            "memory.wait_replicas is for redis+sentinel:// deployments (on one node every write "
            "shares one pipelined connection, which WAIT would hold up)"
        )
    if topology.kind == "single":
        return None
    wait_replicas = 1 if wait_replicas is None else wait_replicas
    node = {"username": topology.username, "password": topology.password,
            "protocol": 2,  # RESP2, as the pipe speaks: the store reads flat replies
            "socket_timeout": max(socket_timeout_s, 2 * wait_timeout_ms / 1000),
            "socket_connect_timeout": connect_timeout_s,
            # redis-py's own retry (for ``client``'s commands, and each line's connect): short;
            # the lines retry whole requests for ``retry_s``
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)}  # fmt: skip
    if topology.kind == "cluster":
        return _cluster(topology, node, retry_s=retry_s, max_connections=max_connections)
    wait = ReplicaWait(wait_replicas, wait_timeout_ms) if wait_replicas > 0 else None
    return _sentinel(topology, node, wait, retry_s=retry_s, max_connections=max_connections,
                     pool_timeout_s=pool_timeout_s)  # fmt: skip


def _sentinel(
    topology: RedisTopology,
    node: dict[str, Any],
    wait: ReplicaWait | None,
    *,
    retry_s: float,
    max_connections: int,
    pool_timeout_s: float,
) -> Lines:
    # one try per Sentinel and question (redis-py's default retries a dead one for seconds); the
    # request is what is retried, for ``retry_s``
    watchers = {"socket_timeout": 1.0, "socket_connect_timeout": node["socket_connect_timeout"],
                "retry": Retry(NoBackoff(), 0)}  # fmt: skip
    if topology.sentinel_password is not None:
        watchers.update(username=topology.sentinel_username, password=topology.sentinel_password)
    if topology.tls:
        watchers["ssl"] = True
    sentinel = Sentinel(list(topology.nodes), sentinel_kwargs=watchers)

    def pool(decode: bool) -> BlockingSentinelPool:
        return BlockingSentinelPool(
            topology.service_name, sentinel, is_master=True, db=topology.db, ssl=topology.tls,
            decode_responses=decode, max_connections=max_connections, timeout=pool_timeout_s,
            **node,
        )  # fmt: skip

    text_pool, bytes_pool = pool(True), pool(False)
    pipe = RedisPipe(
        db=topology.db, username=topology.username, password=topology.password, ssl=topology.tls,
        connect_timeout_s=node["socket_connect_timeout"], timeout_s=node["socket_timeout"],
        locate=lambda: shielded(sentinel.discover_master(topology.service_name)), wait=wait,
    )  # fmt: skip
    line = RetriedLine(pipe, retry_s=retry_s)
    client = aioredis.Redis.from_pool(text_pool)  # store.client: redis-py's API, same primary
    return Lines(
        client, line, PooledLine(bytes_pool, retry_s=retry_s, wait=wait), wait,
        [line.aclose, client.aclose, bytes_pool.disconnect, sentinel.aclose],
    )  # fmt: skip


def _cluster(
    topology: RedisTopology, node: dict[str, Any], *, retry_s: float, max_connections: int
) -> Lines:
    def cluster(decode: bool) -> RedisCluster:
        # per node, and not blocking: a request finding none free fails and is retried
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            decode_responses=decode, ssl=topology.tls, max_connections=max_connections * 4,
            **node,
        )  # fmt: skip

    client, binary = cluster(True), cluster(False)
    return Lines(
        client, ClusterLine(client, retry_s=retry_s), ClusterLine(binary, retry_s=retry_s),
        None, [client.aclose, binary.aclose],
    )  # fmt: skip


__all__ = [
    "ClusterLine", "Lines", "PooledLine", "ReplicaWait", "RETRYABLE", "RetriedLine", "open_lines",
    "retrying", "shielded",
]
