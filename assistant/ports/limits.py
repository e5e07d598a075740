"""The limiter port: counters shared by every worker (rates per minute, and concurrent holders
with a lease, so a dead worker's holders lapse by themselves)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from assistant.ports.store_calls import store_call

_T = TypeVar("_T")


class Limiter(abc.ABC):
    name: str = "limiter"
    #: The client library's own exceptions that mean the backend failed (see ``store_call``).
    backend_errors: tuple[type[Exception], ...] = ()

    async def hit(self, name: str, key: str, per_minute: int, cost: int = 1) -> float | None:
        """Count ``cost`` against ``per_minute`` (a sliding minute); None when within it, else
        the seconds until the limit lets a request through again (nothing is counted then)."""
        return await self._call(self._hit_impl(name, key, per_minute, cost))

    async def spend(self, name: str, key: str, per_minute: int, cost: int) -> None:
        """Count ``cost``, or as much of it as ``per_minute`` has left (what was used already,
        such as a reply's tokens, is counted even when it passes the limit)."""
        if await self.hit(name, key, per_minute, cost) is not None:
            left = await self._call(self._remaining_impl(name, key, per_minute))
            if left > 0:
                await self.hit(name, key, per_minute, left)

    async def acquire(self, name: str, key: str, holder: str, limit: int, lease_s: float) -> bool:
        """``holder`` takes one of ``limit`` places for ``lease_s`` (renew before it lapses);
        False when all are taken."""
        return await self._call(self._acquire_impl(name, key, holder, limit, lease_s))

    async def renew(self, name: str, key: str, holders: Sequence[str], lease_s: float) -> None:
        await self._call(self._renew_impl(name, key, holders, lease_s))

    async def release(self, name: str, key: str, holder: str) -> None:
        await self._call(self._release_impl(name, key, holder))

    async def aclose(self) -> None:  # noqa: B027
        """Release connections."""

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        return await store_call(self.name, "limits store", awaitable, self.backend_errors)

    @abc.abstractmethod
    async def _hit_impl(self, name: str, key: str, per_minute: int, cost: int) -> float | None: ...

    @abc.abstractmethod
    async def _remaining_impl(self, name: str, key: str, per_minute: int) -> int: ...

    @abc.abstractmethod
    async def _acquire_impl(
        self, name: str, key: str, holder: str, limit: int, lease_s: float
    ) -> bool: ...

    @abc.abstractmethod
    async def _renew_impl(
        self, name: str, key: str, holders: Sequence[str], lease_s: float
    ) -> None: ...

    @abc.abstractmethod
    async def _release_impl(self, name: str, key: str, holder: str) -> None: ...
