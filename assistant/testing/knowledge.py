"""Knowledge base fakes: an embedder hashing words into a vector (texts sharing words are close)
and a knowledge store in a dict. Both subclass the real ports."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import numpy as np

from assistant.ports.retrieval import Chunk, Document, Embedder, KnowledgeSnapshot, KnowledgeStore


class HashingEmbedder(Embedder):
    name = "hashing"

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.calls = 0

    def _embed_impl(self, texts: list[str]) -> Any:
        self.calls += 1
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                slot = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[row, slot % self.dimensions] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


class MemoryKnowledgeStore(KnowledgeStore):
    name = "memory_knowledge"

    def __init__(self, tenant: str = "default", data: dict[str, Any] | None = None) -> None:
        self.tenant = tenant
        self._data = data if data is not None else {}  # shared between tenant views
        self._profile_reads = [0]  # shared too

    def for_tenant(self, tenant: str) -> MemoryKnowledgeStore:
        view = MemoryKnowledgeStore(tenant, self._data)
        view._profile_reads = self._profile_reads
        return view

    def _kb(self, kb: str) -> dict[str, Any]:
        return self._data.setdefault((self.tenant, kb), {"version": 0, "docs": {}})

    async def _version_impl(self, kb: str) -> int:
        return self._kb(kb)["version"]

    async def _load_impl(self, kb: str) -> KnowledgeSnapshot:
        state = self._kb(kb)
        docs = [state["docs"][k] for k in sorted(state["docs"])]
        chunks = tuple(c for _, cs, _ in docs for c in cs)
        vectors = np.concatenate([v for _, _, v in docs]) if docs else None
        return KnowledgeSnapshot(state["version"], chunks, vectors)

    async def _document_impl(self, kb: str, document_id: str) -> Document | None:
        entry = self._kb(kb)["docs"].get(document_id)
        return entry[0] if entry else None

    async def _documents_impl(self, kb: str) -> list[Document]:
        return [d for d, _, _ in self._kb(kb)["docs"].values()]

    async def _put_impl(
        self, kb: str, document: Document, chunks: list[Chunk], vectors: Any
    ) -> None:
        state = self._kb(kb)
        state["docs"][document.id] = (document, tuple(chunks), np.asarray(vectors, np.float32))
        state["version"] += 1

    async def _delete_impl(self, kb: str, document_id: str) -> bool:
        state = self._kb(kb)
        if state["docs"].pop(document_id, None) is None:
            return False
        state["version"] += 1
        return True

    async def _kbs_impl(self) -> list[str]:
        return [kb for (tenant, kb), s in self._data.items() if tenant == self.tenant and s["docs"]]

    async def _profile_impl(self) -> dict[str, Any] | None:
        self._profile_reads[0] += 1
        await asyncio.sleep(0)  # a store's read suspends the turn, as a Redis round trip does
        return self._data.get((self.tenant, "bot profile"))

    @property
    def profile_reads(self) -> int:
        """Profiles read so far, through any tenant view."""
        return self._profile_reads[0]

    async def _set_profile_impl(self, profile: dict[str, Any]) -> None:
        self._data[(self.tenant, "bot profile")] = dict(profile)
