"""Knowledge bases in plain Redis 7 (no modules), per tenant and knowledge base; one hash tag
per knowledge base, so a document's write is one MULTI/EXEC even on a Cluster:

    {prefix}:{tenant}:kbs                       set     the tenant's knowledge base names
    {prefix}:{tenant}:kb:{<kb>}:version         string  bumped by every write (workers reload)
    {prefix}:{tenant}:kb:{<kb>}:docs            hash    document id -> Document JSON
    {prefix}:{tenant}:kb:{<kb>}:chunks:<doc>    string  the document's chunks, JSON
    {prefix}:{tenant}:kb:{<kb>}:vectors:<doc>   string  their vectors, float32 bytes, row-major
    {prefix}:{tenant}:bot                       string  the tenant's bot profile, JSON

A document's chunks, vectors and record and the version's bump are written in one transaction:
a reader sees the old document or the new one, never half of either."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the redis knowledge store needs redis-py ({exc})") from exc

from assistant.ports import check_tenant
from assistant.ports.retrieval import Chunk, Document, KnowledgeSnapshot, KnowledgeStore


class RedisKnowledgeStore(KnowledgeStore):
    name = "redis_knowledge"
    backend_errors = (RedisError,)

    def __init__(self, client: Any, *, key_prefix: str = "assistant", tenant: str = "default",
                 owns_client: bool = False) -> None:  # fmt: skip
        self.client = client  # redis-py asyncio, replies as bytes
        self.key_prefix = key_prefix
        self.tenant = check_tenant(tenant)
        self._owns = owns_client

    def for_tenant(self, tenant: str) -> RedisKnowledgeStore:
        return RedisKnowledgeStore(self.client, key_prefix=self.key_prefix, tenant=tenant)

    def _kb(self, kb: str) -> str:
        return f"{self.key_prefix}:{self.tenant}:kb:{{{kb}}}"

    async def _version_impl(self, kb: str) -> int:
        raw = await self.client.get(f"{self._kb(kb)}:version")
        return int(raw) if raw else 0

    async def _load_impl(self, kb: str) -> KnowledgeSnapshot:
        base = self._kb(kb)
        while True:  # read the docs and the version in one transaction; the rest per document
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(f"{base}:version")
                pipe.hkeys(f"{base}:docs")
                version_raw, ids = await pipe.execute()
            async with self.client.pipeline(transaction=True) as pipe:
                for doc_id in sorted(ids):
                    pipe.get(f"{base}:chunks:{doc_id.decode()}")
                    pipe.get(f"{base}:vectors:{doc_id.decode()}")
                pipe.get(f"{base}:version")
                *pairs, again = await pipe.execute()
            if again == version_raw:
                break  # nothing was written between the two reads
        chunks: list[Chunk] = []
        blocks = []
        for raw_chunks, raw_vectors in zip(pairs[::2], pairs[1::2], strict=True):
            if raw_chunks is None or raw_vectors is None:
                continue
            items = [Chunk(**c) for c in json.loads(raw_chunks)]
            chunks.extend(items)
            blocks.append(np.frombuffer(raw_vectors, dtype=np.float32).reshape(len(items), -1))
        vectors = np.concatenate(blocks) if blocks else None
        return KnowledgeSnapshot(int(version_raw or 0), tuple(chunks), vectors)

    async def _document_impl(self, kb: str, document_id: str) -> Document | None:
        raw = await self.client.hget(f"{self._kb(kb)}:docs", document_id)
        return Document(**json.loads(raw)) if raw else None

    async def _documents_impl(self, kb: str) -> list[Document]:
        raw = await self.client.hvals(f"{self._kb(kb)}:docs")
        return [Document(**json.loads(r)) for r in raw]

    async def _put_impl(
        self, kb: str, document: Document, chunks: list[Chunk], vectors: Any
    ) -> None:
        base = self._kb(kb)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
        await self.client.sadd(f"{self.key_prefix}:{self.tenant}:kbs", kb)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(f"{base}:chunks:{document.id}", json.dumps([c.as_dict() for c in chunks]))
            pipe.set(f"{base}:vectors:{document.id}", matrix.tobytes())
            pipe.hset(f"{base}:docs", document.id, json.dumps(document.as_dict()))
            pipe.incr(f"{base}:version")
            await pipe.execute()

    async def _delete_impl(self, kb: str, document_id: str) -> bool:
        base = self._kb(kb)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{base}:docs", document_id)
            pipe.delete(f"{base}:chunks:{document_id}", f"{base}:vectors:{document_id}")
            removed, _ = await pipe.execute()
        if removed:
            await self.client.incr(f"{base}:version")
        return bool(removed)

    async def _kbs_impl(self) -> list[str]:
        names = await self.client.smembers(f"{self.key_prefix}:{self.tenant}:kbs")
        return [n.decode() for n in names]

    async def _profile_impl(self) -> dict[str, Any] | None:
        raw = await self.client.get(f"{self.key_prefix}:{self.tenant}:bot")
        return json.loads(raw) if raw else None

    async def _set_profile_impl(self, profile: dict[str, Any]) -> None:
        await self.client.set(f"{self.key_prefix}:{self.tenant}:bot", json.dumps(profile))

    async def aclose(self) -> None:
        if self._owns:
            await self.client.aclose()


def build(settings: Any, *, redis_url: str) -> RedisKnowledgeStore:
    """A client of its own (vectors are bytes: the session store's client decodes replies)."""
    client = aioredis.from_url(redis_url, decode_responses=False)
    return RedisKnowledgeStore(client, key_prefix=settings.memory.key_prefix,
                               tenant=settings.memory.tenant, owns_client=True)  # fmt: skip
