"""``kb``: the knowledge base on the test corpus (tests/data/kb) with the embedded defaults (the
real all-MiniLM-L6-v2, the hybrid index): retrieval hit@1 and hit@3, out-of-scope questions
refused, in-scope ones wrongly refused; the share of answered replies (the real SmolLM2, grounded
as a support bot's turn is) that contain the question's key fact; and the search's cost at
1k / 10k / 100k chunks (synthetic unit vectors) beside numpy brute force (cosine top-k alone) of
the same run."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "kb"


async def _quality(
    threshold: float | None = None, facts_limit: int | None = None
) -> dict[str, Any]:
    from adapters.knowledge.minilm import build as build_embedder
    from adapters.knowledge.reader import SplittingReader
    from assistant.config import Settings
    from assistant.knowledge.retriever import EmbeddedRetriever
    from assistant.knowledge.service import KnowledgeService
    from assistant.testing.knowledge import MemoryKnowledgeStore

    settings = Settings()
    threshold = settings.bot.threshold if threshold is None else threshold
    embedder = build_embedder(settings)
    store = MemoryKnowledgeStore()
    retriever = EmbeddedRetriever(
        store, embedder, semantic_weight=settings.knowledge.semantic_weight
    )
    service = KnowledgeService(store, embedder, SplittingReader(), retriever, settings.knowledge)
    for path in sorted(CORPUS.iterdir()):
        if path.suffix in (".md", ".txt", ".html", ".pdf"):
            await service.add("help", path.name, path.read_bytes())
    questions = [json.loads(line) for line in (CORPUS / "questions.jsonl").read_text().splitlines()]
    rows = []
    for q in questions:
        hits = await service.search("help", q["q"], 3)
        rows.append((q, [h.chunk.filename for h in hits], hits[0].score if hits else 0.0))
    inside = [r for r in rows if r[0]["doc"]]
    outside = [r for r in rows if not r[0]["doc"]]
    answered = [r[0] for r in inside if r[2] >= threshold][:facts_limit]
    facts = await _key_facts(settings, service, answered, threshold)
    return {
        "questions": len(rows), "in_scope": len(inside), "out_of_scope": len(outside),
        "threshold": threshold,
        "hit_at_1": round(sum(r[1][:1] == [r[0]["doc"]] for r in inside) / len(inside), 3),
        "hit_at_3": round(sum(r[0]["doc"] in r[1] for r in inside) / len(inside), 3),
        "out_of_scope_refused": round(sum(r[2] < threshold for r in outside) / len(outside), 3),
        "in_scope_wrongly_refused": round(sum(r[2] < threshold for r in inside) / len(inside), 3),
        "top_scores": {"in_scope_min": round(min(r[2] for r in inside), 3),
                       "out_of_scope_max": round(max(r[2] for r in outside), 3)},
        **facts,
    }  # fmt: skip


async def _key_facts(
    settings: Any, service: Any, questions: list[dict[str, Any]], threshold: float
) -> dict[str, Any]:
    """Each answered question asked as a stateless chat completion of the support bot (the
    default local model, greedy, 64 tokens): the share whose reply holds the key fact. Asked
    together, as many at once as the model batches (``llm.max_batch``): in fp32 (the default)
    batched greedy replies are the replies alone (the ``concurrency`` entry checks that), in a
    fraction of the time. (In ``int8-decode`` a reply alone and in a batch take different
    products: with that precision the share may move with how the requests interleave.)"""
    from assistant.completions import Completions
    from assistant.config import BotSettings, LLMSettings
    from assistant.knowledge.answer import BotProfile
    from assistant.knowledge.grounder import Grounder
    from assistant.messages import Message
    from assistant.orchestrator import Orchestrator
    from assistant.registry import build_language_model
    from assistant.testing.memory import MemoryStore

    async def retriever() -> Any:
        return service.retriever

    profile = BotProfile.from_settings(BotSettings(knowledge_base="help", threshold=threshold))
    grounder = Grounder(service.store, retriever, profile, top_k=settings.knowledge.top_k)
    llm = build_language_model(settings)
    orchestrator = Orchestrator(
        llm, MemoryStore(), llm_settings=LLMSettings(max_new_tokens=64),
        prompt_settings=settings.prompt, memory_settings=settings.memory, grounder=grounder,
    )  # fmt: skip
    completions, places = Completions(orchestrator), asyncio.Semaphore(settings.llm.max_batch)

    async def ask(question: str) -> str:
        async with places:
            completion = await completions.start([Message.from_text("user", question)])
            return "".join([delta async for delta in completion])

    try:
        async with asyncio.TaskGroup() as group:  # one failing cancels the others first
            tasks = [group.create_task(ask(q["q"])) for q in questions]
    finally:
        await llm.aclose()
    replies = [task.result() for task in tasks]
    held, misses = 0, []
    for q, reply in zip(questions, replies):
        if q["fact"].lower() in reply.lower():
            held += 1
        elif len(misses) < 3:
            misses.append({"q": q["q"], "fact": q["fact"], "reply": reply[:160]})
    share = round(held / len(questions), 3) if questions else None
    return {"answered_asked": len(questions), "key_fact_share": share, "key_fact_misses": misses}


def _latency(sizes: tuple[int, ...], reps: int) -> dict[str, Any]:
    from assistant.knowledge.search import HybridIndex
    from assistant.ports.retrieval import Chunk, KnowledgeSnapshot

    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(5000)])
    out: dict[str, Any] = {}
    for n in sizes:
        vectors = rng.standard_normal((n, 384), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [" ".join(row) for row in words[rng.integers(0, len(words), (n, 40))]]
        chunks = tuple(Chunk(f"d:{i}", "d", "d.md", "", t) for i, t in enumerate(texts))
        started = time.perf_counter()
        index = HybridIndex(KnowledgeSnapshot(1, chunks, vectors))
        built_s = time.perf_counter() - started
        query = vectors[0]
        hybrid, brute = [], []
        for _ in range(reps):
            t = time.perf_counter()
            index.search(query, "w1 w2 w3 order PP-204816", 3)
            hybrid.append(time.perf_counter() - t)
            t = time.perf_counter()
            scores = vectors @ query
            top = np.argpartition(-scores, 2)[:3]
            top[np.argsort(-scores[top])]
            brute.append(time.perf_counter() - t)
        h, b = float(np.median(hybrid)) * 1000, float(np.median(brute)) * 1000
        out[str(n)] = {"hybrid_ms": round(h, 3), "numpy_brute_force_ms": round(b, 3),
                       "ratio": round(h / b, 2) if b else None,
                       "index_build_s": round(built_s, 2)}  # fmt: skip
    return out


def measure_kb(quick: bool = False) -> dict[str, Any]:
    result = asyncio.run(_quality(facts_limit=8 if quick else None))
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    result["search_latency"] = _latency(sizes, reps=5 if quick else 20)
    return result


if __name__ == "__main__":
    print(json.dumps(measure_kb(quick=True), indent=1))
