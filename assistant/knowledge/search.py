"""The in-memory hybrid index of one knowledge base: a matrix of unit vectors (cosine is a
matrix-vector product) and a BM25 index over the same chunks.

    score = w * cosine + (1 - w) * lexical        w = knowledge.semantic_weight (0.7)

A passage passes the bot's threshold when its ``score`` is at least the threshold; the best
``k`` are returned, best first, whatever their score (the caller applies the threshold)."""

from __future__ import annotations

import numpy as np

from assistant.knowledge.ingest import embedding_text
from assistant.knowledge.lexical import BM25
from assistant.ports.retrieval import KnowledgeSnapshot, Passage


class HybridIndex:
    def __init__(self, snapshot: KnowledgeSnapshot, semantic_weight: float = 0.7) -> None:
        self.version = snapshot.version
        self.chunks = snapshot.chunks
        self.vectors = snapshot.vectors  # (N, D) float32
        self.weight = semantic_weight
        self.lexical = BM25([embedding_text(c) for c in snapshot.chunks])

    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, query_vector: np.ndarray, query: str, k: int) -> list[Passage]:
        if not self.chunks:
            return []
        semantic = self.vectors @ query_vector.astype(np.float32)  # (N,)
        lexical = self.lexical.scores(query)  # (N,)
        fused = self.weight * semantic + (1 - self.weight) * lexical
        k = min(k, len(fused))
        top = np.argpartition(-fused, k - 1)[:k]
        top = top[np.argsort(-fused[top], kind="stable")]
        return [
            Passage(self.chunks[i], float(fused[i]), float(semantic[i]), float(lexical[i]))
            for i in top
        ]
