"""One Redis connection shared by every request of the process, pipelined automatically.

A text turn makes two short requests (``EVALSHA`` of the begin and end scripts). Through a
connection pool each one takes a connection, writes, waits for its reply and gives the connection
back; a thousand sessions then cost a thousand small writes and reads on both sides. Here every
request of a loop iteration is written in **one** write on one connection, and replies, which Redis
sends in order, are handed to their waiters first in, first out as they arrive (parsed by hiredis,
redis-py's own optional parser). Nothing waits for a free connection, and Redis reads many
commands per read.

Only what fits that shape goes through here: short commands, scripts and MULTI/EXEC blocks on the
session keys. Big values (image blobs) stay on redis-py's pool, so they never hold up the line.

Errors are redis-py's own classes (``ResponseError``, ``NoScriptError``, ``ConnectionError``,
``TimeoutError``), so callers map them as they would redis-py's. A lost connection fails every
request in flight; the next request connects again, and a request that failed on a lost
connection is sent once more on the new one (as redis-py's default retry does): the session
store's scripts are idempotent, so a request that did run before the loss is not applied twice.
A request with no reply after ``timeout_s`` closes the connection (replies would no longer match
their waiters) and fails with ``TimeoutError``.

Behind Sentinel (``redis_lines``) the pipe follows the primary: ``locate`` asks the Sentinels
where it is at each connect, and a READONLY reply (a former primary, now a replica) drops the
connection. With ``wait`` (a ``redis_lines.ReplicaWait``), a write batch ends in one ``WAIT``,
and its writes are answered only once that returns: a group commit, one wait for all the
sessions' writes of a loop iteration.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

#: Commands that store nothing (PEXPIRE only refreshes a time to live): no WAIT for them.
READS = frozenset({"PING", "GET", "GETEX", "HGETALL", "LRANGE", "LLEN", "EXISTS", "PEXPIRE"})


def is_write(commands: list[tuple[Any, ...]]) -> bool:
    return any(str(command[0]).upper() not in READS for command in commands)


class _Protocol(asyncio.Protocol):
    """One connection: its write buffer, its waiters in order, and hiredis parsing the replies."""

    def __init__(self, pipe: RedisPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.buffer: list[bytes] = []
        #: The WAIT reply the writes in ``buffer`` are answered after (``RedisPipe.wait`` only).
        self.batch: asyncio.Future[Any] | None = None
        #: When a reply last arrived, or the line last went from idle to busy (the watchdog's clock).
        self.progress_at = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self.progress_at = time.monotonic()
        pending = self.pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("redis sent a reply no request was waiting for"))
                return
            future = pending.popleft()
            if future.done():  # its waiter gave up; the reply is dropped in order
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to redis lost{f': {exc}' if exc else ''}"))

    def queue(
        self, packed: list[bytes], loop: asyncio.AbstractEventLoop, write: bool = False
    ) -> list[asyncio.Future[Any]]:
        """Waiters for ``packed``, which goes out with the next write (one per loop iteration);
        a ``write`` with a replica wait also gets the batch's WAIT reply, last."""
        if not self.pending:
            self.progress_at = time.monotonic()
        futures = [loop.create_future() for _ in packed]
        self.pending.extend(futures)
        if not self.buffer:
            loop.call_soon(self.flush)
        self.buffer.extend(packed)
        if write and self.pipe.wait is not None:
            if self.batch is None:
                self.batch = loop.create_future()
            futures.append(self.batch)
        return futures

    def flush(self) -> None:
        buffer, self.buffer = self.buffer, []
        batch, self.batch = self.batch, None
        if self.transport is None or self.transport.is_closing():
            if batch is not None:
                self.pending.append(batch)
            self.fail(RedisConnectionError("connection to redis closed"))
            return
        if batch is not None:
            wait = self.pipe.wait
            if wait.due():
                buffer.append(hiredis.pack_command(wait.command()))
                self.pending.append(batch)
                batch.add_done_callback(lambda done: _check_wait(wait, done))
            else:
                batch.set_result(None)
        self.transport.write(b"".join(buffer))
        self.pipe.writes += 1

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every request still waiting on it."""
        if self.pipe._protocol is self:
            self.pipe._protocol = None
        self.buffer = []
        if self.batch is not None:  # queued, not written: its writes fail with the rest
            self.pending.append(self.batch)
            self.batch = None
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(RuntimeError):  # its event loop may be closed already
                self.transport.close()
        while self.pending:
            future = self.pending.popleft()
            if not future.done() and not future.get_loop().is_closed():
                future.set_exception(error)
                future.exception()  # a waiter that went away leaves no "never retrieved" log


def _check_wait(wait: Any, batch: asyncio.Future[Any]) -> None:
    """Once per batch: how many replicas acknowledged its writes."""
    if not batch.cancelled() and batch.exception() is None:
        wait.check(batch.result())


def _error(reply: ResponseError) -> ResponseError:
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return NoScriptError(text)
    return ReadOnlyError(text) if text.startswith("READONLY") else reply


class RedisPipe:
    """``await pipe.call("GET", key)``, ``await pipe.evalsha(sha, script, keys, args)``,
    ``await pipe.transaction([...])``: one shared connection, made on first use."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool | ssl_module.SSLContext = False,
        connect_timeout_s: float | None = 10.0,
        timeout_s: float | None = 30.0,
        locate: Callable[[], Awaitable[tuple[str, int]]] | None = None,
        wait: Any = None,
    ) -> None:
        self.address = {"host": host, "port": port, "path": path}
        #: Where the server is now (a Sentinel's primary), asked at each connect; else ``address``.
        self.locate = locate
        #: A ``redis_lines.ReplicaWait``: a WAIT ends each batch of writes (None: no wait).
        self.wait = wait
        self.db, self.username, self.password = int(db or 0), username, password
        self.ssl = ssl
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        #: Writes to the socket (each may carry many requests); for tests and the benchmark.
        self.writes = 0
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisPipe:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS with the system's
        default trust), ``unix:///path/to/socket[?db=N]``."""
        return cls.from_kwargs(parse_url(url), **options)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], **options: Any) -> RedisPipe:
        """From redis-py connection keywords (a pool's ``connection_kwargs``), so the pipe reaches
        the same server as the pool it sits next to."""
        connection_class = kwargs.get("connection_class")
        tls = kwargs.get("ssl") or getattr(connection_class, "__name__", "") == "SSLConnection"
        for name, option in (("socket_connect_timeout", "connect_timeout_s"),
                             ("socket_timeout", "timeout_s")):  # fmt: skip
            if kwargs.get(name) is not None:
                options.setdefault(option, kwargs[name])
        return cls(
            host=kwargs.get("host", "localhost"), port=int(kwargs.get("port") or 6379),
            path=kwargs.get("path"), db=kwargs.get("db") or 0, username=kwargs.get("username"),
            password=kwargs.get("password"), ssl=bool(tls), **options,
        )  # fmt: skip

    # -- requests ----------------------------------------------------------------------------------

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (redis-py's errors on failure)."""
        write = self.wait is not None and is_write([args])
        try:
            return await self._send([hiredis.pack_command(args)], write)
        except RedisConnectionError:  # sent on a connection that went away: once more
            return await self._send([hiredis.pack_command(args)], write)

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[str]) -> Any:
        """Run a Lua script by its digest, loading it first when Redis does not know it."""
        packed = [hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))]
        try:
            try:
                return await self._send(packed, True)
            except RedisConnectionError:  # sent on a connection that went away: once more
                return await self._send(packed, True)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", script)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """MULTI, the commands, EXEC in one write; returns EXEC's replies."""
        packed = [hiredis.pack_command(("MULTI",))]
        packed += [hiredis.pack_command(command) for command in commands]
        packed.append(hiredis.pack_command(("EXEC",)))
        write = self.wait is not None and is_write(commands)
        try:
            return await self._send(packed, write)
        except RedisConnectionError:
            return await self._send(packed, write)

    async def _send(self, packed: list[bytes], write: bool = False) -> Any:
        """The last reply of ``packed``; the others (MULTI's OK and QUEUED) are only checked.
        A ``write`` under a replica wait is answered once its batch's WAIT is."""
        protocol = self._protocol
        if protocol is None or self._loop is not asyncio.get_running_loop():
            protocol = await self._connected()
        futures = protocol.queue(packed, self._loop, write)  # type: ignore[arg-type]
        batch = futures.pop() if len(futures) > len(packed) else None
        try:
            if len(futures) == 1:
                reply = await futures[0]
            else:
                replies = await asyncio.gather(*futures, return_exceptions=True)
                errors = [reply for reply in replies if isinstance(reply, Exception)]
                if errors:
                    raise errors[-1]
                reply = replies[-1]
        except ReadOnlyError as exc:
            raise self._demoted(protocol, exc) from exc
        if batch is not None:  # shared by the batch's writes: one caller's cancel is not theirs
            await asyncio.shield(batch)
        return reply

    def _demoted(self, protocol: _Protocol, exc: ReadOnlyError) -> Exception:
        """A READONLY reply: behind Sentinel, the primary it reached is a replica now; drop the
        connection, so that the next request asks the Sentinels again."""
        if self.locate is None:
            return exc
        protocol.fail(RedisConnectionError(f"the primary became a replica: {exc}"))
        return RedisConnectionError(f"the primary became a replica: {exc}")

    # -- the connection ----------------------------------------------------------------------------

    async def _connected(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._protocol is not None and self._loop is loop:
            return self._protocol
        if self._loop is not loop:  # a new event loop (tests, a restarted app): start over
            self._drop()
            self._loop, self._lock = loop, asyncio.Lock()
        async with self._lock:
            if self._protocol is None:
                try:
                    self._protocol = await self._open(loop)
                except Exception as exc:
                    raise _connect_error(exc, self.address) from exc
        return self._protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        def factory() -> _Protocol:
            return _Protocol(self)

        async def connect() -> _Protocol:
            if self.locate is not None:
                self.address["host"], self.address["port"] = await self.locate()
            if self.address["path"]:
                _, protocol = await loop.create_unix_connection(factory, self.address["path"])
            else:
                context = self.ssl
                if context is True:
                    context = ssl_module.create_default_context()
                _, protocol = await loop.create_connection(
                    factory, self.address["host"], self.address["port"], ssl=context or None
                )
            return protocol

        async with asyncio.timeout(self.connect_timeout_s):
            protocol = await connect()
            hello: list[tuple[Any, ...]] = []
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                hello.append(("AUTH", *auth))
            if self.db:
                hello.append(("SELECT", self.db))
            if hello:  # before any request: nothing else is queued on it yet
                packed = [hiredis.pack_command(command) for command in hello]
                for future in protocol.queue(packed, loop):
                    await future
        self._start_watchdog(loop)
        return protocol

    def _start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Once a second: requests waiting with no reply for ``timeout_s`` close the connection."""
        if self.timeout_s is None or self._watchdog is not None:
            return
        limit = self.timeout_s

        def check() -> None:
            self._watchdog = loop.call_later(1.0, check)
            protocol = self._protocol
            stalled = protocol is not None and protocol.pending
            if stalled and time.monotonic() - protocol.progress_at > limit:  # type: ignore[union-attr]
                protocol.fail(RedisTimeoutError(f"no reply from redis in {limit} s"))

        self._watchdog = loop.call_later(1.0, check)

    def _drop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("connection closed"))
        self._protocol = None

    async def aclose(self) -> None:
        self._drop()
        await asyncio.sleep(0)  # let the transport close


def _connect_error(exc: BaseException, address: dict[str, Any]) -> Exception:
    where = address["path"] or f"{address['host']}:{address['port']}"
    if isinstance(exc, (RedisConnectionError, ResponseError)):
        return exc
    if isinstance(exc, TimeoutError):
        return RedisTimeoutError(f"connecting to redis at {where} timed out")
    return RedisConnectionError(f"cannot connect to redis at {where}: {exc}")


__all__ = ["RedisPipe"]
