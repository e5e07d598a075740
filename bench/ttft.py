"""Time to first token by turn, for the local model, with and without KV cache reuse.

A scripted conversation of ``turns`` short user questions goes through the public
``LanguageModel.stream()`` API with ``Prompt(messages, cache_key="bench")``; the replies are the
model's own (greedy, a few tokens). TTFT (``Generation.first_token_s``) is taken at turn 1 and at
the last turn, with reuse (the adapter's per-session cache) and without (a second adapter on the
same loaded model with ``kv_cache_sessions=0``: a cold worker's full encode).

The machine is shared and noisy, and other work loads it in bursts: measured in two separate
phases, turn 1 and the last turn could each fall in or out of one (quick ratios from 0.17 to 3.6
were seen for the same code). So every repeat measures both, a second apart: turn 1 (a
new conversation), then the turn before the last replayed (which puts the cache back in the state a
real conversation has there: previous prompt and reply), then the last turn; each with reuse and
without, back to back, alternating which goes first. Reported, over 7 repeats (5 in a quick run,
and decoding there 3 repeats of 24 tokens: the quick bench must stay under 5 minutes; a repeat
takes about a second): the median TTFTs, and ``ratio_turn20_vs_turn1``, the median of the per-repeat
ratios (all of them in ``ratio_turn20_vs_turn1_by_repeat``).

Single-stream decoding (``bench.decode``): ``tokens_per_s`` of the local model in the faster
precision this CPU has (``decode_precision``: ``bf16`` with avx512_bf16 or AMX, else
``int8-decode``; ``bench.decode.adopted_precision``), ``tokens_per_s_fp32`` of the default (fp32;
both with their layers prepacked) and ``tokens_per_s_baseline`` of fp32 with the plain products
(``prepack=False``: the path before issue 15), through ``stream()``, one after the other in every
repeat; ``decode_speedup`` (faster / baseline), ``decode_speedup_fp32`` (default / baseline) and
``decode_speedup_vs_fp32`` (faster / default) are medians of the per-repeat ratios; a full run
adds ``decode_options``, every option the CPU offers (fp32, bf16, int8 dynamic, int8-decode, eager
attention) in bare forward passes with its greedy agreement with fp32.

Late in a long conversation (``bench.long_conversation``): ``turn_60_ms``, the first token at turn
60 of a conversation past a 512-token budget (its oldest messages summarised in the background and
dropped in chunks), and ``turn_60_ratio`` to a new session's first turn, measured in pairs (5; the
quick run: turn 40, 3 pairs: the conversation past the budget and summarised all the same, its
prompt in the same band, which the budget bounds; ``turn_60_turns`` says which turn).

``python -m bench.ttft [--quick] [--threads=N]`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from typing import Any

from bench.decode import (
    LONG_PROMPTS,
    adopted_precision,
    median_ratio,
    stream_side_by_side,
    stream_tokens_per_s,
    survey,
)

KEY = "bench"
SYSTEM = "You are a helpful assistant. Answer briefly and clearly."
QUESTIONS = (
    "What is the capital of France?",
    "And the capital of Italy?",
    "Name a famous river in Europe.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Give me a synonym for happy.",
    "What is two plus three?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Name a planet with rings.",
    "What do bees make?",
    "Translate 'thank you' into Spanish.",
    "What is the largest ocean?",
    "How many days are in a week?",
    "What gas do plants take in?",
    "Name a primary colour.",
    "What is the opposite of cold?",
    "Which animal is known as the king of the jungle?",
    "What is the freezing point of water in Fahrenheit?",
    "Summarise our chat in one sentence.",
)


def measure_ttft_by_turn(
    model_path: str | None = None, *, turns: int = 20, quick: bool = False, threads: int = 0
) -> dict[str, Any]:
    """Load the local model (default: the prepared SmolLM2-135M-Instruct), play the conversation and
    return TTFT at turn 1 and turn ``turns`` (key names say 20 whatever ``turns`` is), in ms.
    ``threads``: torch threads (0: torch's default). On a machine shared with other busy processes,
    1 thread gives steadier figures: a parallel region waits for its slowest, descheduled thread."""
    from adapters.llm.transformers_local import TransformersLocalLM
    from bench.long_conversation import measure_long_conversation

    path = model_path or _default_path()
    reusing = TransformersLocalLM.from_path(path, threads=threads)
    cold = TransformersLocalLM(reusing.model, reusing.tokenizer, kv_cache_sessions=0)
    max_new_tokens, repeats = (4, 5) if quick else (16, 7)
    result = asyncio.run(_measure(reusing, cold, max(turns, 2), max_new_tokens, repeats))
    long_turns, long_repeats = (40, 3) if quick else (60, 5)  # quick: past the budget too
    result.update(
        asyncio.run(
            measure_long_conversation(
                reusing, turns=long_turns, repeats=long_repeats, max_new_tokens=max_new_tokens
            )
        )
    )
    fast = TransformersLocalLM.from_path(path, threads=threads, precision=adopted_precision())
    plain = TransformersLocalLM.from_path(path, threads=threads, prepack=False)
    decoding = asyncio.run(_decoding({"fast": fast, "fp32": reusing, "plain": plain}, quick))
    # Whether the default path multiplies a lone sequence's rows by MKL (prepacked.py says why).
    decoding["one_row_plain"] = any(getattr(m, "one_row_plain", False) for m in reusing.model.modules())
    del fast, plain
    if not quick:  # every option the CPU offers, bare forward passes: see bench.decode
        decoding["decode_options"] = survey(path)
    import torch

    return {**result, **decoding, "threads": torch.get_num_threads()}


async def _decoding(lms: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Single-stream decode rates side by side: ``fast`` (the adopted precision, prepacked),
    ``fp32`` (the default: fp32, prepacked) and ``plain`` (fp32 with the plain products: the path
    of the day issue 15 was filed, the baseline)."""
    tokens, repeats = (24, 3) if quick else (64, 7)
    for name in ("fast", "plain"):  # warm-up: a new model's first passes
        await stream_tokens_per_s(lms[name], LONG_PROMPTS[0], 4)
    rates = await stream_side_by_side(lms, tokens, repeats)
    fast, fp32, plain = rates["fast"], rates["fp32"], rates["plain"]
    return {
        "tokens_per_s": _median(fast),
        "tokens_per_s_baseline": _median(plain),
        "decode_speedup": median_ratio(fast, plain),
        "decode_speedup_by_repeat": [round(f / b, 3) for f, b in zip(fast, plain)],
        "tokens_per_s_fp32": _median(fp32),
        "decode_speedup_fp32": median_ratio(fp32, plain),
        "decode_speedup_vs_fp32": median_ratio(fast, fp32),
        "decode_precision": adopted_precision(),
        "decode_baseline": "fp32, plain products (ASSISTANT_LLM__PREPACK=false)",
        "decode_tokens": tokens,
    }


def _default_path() -> str:
    from adapters.llm import smollm2
    from assistant.config import Settings

    path = smollm2.prepared_dir(Settings().models_dir)
    if not smollm2.is_prepared(Settings().models_dir):
        raise RuntimeError(f"no prepared model in {path}: run `assistant prepare-models` first")
    return str(path)


async def _measure(
    reusing: Any, cold: Any, turns: int, max_new_tokens: int, repeats: int
) -> dict[str, Any]:
    from assistant.ports import PromptMessage

    messages = [PromptMessage("system", SYSTEM)]
    first = [*messages, PromptMessage("user", QUESTIONS[0])]
    for _ in range(2):  # warm-up: the first passes of a process (and of a shape) are slower
        await _turn(cold, first, None, max_new_tokens)
    previous: list[PromptMessage] = []
    for turn in range(turns - 1):  # the conversation up to the last turn, with reuse
        previous = [*messages, PromptMessage("user", QUESTIONS[turn % len(QUESTIONS)])]
        text, _ = await _turn(reusing, previous, KEY, max_new_tokens)
        messages = [*previous, PromptMessage("assistant", text)]
    last = [*messages, PromptMessage("user", QUESTIONS[(turns - 1) % len(QUESTIONS)])]
    ms: dict[str, list[float]] = {"turn1": [], "turn1_cold": [], "last": [], "last_cold": []}
    for r in range(repeats):  # turn 1 and the last turn in every repeat: see the module docstring
        pair = (reusing, cold, r, max_new_tokens)
        turn1 = await _side_by_side(*pair, first, f"{KEY}-turn1-{r}")  # a new conversation
        await _turn(reusing, previous, KEY, max_new_tokens)  # the cache as the conversation left it
        last_turn = await _side_by_side(*pair, last, KEY)
        for name, value in zip(ms, (*turn1, *last_turn)):
            ms[name].append(value)
    ratios = [round(b / a, 3) for a, b in zip(ms["turn1"], ms["last"])]
    ratios_cold = [b / a for a, b in zip(ms["turn1_cold"], ms["last_cold"])]
    return {
        "turn1_ms": _median(ms["turn1"]),
        "turn20_ms": _median(ms["last"]),
        "turn20_ms_no_cache": _median(ms["last_cold"]),
        "turn20_prompt_tokens": len(reusing._prompt_ids(last)),
        "turn20_prefill_tokens": reusing.prefill_tokens,
        "ratio_turn20_vs_turn1": round(statistics.median(ratios), 3),
        "ratio_turn20_vs_turn1_by_repeat": ratios,
        "turn1_ms_no_cache": _median(ms["turn1_cold"]),
        "ratio_turn20_no_cache_vs_turn1": round(statistics.median(ratios_cold), 3),
        "turns": turns,
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "kv_cache_hits": reusing.kv_cache.hits,
        "kv_cache_misses": reusing.kv_cache.misses,
    }


async def _side_by_side(
    reusing: Any, cold: Any, r: int, max_new_tokens: int, messages: list[Any], key: str
) -> tuple[float, float]:
    """TTFT in ms of ``messages`` with reuse (cache key ``key``) and without, back to back; which
    goes first alternates with the repeat ``r``."""
    runs = [(reusing, key), (cold, None)]
    ttft: dict[Any, float] = {}
    for lm, cache_key in runs if r % 2 == 0 else runs[::-1]:
        _, generation = await _turn(lm, messages, cache_key, max_new_tokens)
        ttft[lm] = generation.first_token_s * 1000
    return ttft[reusing], ttft[cold]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


async def _turn(
    lm: Any, messages: list[Any], cache_key: str | None, max_new_tokens: int
) -> tuple[str, Any]:
    """One turn through the public API: the reply text and its ``Generation``."""
    from assistant.ports import GenerationOptions, Prompt

    options = GenerationOptions(max_new_tokens=max_new_tokens, temperature=0.0)
    generation = lm.stream(Prompt(tuple(messages), cache_key=cache_key), options)
    text = "".join([delta async for delta in generation])
    if generation.first_token_s is None:  # an empty reply: no first token to time
        raise RuntimeError(f"the model gave no token for: {messages[-1].text!r}")
    return text, generation


if __name__ == "__main__":
    threads = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--threads=")), 0)
    result = measure_ttft_by_turn(quick="--quick" in sys.argv[1:], threads=threads)
    print(json.dumps(result, indent=2))
