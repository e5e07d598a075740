"""A tenant's knowledge bases as the CLI and the REST routes use them: add files (a changed file
replaces its chunks, the same bytes again are a no-op), list, remove, search."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import numpy as np

from assistant.config import KnowledgeSettings
from assistant.errors import KnowledgeNotFoundError, shown
from assistant.knowledge.ingest import Prepared, check_kb, document_id, embedding_text, prepare
from assistant.ports.retrieval import (
    Document,
    DocumentReader,
    Embedder,
    KnowledgeStore,
    Passage,
    Retriever,
)


@dataclass(frozen=True)
class Added:
    document: Document
    outcome: Literal["added", "replaced", "unchanged"]


class KnowledgeService:
    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        reader: DocumentReader,
        retriever: Retriever,
        settings: KnowledgeSettings,
    ) -> None:
        self.store, self.embedder, self.reader = store, embedder, reader
        self.retriever, self.settings = retriever, settings

    def for_tenant(self, tenant: str) -> KnowledgeService:
        """The same service over ``tenant``'s knowledge bases (the retriever is shared: it keeps
        an index per tenant and knowledge base)."""
        return KnowledgeService(self.store.for_tenant(tenant), self.embedder, self.reader,
                                self.retriever, self.settings)  # fmt: skip

    async def add(self, kb: str, filename: str, data: bytes) -> Added:
        """Ingest one file; ``DocumentError`` (nothing stored) when it cannot be."""
        check_kb(kb)
        return await self.put(kb, await self.prepare(filename, data))

    async def prepare(self, filename: str, data: bytes) -> Prepared:
        """Check, read and split a file (off the event loop); nothing is stored. ``DocumentError``
        when it cannot be ingested: a caller adding several files prepares them all first."""
        return await asyncio.to_thread(
            prepare, self.reader, filename, data, max_bytes=self.settings.max_document_bytes
        )

    async def put(self, kb: str, prepared: Prepared) -> Added:
        """Embed and store a prepared file, unless the knowledge base holds the same bytes."""
        check_kb(kb)
        previous = await self.store.document(kb, prepared.document.id)
        if previous is not None and previous.sha256 == prepared.document.sha256:
            return Added(previous, "unchanged")
        texts = [embedding_text(c) for c in prepared.chunks]
        vectors = await self._embed(texts)
        await self.store.put_document(kb, prepared.document, prepared.chunks, vectors)
        return Added(prepared.document, "replaced" if previous is not None else "added")

    async def _embed(self, texts: list[str]) -> np.ndarray:
        size = self.settings.batch_size
        parts = [await self.embedder.embed(texts[i : i + size]) for i in range(0, len(texts), size)]
        return np.concatenate(parts).astype(np.float32)

    async def documents(self, kb: str) -> list[Document]:
        return await self.store.documents(check_kb(kb))

    async def remove(self, kb: str, document: str) -> None:
        """``document``: its id or its file name."""
        check_kb(kb)
        for doc_id in (document, document_id(document)):
            if await self.store.delete_document(kb, doc_id):
                return
        raise KnowledgeNotFoundError(f"no document {shown(document)} in {shown(kb)}")

    async def search(self, kb: str, query: str, k: int | None = None) -> list[Passage]:
        check_kb(kb)
        return await self.retriever.search(self.store.tenant, kb, query, k or self.settings.top_k)
