"""The knowledge base on a real redis-server with the real all-MiniLM-L6-v2: the test corpus
ingested through one service is searched by a second (its own client and in-memory index, as
another worker's), which reloads when the version key changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.registry import build_knowledge

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"


@pytest.fixture(scope="module")
def embedder():
    from adapters.knowledge.minilm import build

    return build(Settings())


def _service(redis_url: str, embedder, tenant: str = "acme"):
    service = build_knowledge(Settings(), redis_url=redis_url)
    service.embedder = service.retriever.embedder = embedder  # one model for both "workers"
    service.store = service.store.for_tenant(tenant)
    service.retriever.store = service.store
    return service


async def test_a_second_reader_finds_what_the_first_ingested(redis_url, embedder):
    first, second = _service(redis_url, embedder), _service(redis_url, embedder)
    try:
        for path in sorted(CORPUS.glob("*.*")):
            if path.suffix != ".jsonl":
                await first.add("help", path.name, path.read_bytes())
        questions = [json.loads(x) for x in (CORPUS / "questions.jsonl").read_text().splitlines()]
        threshold = Settings().bot.threshold
        for q in questions:
            hits = await second.search("help", q["q"], 3)
            if q["doc"]:
                assert q["doc"] in [h.chunk.filename for h in hits], q
                assert hits[0].score >= threshold, (q, hits[0])
            else:
                assert hits[0].score < threshold, (q, hits[0])
        assert second.retriever.reloads == 1
        await first.remove("help", "payments.pdf")
        hits = await second.search("help", "What does error E-402 mean?", 3)
        assert "payments.pdf" not in [h.chunk.filename for h in hits]
        assert second.retriever.reloads == 2
        other = _service(redis_url, embedder, tenant="globex")
        assert await other.search("help", "refund", 3) == []  # another tenant's is not seen
        await other.store.aclose()
    finally:
        await first.store.aclose()
        await second.store.aclose()
