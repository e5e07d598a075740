"""The redis-py clients of a ``RedisCheckpointSaver`` and the reads its ``list`` is made of.

A saver given ``redis_url`` makes its clients (a sync one on first use; an async one per event
loop, as redis-py's asyncio connections belong to the loop they were made on) and closes them;
clients it is given stay the caller's. Scripts are registered per client (EVALSHA, loaded again
by redis-py when the server has forgotten them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import redis
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import SerializerProtocol, get_checkpoint_id

import adapters.langchain.checkpoint_layout as layout
import adapters.langchain.checkpoint_records as records
from assistant.errors import ConfigurationError

_SCHEMES = ("redis://", "rediss://", "unix://")
_FILTER_BATCH = 128
_SCAN_COUNT = 500


class SaverClients:
    def __init__(self, redis_url: str | None, client: Any, async_client: Any) -> None:
        if redis_url is None and client is None and async_client is None:
            raise ConfigurationError("RedisCheckpointSaver needs redis_url, client or async_client")
        if redis_url is not None and not redis_url.startswith(_SCHEMES):
            raise ConfigurationError(
                f"RedisCheckpointSaver takes a redis:// URL; for Sentinel or Cluster pass the "
                f"redis-py client instead (client=RedisCluster(...)), got {redis_url.split(':')[0]}://"
            )
        for given in (client, async_client):
            if getattr(given, "get_connection_kwargs", dict)().get("decode_responses"):
                raise ConfigurationError("RedisCheckpointSaver needs a client with decode_responses=False")
        self.redis_url = redis_url
        self._client = client
        self._async_client = async_client
        self._owned: list[Any] = []  # clients made from the URL
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of an owned async client
        self._scripts: dict[tuple[int, str], tuple[Any, Any]] = {}

    def sync(self) -> Any:
        if self._client is None:
            if self.redis_url is None:
                raise ConfigurationError(
                    "this RedisCheckpointSaver has only an async client: use the async methods "
                    "(ainvoke, astream), or give it client= too"
                )
            self._client = redis.Redis.from_url(self.redis_url)
            self._owned.append(self._client)
        return self._client

    def async_(self) -> Any:
        """The async client for the running loop; None: there is none (only a sync client)."""
        loop = asyncio.get_running_loop()
        if self._async_client is not None and self._loop in (None, loop):
            return self._async_client
        if self.redis_url is None:
            return None
        if self._async_client is not None:  # made on a loop that is gone: its sockets go with it
            self._owned.remove(self._async_client)
        self._async_client = aioredis.Redis.from_url(self.redis_url)
        self._loop = loop
        self._owned.append(self._async_client)
        return self._async_client

    def script(self, client: Any, name: str) -> Any:
        """``checkpoint_layout``'s script ``name`` on ``client``."""
        key = (id(client), name)
        known = self._scripts.get(key)
        if known is None or known[0] is not client:
            known = self._scripts[key] = (client, client.register_script(getattr(layout, name)))
        return known[1]

    def close(self) -> None:
        for client in [c for c in self._owned if isinstance(c, redis.Redis)]:
            client.close()
            self._owned.remove(client)

    async def aclose(self) -> None:
        self.close()
        owned, self._owned = self._owned, []
        for client in owned:
            if client is self._async_client and self._loop is asyncio.get_running_loop():
                await client.aclose()
        if self._loop is not None:
            self._async_client, self._loop = None, None


def threads(client: Any, root: str) -> list[str]:
    """Every thread id under ``root`` (SCAN; a cluster client scans every node)."""
    keys = client.scan_iter(match=layout.thread_pattern(root), count=_SCAN_COUNT)
    return sorted({layout.thread_of_key(root, key) for key in keys})


async def athreads(client: Any, root: str) -> list[str]:
    keys = client.scan_iter(match=layout.thread_pattern(root), count=_SCAN_COUNT)
    return sorted({layout.thread_of_key(root, key) async for key in keys})


def _kept(serde: SerializerProtocol, batch: list[tuple[str, str]], raw: list[Any], filter: dict) -> list:
    return [
        item
        for item, record in zip(batch, raw, strict=True)
        if record and records.matches(records.record_metadata(serde, record), filter)
    ]


def filtered(
    serde: SerializerProtocol, client: Any, cv: str, chosen: list[tuple[str, str]], filter: dict | None
) -> Iterator[tuple[str, str]]:
    """The (ns, id) of ``chosen`` whose metadata matches ``filter``, read in batches (HMGET)."""
    if not filter:
        yield from chosen
        return
    for start in range(0, len(chosen), _FILTER_BATCH):
        batch = chosen[start : start + _FILTER_BATCH]
        yield from _kept(serde, batch, client.hmget(cv, [_field(*item) for item in batch]), filter)


async def afiltered(
    serde: SerializerProtocol, client: Any, cv: str, chosen: list[tuple[str, str]], filter: dict | None
) -> list[tuple[str, str]]:
    if not filter:
        return chosen
    kept = []
    for start in range(0, len(chosen), _FILTER_BATCH):
        batch = chosen[start : start + _FILTER_BATCH]
        kept += _kept(serde, batch, await client.hmget(cv, [_field(*item) for item in batch]), filter)
    return kept


def _field(ns: str, checkpoint_id: str) -> bytes:
    return layout.joined(layout.part(ns, "checkpoint namespace"), layout.part(checkpoint_id, "checkpoint id"))


class ListPlan:
    """Which ``cx`` members one thread's ``list`` reads: one namespace's range (older than
    ``before``) when the config names a namespace, else every namespace's."""

    def __init__(self, config: RunnableConfig | None, before: RunnableConfig | None) -> None:
        configurable = (config or {}).get("configurable") or {}
        self.ns: str | None = configurable.get("checkpoint_ns")
        self.checkpoint_id = configurable.get("checkpoint_id")
        self.before = get_checkpoint_id(before) if before else None

    def members(self, client: Any, cx: str) -> list[bytes]:
        if self.ns is None:
            return client.zrangebylex(cx, "-", "+")
        return client.zrevrangebylex(cx, *layout.lex_range(self.ns, self.before))

    async def amembers(self, client: Any, cx: str) -> list[bytes]:
        if self.ns is None:
            return await client.zrangebylex(cx, "-", "+")
        return await client.zrevrangebylex(cx, *layout.lex_range(self.ns, self.before))

    def choose(self, members: list[bytes]) -> list[tuple[str, str]]:
        return records.candidates(
            members, descending=self.ns is not None, checkpoint_id=self.checkpoint_id,
            before=self.before,
        )  # fmt: skip
