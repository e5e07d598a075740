"""Entry ``gateway``: text turns per second and turn latency of the real server with an instant
(scripted) model, through the real WebSocket + orchestrator + Redis path, side by side with the
bare FastAPI echo server of ``bench.echo_server`` (the framework's ceiling on this machine), at
1, 100 and 1,000 concurrent sessions; and the memory of an idle connected session.

What runs, all on 127.0.0.1 and all stopped in ``finally``: a private ``redis-server`` (the same
``EmbeddedRedis`` ``assistant serve`` uses by default, data in a temp dir, append-only file on),
``assistant serve`` (``ASSISTANT_LLM__ADAPTER=scripted``, a fixed 6-word reply) pointed at it, the
echo server, and per run ``--clients`` load-generator processes (``bench.loadgen``).

Both servers run the way they are deployed on this machine: ``--workers`` uvicorn worker
processes, one per core (``GatewayConfig.workers``, the CPU count up to 4), the echo server with as
many as the real one. Any worker serves any session (its memory is in Redis), so this is the
server's throughput on the machine. The same comparison with one worker each (one core per
server: the CPU cost of a turn decides) is reported as ``single_worker`` at the top concurrency
(not in a quick run).

Fairness: the load generator is a separate process (it never shares a server's loop); Redis, for
the gateway only, takes its share of the same cores: that is part of the real path's cost. Both
servers get the same client, the same uvicorn defaults (log level ``warning`` for both), one
after the other at each level (the order alternates between repetitions), and each level starts
with one unmeasured warm-up turn per session (it opens the store's Redis connections). CPU and
memory are summed over a server's processes. The client CPU use is reported: a client near 1.0
core means a number is client-bound (a lower bound for that server).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import (
    REPLY,
    ServerProcess,
    bench_env,
    free_port,
    raise_nofile_limit,
    tree_rss_kb,
)
from bench.drive import drive


@dataclass
class GatewayConfig:
    #: Concurrency levels: sessions running turns at the same time.
    sessions: list[int] = field(default_factory=lambda: [1, 100, 1000])
    #: Measured turns per session (the same conversation length at every level).
    turns: int = 10
    #: Measured turns per level at least: below it, each concurrent slot runs several sessions
    #: one after the other (``rounds``), all connected before the clock starts.
    total_turns: int = 10_000
    reps: int = 3
    idle_sessions: int = 1000
    clients: int = 1
    timeout_s: float = 60.0
    #: Worker processes of each server (one per core, up to 4).
    workers: int = field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)))
    #: Also compare one worker each at the top concurrency (when ``workers`` > 1).
    single_worker: bool = True

    @classmethod
    def quick(cls) -> GatewayConfig:
        # Three repetitions, the median kept: one short run on a shared machine can be far off.
        # (Five took 40 % of the quick bench's time: at 1,000 sessions a run takes ~5 s, and the
        # one-worker comparison runs that level again.) 400 turns a level: at 1 session each
        # turn waits for Redis's fsync (``appendfsync always``), and 1,000 of them one after the
        # other took 60-90 s of the entry's 135-210 s for a latency 400 measure as well; 1,000
        # sessions still run 3,000. No one-worker comparison: at 1,000 sessions it took 40 s of
        # the entry's ~100 (2-core AMD EPYC, 2026-12-04) and the quick bench passed 5 minutes;
        # the full run keeps it.
        return cls(turns=3, total_turns=400, reps=3, idle_sessions=500, single_worker=False)

    def rounds_for(self, sessions: int) -> int:
        return max(1, math.ceil(self.total_turns / (sessions * max(self.turns, 1))))


class Stack:
    """Redis, the real server and the echo server, started together and always stopped."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.tmp = Path(tempfile.mkdtemp(prefix="assistant-bench-"))
        self.redis: Any = None
        self.gateway: ServerProcess | None = None
        self.echo: ServerProcess | None = None

    def start(self) -> Stack:
        from adapters.memory.embedded_redis import EmbeddedRedis

        self.redis = EmbeddedRedis(self.tmp / "redis").start()
        env = bench_env(
            ASSISTANT_LLM__ADAPTER="scripted",
            ASSISTANT_LLM__MODEL=REPLY,
            ASSISTANT_REDIS_URL=self.redis.url,
        )
        port = free_port()
        self.gateway = ServerProcess(
            "gateway",
            ["-m", "assistant.cli", "serve", "--port", str(port), "--data-dir", str(self.tmp),
             "--log-level", "warning", "--workers", str(self.workers)],
            port, self.tmp, env,
        )  # fmt: skip
        port = free_port()
        self.echo = ServerProcess(
            "echo", ["-m", "bench.echo_server", "--port", str(port), "--log-level", "warning",
                     "--workers", str(self.workers)],
            port, self.tmp, bench_env(),
        )  # fmt: skip
        self.gateway.wait_ready()
        self.echo.wait_ready()
        return self

    def stop(self, keep_logs: bool = False) -> None:
        for server in (self.gateway, self.echo):
            if server is not None:
                server.stop()
        if self.redis is not None:
            self.redis.stop()
        if not keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- the entry ------------------------------------------------------------------------------------


async def idle_kb_per_session(
    server: ServerProcess, sessions: int, timeout_s: float
) -> dict[str, Any]:
    """RSS of the server before and after ``sessions`` connected idle sessions, divided."""
    await asyncio.sleep(0.5)
    before = tree_rss_kb(server.pid)
    seen: dict[str, int] = {}

    async def measure() -> None:
        await asyncio.sleep(1.0)  # let the last handshakes settle
        seen["after"] = tree_rss_kb(server.pid)

    run = await drive(server.url(), sessions, 0, pids={}, warmup=False, timeout_s=timeout_s,
                      on_ready=measure)  # fmt: skip
    connected = sessions - run["failed_sessions"]
    per = (seen["after"] - before) / connected if connected else 0.0
    return {"sessions": connected, "rss_before_kb": before, "rss_after_kb": seen["after"],
            "kb_per_session": round(per, 2)}  # fmt: skip


async def _run(stack: Stack, config: GatewayConfig, name: str, sessions: int) -> dict[str, Any]:
    assert stack.gateway is not None and stack.echo is not None
    real = name == "gateway"
    server = stack.gateway if real else stack.echo
    pids = {"server": server.pid, **({"redis": stack.redis.pid} if real else {})}
    turns, rounds = config.turns, config.rounds_for(sessions)
    run = await drive(
        server.url(), sessions, turns, rounds=rounds, pids=pids, clients=config.clients,
        timeout_s=config.timeout_s, redis_url=stack.redis.url if real else None,
    )  # fmt: skip
    print(f"  gateway: {name:7} {sessions:5} sessions x {rounds} rounds x {turns} turns: "
          f"{run['turns_per_s']:9.1f} turns/s, p99 {run['p99_ms']:.1f} ms", file=sys.stderr)
    return run


async def _level(stack: Stack, config: GatewayConfig, sessions: int) -> dict[str, Any]:
    """Both servers at one concurrency, ``reps`` times, alternating which goes first."""
    runs: dict[str, list[dict[str, Any]]] = {"gateway": [], "echo": []}
    for rep in range(config.reps):
        for name in ("echo", "gateway") if rep % 2 == 0 else ("gateway", "echo"):
            runs[name].append(await _run(stack, config, name, sessions))
    gateway, echo = _median_run(runs["gateway"]), _median_run(runs["echo"])
    return {
        "sessions": sessions,
        "ratio_vs_echo": _ratio(gateway["turns_per_s"], echo["turns_per_s"]),
        # Turns/s if each server had a core to itself: echo's CPU per turn over the gateway's.
        "cpu_ratio_vs_echo": _ratio(
            echo["server_cpu_ms_per_turn"], gateway["server_cpu_ms_per_turn"]
        ),
        "gateway": gateway,
        "echo": echo,
    }


def _ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline else 0.0


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median turns/s (all runs' turns/s are kept alongside)."""
    ordered = sorted(runs, key=lambda r: r["turns_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        chosen["turns_per_s_all_reps"] = [r["turns_per_s"] for r in runs]
        chosen["turns_per_s_median"] = median(r["turns_per_s"] for r in runs)
    return chosen


async def _measure(stack: Stack, config: GatewayConfig) -> dict[str, Any]:
    assert stack.gateway is not None and stack.echo is not None
    for server in (stack.gateway, stack.echo):  # first imports, caches, connections
        await drive(server.url(), 1, 1, pids={}, timeout_s=config.timeout_s)
    # Idle memory first, on fresh processes (the freed memory of a load run would be reused).
    idle = {
        name: await idle_kb_per_session(server, config.idle_sessions, config.timeout_s)
        for name, server in (("gateway", stack.gateway), ("echo", stack.echo))
    }
    levels = [await _level(stack, config, sessions) for sessions in config.sessions]
    return build_report(config, levels, idle)


def _setup(config: GatewayConfig) -> dict[str, Any]:
    return {
        "reply": REPLY,
        "turns_per_session": config.turns,
        "min_turns_per_level": config.total_turns,
        "reps": config.reps,
        "load_generator_processes": config.clients,
        "workers": config.workers,
        "server": f"assistant serve --workers {config.workers}, ASSISTANT_LLM__ADAPTER=scripted, "
        "own redis-server",
        "baseline": f"bench.echo_server --workers {config.workers}: FastAPI, the same uvicorn "
        "defaults, no Redis, no model",
        "client": "websockets asyncio client, no compression, no keepalive pings",
    }


def build_report(
    config: GatewayConfig, levels: list[dict[str, Any]], idle: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The top-level numbers are those of the largest concurrency level run; ``sessions`` is the
    largest level at which every gateway session completed all its turns."""
    top = levels[-1]
    gw, echo = top["gateway"], top["echo"]
    reached = [level["sessions"] for level in levels if level["gateway"]["complete"]]
    return {
        "turns_per_s": gw["turns_per_s"],
        "echo_turns_per_s": echo["turns_per_s"],
        "ratio_vs_echo": top["ratio_vs_echo"],
        "cpu_ratio_vs_echo": top["cpu_ratio_vs_echo"],
        "workers": config.workers,
        "p50_ms": gw["p50_ms"],
        "p99_ms": gw["p99_ms"],
        "echo_p50_ms": echo["p50_ms"],
        "echo_p99_ms": echo["p99_ms"],
        "sessions": max(reached, default=0),
        "top_level_sessions": top["sessions"],
        "complete": gw["complete"],
        "failed_sessions": gw["failed_sessions"],
        "idle_session_kb": idle["gateway"]["kb_per_session"],
        "echo_idle_session_kb": idle["echo"]["kb_per_session"],
        "server_cpu_ms_per_turn": gw["server_cpu_ms_per_turn"],
        "echo_server_cpu_ms_per_turn": echo["server_cpu_ms_per_turn"],
        "redis_cpu_ms_per_turn": gw["redis_cpu_ms_per_turn"],
        "setup": _setup(config),
        "levels": levels,
        "idle": idle,
    }


def run_gateway(config: GatewayConfig) -> dict[str, Any]:
    raise_nofile_limit()
    started = time.monotonic()
    report = _with_stack(config.workers, lambda stack: _measure(stack, config))
    if config.workers > 1 and config.single_worker:
        top = max(config.sessions)
        level = _with_stack(1, lambda stack: _level(stack, config, top))
        report["single_worker"] = {
            "sessions": top,
            "ratio_vs_echo": level["ratio_vs_echo"],
            "cpu_ratio_vs_echo": level["cpu_ratio_vs_echo"],
            "turns_per_s": level["gateway"]["turns_per_s"],
            "echo_turns_per_s": level["echo"]["turns_per_s"],
            "server_cpu_ms_per_turn": level["gateway"]["server_cpu_ms_per_turn"],
            "echo_server_cpu_ms_per_turn": level["echo"]["server_cpu_ms_per_turn"],
            "p99_ms": level["gateway"]["p99_ms"],
            "complete": level["gateway"]["complete"],
        }
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def _with_stack(
    workers: int, measure: Callable[[Stack], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Start a stack with ``workers`` per server, run ``measure`` on it, always stop it."""
    stack = Stack(workers)
    failed = False
    try:
        stack.start()
        return asyncio.run(measure(stack))
    except Exception as exc:
        failed = True
        raise RuntimeError(f"{type(exc).__name__}: {exc} (server logs in {stack.tmp})") from exc
    finally:
        stack.stop(keep_logs=failed)
