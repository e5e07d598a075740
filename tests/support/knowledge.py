"""A knowledge service on the fakes of ``assistant.testing.knowledge`` (the hashing embedder, the
in-memory store) and the real reader: what ``registry.build_knowledge`` wires, without Redis or a
model."""

from __future__ import annotations

from adapters.knowledge.reader import SplittingReader
from assistant.config import KnowledgeSettings
from assistant.knowledge.retriever import EmbeddedRetriever
from assistant.knowledge.service import KnowledgeService
from assistant.testing.knowledge import HashingEmbedder, MemoryKnowledgeStore


def fake_knowledge(settings: KnowledgeSettings | None = None) -> KnowledgeService:
    settings = settings or KnowledgeSettings()
    store, embedder = MemoryKnowledgeStore(), HashingEmbedder()
    retriever = EmbeddedRetriever(store, embedder, semantic_weight=settings.semantic_weight)
    return KnowledgeService(store, embedder, SplittingReader(), retriever, settings)
