"""Limits in process memory (the ``limits`` library's memory storage for rates)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import limits
import limits.aio.storage
import limits.aio.strategies

from assistant.ports.limits import Limiter


class MemoryLimiter(Limiter):
    name = "memory_limits"

    def __init__(self) -> None:
        self._rates = limits.aio.strategies.SlidingWindowCounterRateLimiter(
            limits.aio.storage.MemoryStorage()
        )
        self.holders: dict[tuple[str, str], dict[str, float]] = {}

    async def _hit_impl(self, name: str, key: str, per_minute: int, cost: int) -> float | None:
        item = limits.RateLimitItemPerMinute(per_minute)
        if await self._rates.hit(item, name, key, cost=cost):
            return None
        stats = await self._rates.get_window_stats(item, name, key)
        return max(stats.reset_time - time.time(), 0.1)

    async def _remaining_impl(self, name: str, key: str, per_minute: int) -> int:
        stats = await self._rates.get_window_stats(limits.RateLimitItemPerMinute(per_minute), name, key)
        return int(stats.remaining)

    async def _acquire_impl(
        self, name: str, key: str, holder: str, limit: int, lease_s: float
    ) -> bool:
        now = time.monotonic()
        held = self.holders.setdefault((name, key), {})
        for other in [h for h, until in held.items() if until <= now]:
            del held[other]
        if holder not in held and len(held) >= limit:
            return False
        held[holder] = now + lease_s
        return True

    async def _renew_impl(
        self, name: str, key: str, holders: Sequence[str], lease_s: float
    ) -> None:
        held = self.holders.get((name, key), {})
        for holder in holders:
            if holder in held:
                held[holder] = time.monotonic() + lease_s

    async def _release_impl(self, name: str, key: str, holder: str) -> None:
        self.holders.get((name, key), {}).pop(holder, None)
