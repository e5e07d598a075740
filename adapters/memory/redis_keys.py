"""API keys in Redis, beside the sessions (plain Redis, single-key commands: works on a Cluster):

    {prefix}:auth:key:{id}          string  the StoredKey as JSON (a digest, never the key)
    {prefix}:auth:tenant:{tenant}   set     the tenant's key ids
    {prefix}:auth:tenants           set     the tenants that have keys

Keys do not expire; a revoked key stays, marked, for the record.
"""

from __future__ import annotations

from typing import Any

try:
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the redis key store needs redis-py: pip install 'assistant[redis]' ({exc})") from exc

from assistant.auth.keys import StoredKey
from assistant.ports.keys import KeyStore


class RedisKeyStore(KeyStore):
    name = "redis_keys"
    backend_errors = (RedisError,)

    def __init__(self, client: Any, *, key_prefix: str = "assistant") -> None:
        self.client = client  # a redis-py asyncio client decoding replies (shared, not closed here)
        self.prefix = f"{key_prefix}:auth"

    async def _put_impl(self, key: StoredKey) -> None:
        await self.client.set(f"{self.prefix}:key:{key.id}", key.model_dump_json())
        await self.client.sadd(f"{self.prefix}:tenant:{key.tenant}", key.id)
        await self.client.sadd(f"{self.prefix}:tenants", key.tenant)

    async def _get_impl(self, key_id: str) -> StoredKey | None:
        raw = await self.client.get(f"{self.prefix}:key:{key_id}")
        return StoredKey.model_validate_json(raw) if raw else None

    async def _list_impl(self, tenant: str | None) -> list[StoredKey]:
        tenants = [tenant] if tenant is not None else await self.client.smembers(f"{self.prefix}:tenants")
        keys: list[StoredKey] = []
        for name in sorted(tenants):
            for key_id in sorted(await self.client.smembers(f"{self.prefix}:tenant:{name}")):
                key = await self._get_impl(key_id)
                if key is not None:
                    keys.append(key)
        return keys


def build(store: Any, settings: Any) -> RedisKeyStore:
    """Keys in the session store's Redis, through its client."""
    return RedisKeyStore(store.client, key_prefix=settings.memory.key_prefix)
