"""One measured run of the gateway benchmark: start ``bench.loadgen`` processes against a server,
let them connect and warm up, read the server's (and Redis's) CPU and Redis's command counts
around the measured turns only, and summarise what the load generators report (turns/s,
p50/p99, frames and CPU per turn, errors)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import bench_env, percentile, tree_cpu_s
from bench.redis_trips import command_counts, commands_delta


async def _line(proc: asyncio.subprocess.Process, timeout_s: float) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
    if not raw:
        raise RuntimeError(f"load generator exited with {await proc.wait()} before answering")
    return json.loads(raw)


async def _tell(procs: list[asyncio.subprocess.Process], command: str) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(command.encode() + b"\n")
        await proc.stdin.drain()


async def _spawn_clients(
    url: str, sessions: int, rounds: int, turns: int, clients: int, warmup: bool, timeout_s: float
) -> list[asyncio.subprocess.Process]:
    """``clients`` load-generator processes sharing ``sessions`` between them."""
    shares = [sessions // clients + (1 if i < sessions % clients else 0) for i in range(clients)]
    procs = []
    for share in (s for s in shares if s):
        args = ["-m", "bench.loadgen", "--url", url, "--sessions", str(share), "--rounds",
                str(rounds), "--turns", str(turns), "--timeout", str(timeout_s)]  # fmt: skip
        args += ["--warmup"] if warmup else []
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024, env=bench_env(),
        ))  # fmt: skip
    return procs


async def drive(
    url: str,
    sessions: int,
    turns: int,
    *,
    rounds: int = 1,
    pids: dict[str, int],
    clients: int = 1,
    warmup: bool = True,
    timeout_s: float = 60.0,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Open ``sessions x rounds`` sessions, then run ``turns`` turns on each, ``sessions`` at
    once (see ``bench.loadgen``). The CPU seconds of ``pids`` (server, redis) and the commands
    Redis ran are read around the measured phase only."""
    phase_s = timeout_s * rounds * (turns + 2) + 60
    procs = await _spawn_clients(url, sessions, rounds, turns, clients, warmup, timeout_s)
    try:
        ready = [await _line(p, phase_s) for p in procs]
        if on_ready is not None:
            await on_ready()
        counts0 = command_counts(redis_url) if redis_url else {}
        cpu0 = {name: tree_cpu_s(pid) for name, pid in pids.items()}
        await _tell(procs, "go")
        results = [await _line(p, phase_s) for p in procs]
        cpu1 = {name: tree_cpu_s(pid) for name, pid in pids.items()}
        counts1 = command_counts(redis_url) if redis_url else {}
        await _tell(procs, "close")
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    cpu = {n: cpu1[n] - cpu0[n] for n in pids}
    out = summarize(sessions, rounds, turns, ready, results, cpu)
    if redis_url:
        commands = commands_delta(counts0, counts1)["total"]
        out["redis_commands_per_turn"] = round(commands / out["turns"], 3) if out["turns"] else 0.0
    return out


def summarize(
    sessions: int, rounds: int, turns: int, ready: list[dict[str, Any]],
    results: list[dict[str, Any]], cpu: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    """One run's numbers from the load generators' answers and the CPU seconds of ``cpu``."""
    latencies = [x for r in results for x in r["latencies_ms"]]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    failed = sum(r["failed_sessions"] for r in results)
    done = len(latencies)

    def per_turn(total: float, digits: int = 2) -> float:
        return round(total / done, digits) if done else 0.0

    def per_s(total: float) -> float:
        return round(total / wall, 3) if wall > 0 else 0.0

    out: dict[str, Any] = {
        "sessions": sessions,
        "rounds": rounds,
        "turns_per_session": turns,
        "failed_sessions": failed,
        "complete": failed == 0 and done == sessions * rounds * turns,
        "turns": done,
        "wall_s": round(wall, 4),
        "turns_per_s": round(per_s(done), 1),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "mean_ms": per_turn(sum(latencies), 3),
        "connect_s": round(max(r["connect_s"] for r in ready), 3),
        "frames_per_turn": per_turn(sum(r["frames"] for r in results)),
        "chars_per_turn": per_turn(sum(r["chars"] for r in results), 1),
        "client_cpu_cores": per_s(sum(r["client_cpu_s"] for r in results)),
    }
    for name, used in cpu.items():
        out[f"{name}_cpu_cores"] = per_s(used)
        out[f"{name}_cpu_ms_per_turn"] = per_turn(used * 1000, 4)
    errors: dict[str, int] = {}
    for r in results:
        for kind, count in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    if errors:
        out["errors"] = errors
        out["first_error"] = next((r["first_error"] for r in results if r.get("first_error")), None)
    return out
