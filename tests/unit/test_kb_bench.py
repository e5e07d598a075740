"""The ``kb`` bench entry's parts on fakes: the key-fact share of replies asked together, and the
search latency's synthetic corpus."""

from __future__ import annotations

import asyncio

import pytest

from assistant.config import Settings
from bench import kb
from tests.support.knowledge import fake_knowledge

DOC = b"Returns: you can send any unused item back within 30 days. Shipping is free."


def test_key_facts_are_judged_per_question_in_order() -> None:
    # The scripted model echoes the question ("You said: ..."), so a fact the question holds is
    # in its reply and one it lacks is not: the share and the misses say which question was which.
    settings = Settings(llm={"adapter": "scripted", "max_batch": 2})
    questions = [
        {"q": "Can I return it within 30 days?", "fact": "30 days"},
        {"q": "Is shipping free?", "fact": "5 business days"},
        {"q": "Do returns cost anything?", "fact": "returns"},
        {"q": "Where is my parcel?", "fact": "tracking number"},
        {"q": "Is shipping free for returns?", "fact": "free"},
    ]

    async def run() -> dict:
        service = fake_knowledge(settings.knowledge)
        await service.add("help", "returns.md", DOC)
        return await kb._key_facts(settings, service, questions, threshold=0.0)

    result = asyncio.run(run())
    assert result["answered_asked"] == 5
    assert result["key_fact_share"] == 0.6
    assert [miss["q"] for miss in result["key_fact_misses"]] == [
        "Is shipping free?",
        "Where is my parcel?",
    ]
    assert all(miss["q"] in miss["reply"] for miss in result["key_fact_misses"])


def test_search_latency_reports_each_size() -> None:
    result = kb._latency((300, 600), reps=2)
    assert set(result) == {"300", "600"}
    for row in result.values():
        assert row["hybrid_ms"] > 0 and row["numpy_brute_force_ms"] > 0
        # ``ratio`` is of the unrounded medians, the ms figures are rounded to 1 us.
        assert row["ratio"] == pytest.approx(
            row["hybrid_ms"] / row["numpy_brute_force_ms"], rel=0.25
        )
        assert row["index_build_s"] >= 0
