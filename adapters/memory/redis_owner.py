"""Whose a writer lease is, and whether that process still lives: the owner heartbeat.

A lease's value is ``<instance> <token>``: the writing process's random instance id, then the
connection's token. Each process keeps ``{prefix}:owner:<instance>`` alive (``SET PX owner_ttl_ms``
every ``owner_heartbeat_ms``, written before its first lease is taken, deleted when the store
closes). How the begin-turn script uses it: ``redis_turns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

log = logging.getLogger(__name__)


def lock_value(instance: str, token: str) -> str:
    return f"{instance} {token}"


def owner_of(holder: str) -> str | None:
    """The instance in a lock value (None for a value without one: a lease nobody can take over)."""
    instance, space, _ = holder.partition(" ")
    return instance if space else None


class OwnerHeartbeat:
    """This process's ``{prefix}:owner:<instance>`` key, kept alive while the store is used."""

    def __init__(self, pipe: Any, key_prefix: str, *, interval_ms: int, ttl_ms: int) -> None:
        self.pipe = pipe
        self.key_prefix = key_prefix
        self.instance = secrets.token_hex(8)
        self.key = self.owner_key(self.instance)
        self.interval_s = interval_ms / 1000
        self.ttl_ms = int(ttl_ms)
        #: Heartbeats written (not counted in the store's ``round_trips``: they are not a turn's).
        self.beats = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.AbstractEventLoop | None = None  # beating on this loop

    def owner_key(self, instance: str) -> str:
        return f"{self.key_prefix}:owner:{instance}"

    async def ensure(self) -> None:
        """Alive before a lease is taken: the first call (per event loop) writes the key and
        starts the beat; later calls return at once. A failed start is tried again next time."""
        loop = asyncio.get_running_loop()
        if self._ready is loop:
            return
        started = self._started
        if started is None or self._loop is not loop or started.done():
            self._stop()
            self._loop = loop
            started = self._started = loop.create_task(self._start(loop))
        await asyncio.shield(started)

    async def holder_gone(self, holder: str) -> bool:
        """The process holding a lease (its lock value) is gone: its heartbeat expired."""
        instance = owner_of(holder)
        if instance is None or instance == self.instance:
            return False
        return int(await self.pipe.call("EXISTS", self.owner_key(instance))) == 0

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        await self._beat()
        self._task = loop.create_task(self._beat_forever())
        self._ready = loop

    async def _beat(self) -> None:
        await self.pipe.call("SET", self.key, "1", "PX", self.ttl_ms)
        self.beats += 1

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._beat()
            except Exception as exc:  # keep beating: Redis may come back before the key expires
                log.warning("owner heartbeat %s failed: %s", self.key, exc)

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._started = self._ready = None

    def stop_beating(self) -> None:
        """Stop without deleting the key, as a killed process would (tests)."""
        self._stop()

    async def aclose(self) -> None:
        """Stop beating and delete the key: this process's leases are free at once."""
        running = self._task is not None and self._loop is asyncio.get_running_loop()
        self._stop()
        if running:
            with contextlib.suppress(Exception):
                await self.pipe.call("DEL", self.key)


__all__ = ["OwnerHeartbeat", "lock_value", "owner_of"]
