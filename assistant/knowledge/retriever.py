"""The embedded default ``Retriever``: each process keeps a ``HybridIndex`` per (tenant, kb) and
reads the knowledge base again from the store when its version key changed (one ``GET`` per
search), so every worker answers from what any of them ingested."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from assistant.knowledge.search import HybridIndex
from assistant.ports.retrieval import Embedder, KnowledgeStore, Passage, Retriever


class EmbeddedRetriever(Retriever):
    def __init__(
        self, store: KnowledgeStore, embedder: Embedder, *, semantic_weight: float = 0.7
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.semantic_weight = semantic_weight
        self._indexes: dict[tuple[str, str], HybridIndex] = {}
        self._lock = asyncio.Lock()
        self.reloads = 0  #: indexes built from the store (for tests and metrics)

    async def index(self, tenant: str, kb: str) -> HybridIndex:
        store = self.store.for_tenant(tenant)
        version = await store.version(kb)
        index = self._indexes.get((tenant, kb))
        if index is not None and index.version == version:
            return index
        async with self._lock:
            index = self._indexes.get((tenant, kb))
            if index is None or index.version != version:
                snapshot = await store.load(kb)
                index = await asyncio.to_thread(HybridIndex, snapshot, self.semantic_weight)
                self._indexes[(tenant, kb)] = index
                self.reloads += 1
        return index

    async def search(self, tenant: str, kb: str, query: str, k: int) -> list[Passage]:
        index = await self.index(tenant, kb)
        if not len(index):
            return []
        vector = (await self.embedder.embed([query]))[0]
        return index.search(vector, query, k)


class LazyEmbedder(Embedder):
    """An embedder built by ``factory`` (blocking: loads the model) on its first use, so a
    command or a server that never embeds never loads it."""

    def __init__(self, factory: Callable[[], Embedder]) -> None:
        self._factory = factory
        self._built: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Embedder:
        with self._lock:
            if self._built is None:
                self._built = self._factory()
                self.name, self.dimensions = self._built.name, self._built.dimensions
            return self._built

    def _embed_impl(self, texts: list[str]) -> Any:
        return self.model.embed_blocking(texts)
