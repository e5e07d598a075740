"""The key store port: API keys as stored records (hashed), by id and by tenant."""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import TypeVar

from assistant.auth.keys import StoredKey
from assistant.ports.store_calls import store_call

_T = TypeVar("_T")


class KeyStore(abc.ABC):
    name: str = "key_store"
    #: The client library's own exceptions that mean the backend failed (see ``store_call``).
    backend_errors: tuple[type[Exception], ...] = ()

    async def put(self, key: StoredKey) -> None:
        await self._call(self._put_impl(key))

    async def get(self, key_id: str) -> StoredKey | None:
        return await self._call(self._get_impl(key_id))

    async def list(self, tenant: str | None = None) -> list[StoredKey]:
        """The keys of ``tenant`` (every tenant's when None), oldest first, revoked ones too."""
        keys = await self._call(self._list_impl(tenant))
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke(self, key_id: str, at_ms: int) -> StoredKey | None:
        """Mark the key revoked (kept for the record); None when there is no such key."""
        key = await self.get(key_id)
        if key is None:
            return None
        if key.revoked_at is None:
            key = key.model_copy(update={"revoked_at": at_ms})
            await self.put(key)
        return key

    async def aclose(self) -> None:  # noqa: B027
        """Release connections."""

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        return await store_call(self.name, "key store", awaitable, self.backend_errors)

    @abc.abstractmethod
    async def _put_impl(self, key: StoredKey) -> None: ...

    @abc.abstractmethod
    async def _get_impl(self, key_id: str) -> StoredKey | None: ...

    @abc.abstractmethod
    async def _list_impl(self, tenant: str | None) -> list[StoredKey]: ...
