"""Many people at once on the embedded model: aggregate tokens/s and time to first token at 1, 4
and 8 concurrent sessions, over the real server (``assistant serve`` in a subprocess with the real
SmolLM2-135M local model, continuous batching on, a private ``redis-server``), driven over real
WebSockets from this process.

Each session is fresh (no history) and asks one question of ``QUESTIONS`` for ``TOKENS`` tokens
(``max_output_tokens``; greedy, the server's default). A level of ``n`` sessions opens them all,
then sends every turn at once (``conversation.item.create`` + ``response.create``) and times, per
session, sending -> its first ``response.output_text.delta`` and -> its
``response.done``. Aggregate tokens/s = the output tokens of all (``usage``) / (first send ->
last done). The level 1 rounds run every question alone, one after the other: their replies are
the greedy single-session runs the batched ones are compared with (``identical``: the share of
batched sessions whose text is exactly their question's reply alone), and their first tokens
the one-session figure the ratios use. Levels run in rounds ``1, 4, 8``, ``repeats`` times
(the machine is shared: the ratios come from the same run), figures over all rounds. The quick
run: one round, 4 of the questions (each asked by two of the 8 sessions), ``QUICK_TOKENS`` each.

A new conversation starts from a copy of the longest prefix another conversation's KV cache holds
(``PrefixCacheLRU.borrow``): a question asked before would prefill one token, the system prompt
shared, only its own words. So that every measured session, alone or batched, prefills the same
(its question after the shared system prompt), the model's kept caches are flushed before each
measured level: ``FLUSH`` sessions at once ask other short questions for 4 tokens, which puts
``FLUSH`` caches holding the system prompt and other words in the LRU in place of all others
(``ASSISTANT_LLM__KV_CACHE_SESSIONS`` is pinned to it). Otherwise the batched sessions, asking
questions just asked alone, borrowed all but one token while the first rounds alone prefilled
13-16, which flattered the first-token ratio.

``python -m bench.concurrency [--quick] [--threads=N]`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, bench_env, free_port, percentile

TOKENS = 48
QUICK_TOKENS = 16
LEVELS = (1, 4, 8)
TIMEOUT_S = 300.0
#: Conversations whose KV cache the bench's server keeps (and sessions a flush opens).
FLUSH = 8
#: What the flushing sessions ask: nothing a measured question starts with past the chat template.
FILLERS = tuple(f"Say the number {n}." for n in range(FLUSH))
#: Questions whose replies run to ``TOKENS`` tokens and more (so every session decodes them all).
QUESTIONS = (
    "Tell me about the history of Paris in detail.",
    "Write a long poem about the sea.",
    "Explain how bees make honey, step by step.",
    "Tell me a long story about a dragon.",
    "Describe the water cycle in detail.",
    "Explain how a steam engine works.",
    "Write a letter to a friend about your holiday.",
    "Describe a walk through a forest in autumn.",
)


def measure_concurrency(quick: bool = False, threads: int = 0) -> dict[str, Any]:
    """Start Redis and the server, run the rounds, stop everything. ``threads``: the model's torch
    threads (``ASSISTANT_LLM__THREADS``; 0: torch's default, one per core). On a machine loaded by
    other work, 1 gives steadier figures: a parallel region waits for its slowest thread."""
    from adapters.memory.embedded_redis import EmbeddedRedis
    from assistant.config import Settings

    repeats, questions, tokens = (
        (1, QUESTIONS[:4], QUICK_TOKENS) if quick else (3, QUESTIONS, TOKENS)
    )
    tmp = Path(tempfile.mkdtemp(prefix="assistant-bench-concurrency-"))
    redis_server, server = None, None
    try:
        redis_server = EmbeddedRedis(tmp / "redis").start()
        env = bench_env(
            ASSISTANT_REDIS_URL=redis_server.url,
            ASSISTANT_LLM__THREADS=str(threads),
            ASSISTANT_LLM__KV_CACHE_SESSIONS=str(FLUSH),
        )
        port = free_port()
        args = ["-m", "assistant.cli", "serve", "--port", str(port), "--log-level", "warning",
                "--data-dir", str(Settings().data_dir)]  # fmt: skip
        server = ServerProcess("concurrency-server", args, port, tmp, env).wait_ready(180)
        result = asyncio.run(_measure(server.url(), repeats, questions, tokens))
    finally:
        if server is not None:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"repeats": repeats, "max_output_tokens": tokens, "threads": threads, **result}


async def _measure(
    url: str, repeats: int, questions: tuple[str, ...], tokens: int
) -> dict[str, Any]:
    await _level(url, [questions[0]], tokens)  # warm-up: a process's first passes are slower
    alone: dict[str, list[str]] = {}  # question -> its replies alone
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in LEVELS}
    for _ in range(repeats):
        for n in LEVELS:
            if n == 1:
                for question in questions:
                    await _flush(url)
                    run = await _level(url, [question], tokens)
                    alone.setdefault(question, []).extend(run["texts"])
                    runs[1].append(run)
            else:
                asked = [questions[i % len(questions)] for i in range(n)]
                await _flush(url)
                runs[n].append(await _level(url, asked, tokens))
    return _report(runs, alone)


async def _flush(url: str) -> None:
    """Replace every KV cache the model keeps with ``FLUSH`` new ones that share only the system
    prompt with the measured questions (see the module docstring)."""
    await _level(url, list(FILLERS), 4, quiet=True)  # 4 tokens: a text delta, surely


async def _level(
    url: str, questions: list[str], tokens: int, quiet: bool = False
) -> dict[str, Any]:
    """One session per question, all turns sent at once; per session its first-token and done
    times (ms from its send), text and output tokens, and the level's wall time."""
    from websockets.asyncio.client import connect

    sockets = [
        await connect(url, compression=None, ping_interval=None, max_size=None) for _ in questions
    ]
    try:
        for ws in sockets:
            await _open(ws, tokens)
        started = time.perf_counter()
        turns = await asyncio.gather(*(_turn(ws, q) for ws, q in zip(sockets, questions)))
        wall = time.perf_counter() - started
    finally:
        for ws in sockets:
            await ws.close()
    tokens_out = sum(t["tokens"] for t in turns)
    if not quiet:
        print(f"concurrency: {len(questions)} at once, {tokens_out / wall:.1f} tokens/s, first "
              f"tokens {min(t['ttft_ms'] for t in turns):.0f}-{max(t['ttft_ms'] for t in turns):.0f}"
              " ms", file=sys.stderr, flush=True)  # fmt: skip
    return {
        "wall_s": wall,
        "ttft_ms": [t["ttft_ms"] for t in turns],
        "tokens": tokens_out,
        "texts": [t["text"] for t in turns],
        "questions": questions,
    }


async def _open(ws: Any, tokens: int) -> None:
    await asyncio.wait_for(ws.recv(), TIMEOUT_S)  # session.created
    update = {"type": "session.update", "session": {"max_output_tokens": tokens}}
    await ws.send(json.dumps(update))
    while json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))["type"] != "session.updated":
        pass


async def _turn(ws: Any, question: str) -> dict[str, Any]:
    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": question}],
    }
    started = time.perf_counter()
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    first, text = None, []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        if event["type"] == "error":
            raise RuntimeError(f"the server answered an error: {event['error']}")
        if event["type"] == "response.output_text.delta":
            first = first or time.perf_counter()
            text.append(event["delta"])
        elif event["type"] == "response.done":
            response = event["response"]
            if response["status"] not in ("completed", "incomplete") or first is None:
                raise RuntimeError(f"the reply did not complete: {response}")
            return {
                "ttft_ms": (first - started) * 1000,
                "tokens": int((response.get("usage") or {}).get("output_tokens", 0)),
                "text": "".join(text),
            }


def _report(runs: dict[int, list[dict[str, Any]]], alone: dict[str, list[str]]) -> dict[str, Any]:
    tokens_per_s, p50, p99 = {}, {}, {}
    for n, rounds in runs.items():
        tokens_per_s[str(n)] = round(
            sum(r["tokens"] for r in rounds) / sum(r["wall_s"] for r in rounds), 1
        )
        ttfts = [ms for r in rounds for ms in r["ttft_ms"]]
        p50[str(n)], p99[str(n)] = round(percentile(ttfts, 50), 1), round(percentile(ttfts, 99), 1)
    one = statistics.median(ms for r in runs[1] for ms in r["ttft_ms"])
    batched = [
        (text, question)
        for n in LEVELS[1:]
        for r in runs[n]
        for text, question in zip(r["texts"], r["questions"])
    ]
    same = sum(text in alone[question] for text, question in batched)
    steady = all(len(set(texts)) == 1 for texts in alone.values())  # alone, always the same?
    return {
        "tokens_per_s": tokens_per_s,
        "ttft_p50_ms": p50,
        "ttft_p99_ms": p99,
        "ttft_one_session_ms": round(one, 1),
        "speedup_8": round(tokens_per_s["8"] / tokens_per_s["1"], 2),
        "ttft_p99_ratio_8": round(p99["8"] / one, 2),
        "identical": round(same / len(batched), 3) if batched else None,
        "identical_sessions": f"{same}/{len(batched)}",
        "alone_runs_agree": steady,
        "server": "assistant serve: SmolLM2-135M (transformers_local, continuous batching), own redis-server",
    }


if __name__ == "__main__":
    threads = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--threads=")), 0)
    print(json.dumps(measure_concurrency("--quick" in sys.argv[1:], threads), indent=2))
