"""Limits in Redis, so they hold across workers and machines.

Rates: the ``limits`` library's sliding-window counter (two counters per key and minute, weighted),
on its redis-py storage. Concurrent holders (connections, generations): one sorted set per key,
member = holder, score = when its lease lapses; taking a place drops the lapsed ones first, in one
Lua script, so the places of a worker that died come back after its lease.

    {prefix}:limit:{name}:{key}    zset   holder -> lease deadline (ms)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

try:
    import limits
    import limits.aio.strategies
    import limits.storage
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the redis limiter needs limits and redis-py ({exc})") from exc

from assistant.ports.limits import Limiter

_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
return 1
"""


class RedisLimiter(Limiter):
    name = "redis_limits"
    backend_errors = (RedisError,)

    def __init__(
        self, client: Any, storage_uri: str, *, key_prefix: str = "assistant", **options: Any
    ) -> None:
        self.client = client  # redis-py asyncio client (shared with the session store, not closed)
        self.prefix = f"{key_prefix}:limit"
        storage = limits.storage.storage_from_string(
            storage_uri, implementation="redispy", key_prefix=f"{key_prefix}:rate", **options
        )
        self._rates = limits.aio.strategies.SlidingWindowCounterRateLimiter(storage)
        self._items: dict[int, limits.RateLimitItem] = {}
        self._acquire = client.register_script(_ACQUIRE)

    def _item(self, per_minute: int) -> limits.RateLimitItem:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = limits.RateLimitItemPerMinute(per_minute)
        return item

    async def _hit_impl(self, name: str, key: str, per_minute: int, cost: int) -> float | None:
        item = self._item(per_minute)
        if await self._rates.hit(item, name, key, cost=cost):
            return None
        stats = await self._rates.get_window_stats(item, name, key)
        return max(stats.reset_time - time.time(), 0.1)

    async def _remaining_impl(self, name: str, key: str, per_minute: int) -> int:
        stats = await self._rates.get_window_stats(self._item(per_minute), name, key)
        return int(stats.remaining)

    async def _acquire_impl(
        self, name: str, key: str, holder: str, limit: int, lease_s: float
    ) -> bool:
        args = [int(time.time() * 1000), holder, limit, int(lease_s * 1000)]
        return bool(await self._acquire(keys=[f"{self.prefix}:{name}:{key}"], args=args))

    async def _renew_impl(
        self, name: str, key: str, holders: Sequence[str], lease_s: float
    ) -> None:
        deadline = int((time.time() + lease_s) * 1000)
        mapping = {holder: deadline for holder in holders}
        if mapping:
            await self.client.zadd(f"{self.prefix}:{name}:{key}", mapping, xx=True)

    async def _release_impl(self, name: str, key: str, holder: str) -> None:
        await self.client.zrem(f"{self.prefix}:{name}:{key}", holder)


def storage(redis_url: str) -> tuple[str, dict[str, Any]]:
    """The ``limits`` library's URI and options for one of ``ASSISTANT_REDIS_URL``'s forms, built
    from the parsed URL: the library would take a Sentinel URL's password for the Sentinels
    too, and read ``/service/db`` as one name."""
    from adapters.memory.redis_topology import parse_redis_url

    topology = parse_redis_url(redis_url)
    if topology.kind == "single":
        return f"async+{redis_url}", {}
    hosts = ",".join(f"{host}:{port}" for host, port in topology.nodes)
    options: dict[str, Any] = {}
    if topology.username:
        options["username"] = topology.username
    if topology.password:
        options["password"] = topology.password
    if topology.kind == "cluster":
        return f"async+redis+cluster://{hosts}", options
    sentinel = {k: v for k, v in (("username", topology.sentinel_username),
                                  ("password", topology.sentinel_password)) if v}  # fmt: skip
    options.update(service_name=topology.service_name, db=topology.db)
    if sentinel:
        options["sentinel_kwargs"] = sentinel
    return f"async+redis+sentinel://{hosts}/{topology.service_name}", options


def build(store: Any, settings: Any, *, redis_url: str) -> RedisLimiter:
    """Limits in the session store's Redis."""
    uri, options = storage(redis_url)
    return RedisLimiter(store.client, uri, key_prefix=settings.memory.key_prefix, **options)
