"""The key store in a dict."""

from __future__ import annotations

from assistant.auth.keys import StoredKey
from assistant.ports.keys import KeyStore


class MemoryKeyStore(KeyStore):
    name = "memory_keys"

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}

    async def _put_impl(self, key: StoredKey) -> None:
        self.keys[key.id] = key

    async def _get_impl(self, key_id: str) -> StoredKey | None:
        return self.keys.get(key_id)

    async def _list_impl(self, tenant: str | None) -> list[StoredKey]:
        return [k for k in self.keys.values() if tenant is None or k.tenant == tenant]
