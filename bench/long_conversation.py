"""Time to first token late in a long conversation, past the prompt budget (``ttft_by_turn``'s
``turn_60_*`` figures): the real orchestrator over a private redis-server, the local model, a
small context budget (``prompt.context_tokens``) that the conversation passes long before its
last turn, so its oldest messages are summarised in the background (``assistant.summaries``) and
dropped in chunks, the prompt's prefix (and the model's KV cache of it) kept between two drops.

First token is timed from ``Orchestrator.respond`` to its first delta (prompt building and the
store's round trips included). The machine is shared and noisy, so the last ``repeats`` turns of
the long conversation (turns 56-60 of 60) are each measured right after the first turn of a new
session, and ``turn_60_ratio`` is the median of those pairs' ratios (target <= 1.5). Each
measured turn starts with no summary being made (the bench waits for it first: the figure is a
turn between two drops; a drop turn's cost is the new prefix, reported apart as
``drop_turn_ms``, the median of the turns right after a new summary).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

BUDGET = 512  # tokens: 60 short turns take about 2.5 times that
QUESTIONS = (
    "Hi, I need help with an order.",
    "My order number is PP-204816.",
    "It was supposed to arrive on Monday.",
    "Can you check with the courier?",
    "What colour is the sky on a clear day?",
    "Is there a tracking page?",
    "How many days are in a week?",
    "What is your return policy?",
    "How long do refunds take?",
    "Name a planet with rings.",
    "Can I change the delivery address?",
    "What do bees make?",
)


async def measure_long_conversation(
    lm: Any, *, turns: int = 60, max_new_tokens: int = 8, repeats: int = 5, budget: int = BUDGET
) -> dict[str, Any]:
    """``lm``: a loaded local model (the ``ttft_by_turn`` one). Returns the ``turn_60_*`` figures."""
    from adapters.memory.embedded_redis import EmbeddedRedis
    from adapters.memory.redis import RedisSessionStore
    from assistant.config import LLMSettings, MemorySettings, PromptSettings
    from assistant.orchestrator import Orchestrator

    with tempfile.TemporaryDirectory(prefix="bench-long-") as folder:
        redis = EmbeddedRedis(folder).start()
        store = RedisSessionStore.from_url(redis.url)
        try:
            orchestrator = Orchestrator(
                lm, store, llm_settings=LLMSettings(max_new_tokens=max_new_tokens),
                prompt_settings=PromptSettings(context_tokens=budget),
                memory_settings=MemorySettings(),
            )  # fmt: skip
            return await _conversation(orchestrator, turns, repeats, budget)
        finally:
            await store.aclose()
            redis.stop()


async def _conversation(orchestrator: Any, turns: int, repeats: int, budget: int) -> dict[str, Any]:
    summaries = orchestrator.summaries
    long = (await orchestrator.open_session()).id
    await _turn(orchestrator, (await orchestrator.open_session()).id, QUESTIONS[0])  # warm-up
    drop_turns: list[float] = []
    seen = 0  # summaries made before the long conversation's previous turn

    async def long_turn(turn: int) -> tuple[float, Any]:
        nonlocal seen
        await summaries.idle()  # a turn between two drops: no summary being made
        dropped_now, seen = summaries.made > seen, summaries.made
        ms, run = await _turn(orchestrator, long, QUESTIONS[(turn - 1) % len(QUESTIONS)])
        if dropped_now:  # the first turn with a new summary: its prefix is new
            drop_turns.append(ms)
        return ms, run

    for turn in range(1, turns - repeats + 1):
        await long_turn(turn)
    first, last, ratios, prompt_tokens = [], [], [], 0
    for r, turn in enumerate(range(turns - repeats + 1, turns + 1)):
        await summaries.idle()
        one, _ = await _turn(orchestrator, (await orchestrator.open_session()).id,
                             QUESTIONS[r % len(QUESTIONS)])  # fmt: skip
        ms, run = await long_turn(turn)
        first.append(one)
        last.append(ms)
        ratios.append(round(ms / one, 3))
        prompt_tokens = run.prompt.tokens
    stored = await orchestrator.store.load(long)
    overhead = orchestrator.llm.message_overhead_tokens()
    history = sum(orchestrator.token_counter(m.text) + overhead for m in stored.messages)
    return {
        "turn_60_ms": round(statistics.median(last), 1),
        "turn_60_turn1_ms": round(statistics.median(first), 1),
        "turn_60_ratio": round(statistics.median(ratios), 3),
        "turn_60_ratio_by_repeat": ratios,
        "turn_60_turns": turns,
        "turn_60_budget": budget,
        "turn_60_history_tokens": history,  # the whole conversation: past the budget
        "turn_60_prompt_tokens": prompt_tokens,
        "turn_60_summaries": summaries.made,
        "turn_60_summaries_failed": summaries.failed,
        "drop_turn_ms": round(statistics.median(drop_turns), 1) if drop_turns else None,
    }


async def _turn(orchestrator: Any, session_id: str, text: str) -> tuple[float, Any]:
    """One turn: ms from ``respond`` to its first delta, and the run."""
    from assistant.messages import Message

    await orchestrator.add_item(session_id, Message.from_text("user", text))
    run = orchestrator.start_response()
    started, first = time.perf_counter(), None
    async for _ in orchestrator.respond(session_id, run):
        if first is None:
            first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no token for {text!r} ({run.status}, {run.error})")
    return (first - started) * 1000, run
