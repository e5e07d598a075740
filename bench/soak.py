"""Entry ``soak`` (``assistant bench --soak``, or ``--only soak``; not in the default or quick
bench): many sessions taking mixed turns against a real server for minutes, watching whether its
memory and file descriptors stay flat and whether anything fails.

Two runs, one after the other, each on its own ``assistant serve`` process with its own private
``redis-server`` (the one ``serve`` starts itself, data in a temporary directory; the prepared
models are linked in, not copied):

- **scripted**: ``sessions`` clients on the scripted model (``ASSISTANT_LLM__ADAPTER=scripted``,
  an echo of the user's words, so the model costs nothing), ``workers`` worker processes;
- **real model**: ``real_sessions`` clients on the default SmolLM2 (one worker; replies cut at
  ``real_max_output_tokens``; conversations of ``real_conversation_turns``, so they end and the
  model's KV caches of ended ones are replaced within the run, as they are on a server that
  runs for days), for ``real_minutes``. ``real_sessions=0`` skips it.

The server runs with ``OMP_NUM_THREADS=1`` unless this process's environment sets it: two torch
threads per worker on cores the workers share slowed image encodings past the model timeout.

The clients (``bench.soak_client``) run in this process: text turns mostly, an image now and
then, a hang-up and resume now and then, each client waiting for its reply and then thinking
``think_s`` (0.5x-1.5x at random), so many sessions are a steady load, not a flood. Every
process of the server's pid tree (``bench.soak_procs``) is sampled at the start, every
``sample_s`` (a minute) and at the end: RSS, open file descriptors, Redis's ``used_memory``, and
how full each worker's bounded caches are (``bench.soak_caches``, from ``/metrics``).

The warm-up is over at the first sample by which every cache that fills up during the run has
been full (``soak_caches.warm_index``; one that never fills does not hold it back, its growth is
counted); ``growth_after_warmup`` per process is (end - value then) / value
then (``growth_after_first_minute``: from the sample after the first minute, for comparison).
``findings`` lists what misses the issue's target: any error, a process gone or new, a server
process other than Redis growing 5 % or more after warm-up, a warm-up not over by the end or
past half the run (too short a run to judge; ``warm_up.caches_filling`` says what it waited
for). Redis holds the conversations, so its memory grows with what is stored and is
reported, not judged.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ServerProcess,
    bench_env,
    free_port,
    percentile,
    raise_nofile_limit,
    tail,
)
from bench.soak_client import ClientPlan, SoakClient, Tally, image_pool
from bench.soak_procs import ProcessWatch, wait_for_workers

#: Growth after warm-up that counts as a finding (the issue's target is below it).
GROWTH_LIMIT = 0.05
_REDIS_URL = re.compile(r"private redis-server at (redis://\S+)")


@dataclass
class SoakConfig:
    minutes: float = 10.0
    sessions: int = 200
    think_s: float = 1.0
    conversation_turns: int = 40
    image_every: int = 20
    resume_every: int = 25
    workers: int = field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)))
    real_sessions: int = 4
    real_minutes: float | None = None  # None: ``minutes``
    real_max_output_tokens: int = 24
    real_conversation_turns: int = 8  # 40 turns on the real model take the whole ten minutes
    sample_s: float = 60.0
    timeout_s: float = 60.0

    @classmethod
    def quick(cls) -> SoakConfig:
        return cls(minutes=2.0, sessions=50, real_sessions=2)


def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Both runs; the scripted one's figures at the top, the real model's under ``real_model``
    (``sessions=0`` skips the scripted run, ``real_sessions=0`` the real one)."""
    raise_nofile_limit()
    plan = ClientPlan(
        think_s=config.think_s, conversation_turns=config.conversation_turns,
        image_every=config.image_every, resume_every=config.resume_every,
        timeout_s=config.timeout_s,
    )  # fmt: skip
    report: dict[str, Any] = {"findings": []}
    if config.sessions > 0:
        scripted = _soak_one(
            "scripted", config.sessions, config.minutes, config, plan,
            {"ASSISTANT_LLM__ADAPTER": "scripted"}, config.workers,
        )  # fmt: skip
        report.update(scripted, findings=_findings(scripted, "scripted"))
    if config.real_sessions > 0:
        plan.max_output_tokens = config.real_max_output_tokens
        plan.conversation_turns = config.real_conversation_turns
        plan.timeout_s = max(config.timeout_s, 180.0)
        minutes = config.real_minutes if config.real_minutes is not None else config.minutes
        real = _soak_one("real", config.real_sessions, minutes, config, plan, {}, 1)
        report["real_model"] = real
        report["findings"] += _findings(real, "real model")
    if not report["findings"]:
        del report["findings"]  # ``bench.run`` fails a run whose entry has findings
    return report


def _soak_one(
    name: str, sessions: int, minutes: float, config: SoakConfig, plan: ClientPlan,
    settings: dict[str, str], workers: int,
) -> dict[str, Any]:  # fmt: skip
    from assistant.config import Settings

    tmp = Path(tempfile.mkdtemp(prefix=f"assistant-soak-{name}-"))
    (tmp / "models").symlink_to(Settings().models_dir, target_is_directory=True)
    port = free_port()
    args = ["-m", "assistant.cli", "serve", "--port", str(port), "--data-dir", str(tmp),
            "--log-level", "warning", "--workers", str(workers)]  # fmt: skip
    settings = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **settings}
    server = ServerProcess(f"soak-{name}", args, port, tmp, bench_env(**settings))
    failed = False
    try:
        server.wait_ready(timeout_s=180)
        redis_url = _redis_url(server.log_path)
        wait_for_workers(server.pid, f"http://127.0.0.1:{port}", workers)
        print(f"  soak: {name}: {sessions} sessions x {minutes} min, {workers} worker(s)",
              file=sys.stderr, flush=True)  # fmt: skip
        result = asyncio.run(_drive(server, redis_url, sessions, minutes, config, plan))
        if result["error_count"] or result["process_changes"]:
            result["server_log_tail"] = tail(server.log_path, 4000)
    except Exception as exc:
        failed = True
        raise RuntimeError(f"{type(exc).__name__}: {exc} (server log in {tmp})") from exc
    finally:
        server.stop()
        if not failed:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"model": name, "sessions": sessions, "minutes": minutes, "workers": workers,
            "think_s": plan.think_s, **result}  # fmt: skip


def _redis_url(log: Path) -> str:
    """The private Redis's URL, as ``assistant serve`` logged it when it started it."""
    found = _REDIS_URL.search(log.read_text(errors="replace"))
    if found is None:
        raise RuntimeError("the server did not say where its private redis-server is")
    return found.group(1)


async def _drive(
    server: ServerProcess, redis_url: str, sessions: int, minutes: float,
    config: SoakConfig, plan: ClientPlan,
) -> dict[str, Any]:  # fmt: skip
    watch = ProcessWatch(server.pid, redis_url)
    base_url = server.url("").replace("ws://", "http://", 1)

    async def sample() -> None:
        watch.sample()
        await asyncio.to_thread(watch.read_caches, base_url)  # the clients go on meanwhile

    await sample()
    tally, stop = Tally(), asyncio.Event()
    images = image_pool(plan.images)
    clients = [SoakClient(server.url(), plan, tally, stop, images, seed=i) for i in range(sessions)]
    tasks = [asyncio.create_task(client.run()) for client in clients]
    deadline = time.monotonic() + minutes * 60
    try:
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(tasks, timeout=min(left, config.sample_s))  # the clients run on
            if left > config.sample_s:
                await sample()
                _progress(watch, tally)
        await sample()  # the end, still under the same load as the samples before
    finally:
        stop.set()  # each client ends after its turn in flight
        await asyncio.wait(tasks, timeout=plan.timeout_s + 10)
        for task in tasks:
            task.cancel()
    await asyncio.sleep(2.0)  # the server's side of the last closes settles
    return {**_tally_report(tally), **watch.report(), "after_clients_left": watch.snapshot()}


def _progress(watch: ProcessWatch, tally: Tally) -> None:
    rss = ", ".join(f"{n} {v[-1]} MB" for n, v in watch.rss_mb.items())
    print(f"  soak: {watch.times_s[-1]:.0f} s: {sum(tally.turns.values())} turns, "
          f"{sum(tally.errors.values())} errors; {rss}; redis {watch.redis_mb[-1]} MB",
          file=sys.stderr, flush=True)  # fmt: skip


def _tally_report(tally: Tally) -> dict[str, Any]:
    return {
        "turns": sum(tally.turns.values()),
        "turns_by_kind": dict(tally.turns),
        "resumes": tally.resumes,
        "conversations": tally.conversations,
        "turns_by_minute": tally.turns_by_minute,
        "turn_p50_ms": round(percentile(tally.latencies_ms, 50), 2),
        "turn_p99_ms": round(percentile(tally.latencies_ms, 99), 2),
        "errors": dict(tally.errors),
        "errors_by_step": dict(tally.errors_by_step),
        "error_count": sum(tally.errors.values()),
        "error_messages": tally.messages,
    }


def _findings(run: dict[str, Any], name: str) -> list[str]:
    found = [f"{name}: {n} x {code}" for code, n in run["errors"].items()]
    found += [f"{name}: {change}" for change in run["process_changes"]]
    if not run["turns"]:
        found.append(f"{name}: no turn completed")
    warm, times = run["warm_up"], run["sample_times_s"]
    filling = ", ".join(warm["caches_filling"])
    if warm["sample"] is None:
        found.append(f"{name}: warm-up not over by the end ({filling} still filling)")
    elif warm["after_s"] > times[-1] / 2:
        found.append(f"{name}: warm-up took {warm['after_s']:.0f} of {times[-1]:.0f} s "
                     f"(waiting for {filling}): too short a run to judge the growth after it")  # fmt: skip
    for process, ratio in run["growth_after_warmup"].items():
        if process != "redis" and ratio is not None and ratio >= GROWTH_LIMIT:
            found.append(f"{name}: {process} RSS grew {ratio:.1%} after warm-up")
    return found


def table_rows(data: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """``(entry, metric, value)`` rows for ``bench.run``'s table."""
    rows: list[tuple[str, str, Any]] = []
    scripted = data if "rss_mb" in data else None
    for prefix, run in (("", scripted), ("real model: ", data.get("real_model"))):
        if not run:
            continue
        head = f"{prefix}{run['sessions']} sessions x {run['minutes']} min"
        rows += [("soak", f"{head}: turns", run["turns"]),
                 ("soak", f"{prefix}errors", run["error_count"]),
                 ("soak", f"{prefix}turn p50 / p99 ms",
                  f"{run['turn_p50_ms']} / {run['turn_p99_ms']}")]  # fmt: skip
        warm = run["warm_up"]
        rows.append(("soak", f"{prefix}warm-up (the caches that fill, full) at s",
                     "not over" if warm["after_s"] is None else warm["after_s"]))  # fmt: skip
        for process, values in run["rss_mb"].items():
            growth = run["growth_after_warmup"][process]
            shown = "-" if growth is None else f"{growth:+.1%}"
            rows.append(("soak", f"{prefix}{process} RSS MB start/end, growth after warm-up",
                         f"{values[0]} / {values[-1]}, {shown}"))  # fmt: skip
            rows.append(("soak", f"{prefix}{process} RSS MB at each sample",
                         " ".join("-" if v is None else f"{v:.0f}" for v in values)))  # fmt: skip
            fds = run["fds"][process]
            rows.append(("soak", f"{prefix}{process} open fds start/end", f"{fds[0]} / {fds[-1]}"))
        redis = run["redis_used_memory_mb"]
        rows.append(
            ("soak", f"{prefix}redis used_memory MB start/end", f"{redis[0]} / {redis[-1]}")
        )
    return rows
