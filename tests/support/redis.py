"""Redis for the store tests: counting what reaches the sockets, waiting for keys to expire."""

from __future__ import annotations

import redis.asyncio as aioredis

from adapters.memory.redis import RedisSessionStore
from tests.support.waiting import wait_for_async


class CountingConnection(aioredis.Connection):
    """Counts the requests written to the socket: one per command, pipeline or script call."""

    sends = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[override]
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


def writes(store: RedisSessionStore) -> int:
    """Writes to Redis sockets: redis-py's pool (counted above) and the store's pipelined line."""
    return CountingConnection.sends + store.pipe.writes


async def wait_until_expired(client: aioredis.Redis, *keys: str, timeout_s: float = 10) -> None:
    """Wait until none of ``keys`` exists any more (their TTL ran out). ``EXISTS`` does not touch
    a key's TTL, and it expires a key whose time is up on the spot."""

    async def gone() -> bool:
        return await client.exists(*keys) == 0

    await wait_for_async(gone, what=f"{', '.join(keys)} to expire", timeout_s=timeout_s)
