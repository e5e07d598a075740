"""``RedisCheckpointSaver``: LangGraph persistence (checkpoints keyed by ``thread_id``) on plain
Redis 7, with redis-py's sync and asyncio clients, beside this project's sessions.

    saver = RedisCheckpointSaver(redis_url="redis://localhost:6379/0", tenant="acme")
    graph = builder.compile(checkpointer=saver)
    graph.invoke({"messages": [...]}, {"configurable": {"thread_id": "t-1"}})

``langgraph-checkpoint-redis`` needs the RediSearch and RedisJSON modules; this saver needs none:
sorted sets, hashes and Lua scripts (``checkpoint_layout`` draws the keys). Semantics follow
LangGraph's ``InMemorySaver``; a thread's keys carry the tenant, share a Cluster hash tag, and
live ``ttl_s`` after their last read or write (the session TTL by default).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

try:
    import redis  # noqa: F401 - the ImportError below names it
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        SerializerProtocol,
        get_checkpoint_id,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"RedisCheckpointSaver needs langgraph and redis-py: pip install 'assistant[langchain,redis]' ({exc})"
    ) from exc

import adapters.langchain.checkpoint_clients as io
import adapters.langchain.checkpoint_layout as layout
import adapters.langchain.checkpoint_records as records
from adapters.langchain.checkpoint_clients import ListPlan, SaverClients
from assistant.config import MemorySettings, Settings
from assistant.errors import ConfigurationError
from assistant.ports.memory import check_tenant

_UNSET: Any = object()


class RedisCheckpointSaver(BaseCheckpointSaver[str]):
    """Give ``redis_url`` (``redis://``; the saver makes and closes its clients) or a
    redis-py ``client`` and/or ``async_client`` of yours (Redis, RedisCluster; replies not
    decoded). With only a sync client, the async methods run the sync ones in a thread. ``ttl_s``
    None: the thread's keys never expire."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: Any = None,
        async_client: Any = None,
        tenant: str = "default",
        prefix: str = _UNSET,
        ttl_s: float | None = _UNSET,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.clients = SaverClients(redis_url, client, async_client)
        self.tenant = check_tenant(tenant)
        if prefix is _UNSET:
            prefix = MemorySettings.model_fields["key_prefix"].default
        if ttl_s is _UNSET:
            ttl_s = MemorySettings.model_fields["ttl_s"].default
        self.prefix = prefix
        self.ttl_ms = 0 if ttl_s is None else max(1, int(ttl_s * 1000))
        self.root = f"{prefix}:{self.tenant}:lg"

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RedisCheckpointSaver:
        """The configured Redis (``ASSISTANT_REDIS_URL``), tenant, key prefix and session TTL."""
        if not settings.redis_url:
            raise ConfigurationError("RedisCheckpointSaver.from_settings needs ASSISTANT_REDIS_URL")
        memory = settings.memory
        kwargs = {"tenant": memory.tenant, "prefix": memory.key_prefix, "ttl_s": memory.ttl_s, **kwargs}
        return cls(settings.redis_url, **kwargs)

    def close(self) -> None:
        """Close the sync client this saver made (one it was given stays open)."""
        self.clients.close()

    async def aclose(self) -> None:
        """Close every client this saver made."""
        await self.clients.aclose()

    def _keys(self, thread_id: Any) -> list[str]:
        return layout.thread_keys(self.root, thread_id)

    def _call(self, client: Any, script: str, thread_id: Any, args: list[Any]) -> Any:
        """A script on a thread's keys (a coroutine on an async client)."""
        return self.clients.script(client, script)(keys=self._keys(thread_id), args=[self.ttl_ms, *args])

    def _read_args(self, ns: str, checkpoint_id: str | None) -> list[Any]:
        return [layout.part(ns, "checkpoint namespace"), checkpoint_id or ""]

    # -- sync -------------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns = records.thread_and_ns(config)
        checkpoint_id = get_checkpoint_id(config)
        return self._read(thread_id, ns, checkpoint_id, config if checkpoint_id else None)

    def _read(
        self, thread_id: Any, ns: str, checkpoint_id: str | None, config: RunnableConfig | None = None
    ) -> CheckpointTuple | None:
        reply = self._call(self.clients.sync(), "READ", thread_id, self._read_args(ns, checkpoint_id))
        return records.tuple_from_reply(self.serde, thread_id, ns, reply, config) if reply else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        client = self.clients.sync()
        left = limit
        threads = [config["configurable"]["thread_id"]] if config else io.threads(client, self.root)
        for thread_id in threads:
            keys = self._keys(thread_id)
            self._call(client, "TOUCH", thread_id, [])
            plan = ListPlan(config, before)
            chosen = plan.choose(plan.members(client, keys[0]))
            for ns, checkpoint_id in io.filtered(self.serde, client, keys[1], chosen, filter):
                if left is not None and left <= 0:
                    return
                found = self._read(thread_id, ns, checkpoint_id)
                if found is not None:
                    left = None if left is None else left - 1
                    yield found

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        args, stored = records.put_args(self.serde, config, checkpoint, metadata, new_versions)
        self._call(self.clients.sync(), "PUT", records.thread_and_ns(config)[0], args)
        return stored

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        args = records.writes_args(self.serde, config, writes, task_id, task_path)
        if args:
            self._call(self.clients.sync(), "PUT_WRITES", records.thread_and_ns(config)[0], args)

    def delete_thread(self, thread_id: str) -> None:
        self.clients.sync().delete(*self._keys(thread_id))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """As InMemorySaver: ``<32-digit counter>.<random>``, increasing."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- async ------------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self.clients.async_() is None:
            return await asyncio.to_thread(self.get_tuple, config)
        thread_id, ns = records.thread_and_ns(config)
        checkpoint_id = get_checkpoint_id(config)
        return await self._aread(thread_id, ns, checkpoint_id, config if checkpoint_id else None)

    async def _aread(
        self, thread_id: Any, ns: str, checkpoint_id: str | None, config: RunnableConfig | None = None
    ) -> CheckpointTuple | None:
        client = self.clients.async_()
        reply = await self._call(client, "READ", thread_id, self._read_args(ns, checkpoint_id))
        return records.tuple_from_reply(self.serde, thread_id, ns, reply, config) if reply else None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        client = self.clients.async_()
        if client is None:
            found = await asyncio.to_thread(
                lambda: list(self.list(config, filter=filter, before=before, limit=limit))
            )
            for item in found:
                yield item
            return
        left = limit
        threads = [config["configurable"]["thread_id"]] if config else await io.athreads(client, self.root)
        for thread_id in threads:
            keys = self._keys(thread_id)
            await self._call(client, "TOUCH", thread_id, [])
            plan = ListPlan(config, before)
            chosen = plan.choose(await plan.amembers(client, keys[0]))
            for ns, checkpoint_id in await io.afiltered(self.serde, client, keys[1], chosen, filter):
                if left is not None and left <= 0:
                    return
                found = await self._aread(thread_id, ns, checkpoint_id)
                if found is not None:
                    left = None if left is None else left - 1
                    yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        client = self.clients.async_()
        if client is None:
            return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)
        args, stored = records.put_args(self.serde, config, checkpoint, metadata, new_versions)
        await self._call(client, "PUT", records.thread_and_ns(config)[0], args)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        client = self.clients.async_()
        if client is None:
            return await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)
        args = records.writes_args(self.serde, config, writes, task_id, task_path)
        if args:
            await self._call(client, "PUT_WRITES", records.thread_and_ns(config)[0], args)

    async def adelete_thread(self, thread_id: str) -> None:
        client = self.clients.async_()
        if client is None:
            return await asyncio.to_thread(self.delete_thread, thread_id)
        await client.delete(*self._keys(thread_id))
