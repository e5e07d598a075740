"""What the soak (``bench.soak``) watches of a running server: every process in its pid tree (the
``assistant serve`` process, its workers, its private ``redis-server``), each one's resident
memory and open file descriptors from ``/proc``, Redis's own ``INFO memory`` figure, and how full
each worker's bounded caches are (``bench.soak_caches``: the warm-up is over when they are full
or steady; growth after warm-up is measured from that sample).

Processes are named once, when the watch starts (``wait_for_workers`` first): ``serve`` (the
root), ``redis`` (a ``redis-server``), ``resource-tracker`` (multiprocessing's, beside several
workers), ``worker-1``, ``worker-2``, ... (the other processes, by pid). A process that
is gone at a later sample, or one that appeared, is reported (a worker or Redis that died and was
started again): a soak must not lose processes quietly.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import process_tree, rss_kb
from bench.soak_caches import Fill, fill_report, scrape, warm_index


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def malloc_env(pid: int) -> dict[str, str]:
    """The glibc ``MALLOC_*`` settings in ``pid``'s environment (``assistant serve`` sets them,
    ``assistant.heap.tune_allocator``); empty when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0"))
    return {name: value for name, _, value in pairs if name.startswith("MALLOC_")}


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (entries of ``/proc/PID/fd``)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def name_processes(root: int) -> dict[str, int]:
    """``{name: pid}`` for ``root`` and its living descendants (see the module's doc)."""
    names: dict[str, int] = {"serve": root}
    workers = 0
    for pid in sorted(p for p in process_tree(root) if p != root):
        line = cmdline(pid)
        if not line:
            continue  # gone meanwhile, or a zombie
        if "redis-server" in line:
            names["redis" if "redis" not in names else f"redis-{pid}"] = pid
        elif "multiprocessing.resource_tracker" in line:
            names["resource-tracker"] = pid
        else:
            workers += 1
            names[f"worker-{workers}"] = pid
    return names


def wait_for_workers(root: int, base_url: str, workers: int, timeout_s: float = 180.0) -> None:
    """Until ``workers`` worker processes run under ``root`` and each has answered ``/healthz``
    (it names the worker's pid); one worker is ``root`` itself, answering already."""
    if workers <= 1:
        return
    deadline, answered = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline:
        pids = {pid for name, pid in name_processes(root).items() if name.startswith("worker-")}
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=10) as answer:
                answered.add(int(json.load(answer)["worker"]))
        if len(pids) >= workers and pids <= answered:
            return
        time.sleep(0.05)  # a new connection is hashed to another worker
    raise RuntimeError(f"{workers} workers did not all answer /healthz in {timeout_s:.0f} s")


def redis_used_memory(url: str) -> tuple[int, int]:
    """``used_memory`` (bytes) and the number of keys of the Redis at ``url``."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        return int(client.info("memory")["used_memory"]), int(client.dbsize())
    finally:
        client.close()


@dataclass
class ProcessWatch:
    """Samples of one server's processes: ``sample()`` at the start, every minute, at the end."""

    root: int
    redis_url: str
    started: float = field(default_factory=time.monotonic)
    names: dict[str, int] = field(default_factory=dict)
    times_s: list[float] = field(default_factory=list)
    rss_mb: dict[str, list[float | None]] = field(default_factory=dict)
    fds: dict[str, list[int | None]] = field(default_factory=dict)
    redis_mb: list[float] = field(default_factory=list)
    redis_keys: list[int] = field(default_factory=list)
    #: Processes that went away or appeared, as "<name> (pid N) exited at 120 s".
    changes: list[str] = field(default_factory=list)
    #: Each sample's caches, ``{pid: {cache: [entries, capacity]}}`` (``read_caches``).
    caches: list[dict[int, Fill]] = field(default_factory=list)
    _reported: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.names = name_processes(self.root)
        for name in self.names:
            self.rss_mb[name], self.fds[name] = [], []

    def sample(self) -> None:
        now = round(time.monotonic() - self.started, 1)
        self.times_s.append(now)
        living = set(process_tree(self.root))
        for name, pid in self.names.items():
            rss, fds = None, None
            if pid in living:
                try:
                    rss, fds = round(rss_kb(pid) / 1024, 2), fd_count(pid)
                except (OSError, RuntimeError):
                    pass
            if rss is None and pid not in self._reported:
                self._reported.add(pid)
                self.changes.append(f"{name} (pid {pid}) exited by {now} s")
            self.rss_mb[name].append(rss)
            self.fds[name].append(fds)
        for pid in sorted(living - set(self.names.values()) - self._reported):
            self._reported.add(pid)
            self.changes.append(f"new process pid {pid} ({cmdline(pid)[:80]}) by {now} s")
        used, keys = redis_used_memory(self.redis_url)
        self.redis_mb.append(round(used / 2**20, 2))
        self.redis_keys.append(keys)

    def workers(self) -> dict[str, int]:
        """The processes that serve (``worker-N``; ``serve`` itself when it has no workers)."""
        named = {n: pid for n, pid in self.names.items() if n.startswith("worker-")}
        return named or {"serve": self.root}

    def read_caches(self, base_url: str) -> None:
        """Each worker's caches, for the sample just taken (blocking: run it in a thread)."""
        self.caches.append(scrape(base_url, set(self.workers().values())))

    def snapshot(self) -> dict[str, Any]:
        """RSS and descriptors now, not kept as a sample (after the clients have gone)."""
        living = set(process_tree(self.root))
        out: dict[str, Any] = {"rss_mb": {}, "fds": {}}
        for name, pid in self.names.items():
            if pid in living:
                with contextlib.suppress(OSError, RuntimeError):
                    out["rss_mb"][name], out["fds"][name] = (
                        round(rss_kb(pid) / 1024, 2),
                        fd_count(pid),
                    )
        out["redis_used_memory_mb"] = round(redis_used_memory(self.redis_url)[0] / 2**20, 2)
        return out

    def report(self) -> dict[str, Any]:
        fills = fill_report(self.names, self.caches)
        warm, filling = warm_index(fills) if fills else (None, ["no cache read"])
        return {
            "processes": {name: {"pid": pid, "cmdline": cmdline(pid)[:120]}
                          for name, pid in self.names.items()},
            "sample_times_s": self.times_s,
            "rss_mb": self.rss_mb,
            "warm_up": {
                "sample": warm, "after_s": None if warm is None else self.times_s[warm],
                # before the warm sample (what it waited for), or at the end when none is warm
                "caches_filling": filling,
            },
            "growth_after_warmup": {
                n: None if warm is None else growth(v, warm) for n, v in self.rss_mb.items()
            },
            "growth_after_first_minute": {n: growth(v) for n, v in self.rss_mb.items()},
            "caches": _by_cache(fills),
            "fds": self.fds,
            "redis_used_memory_mb": self.redis_mb,
            "redis_keys": self.redis_keys,
            "process_changes": self.changes,
            "malloc_env": malloc_env(next(iter(self.workers().values()))),
        }  # fmt: skip


def growth(values: list[Any], warm: int | None = None) -> float | None:
    """(end - value at sample ``warm``) / value at sample ``warm``; by default ``warm`` is the
    second sample (the one after the first minute) when there are three or more, else the first.
    None when a value is missing (the process was gone) or ``warm`` is the last sample."""
    if len(values) < 2 or any(v is None for v in values):
        return None
    if warm is None:
        warm = 1 if len(values) >= 3 else 0
    if warm >= len(values) - 1:
        return None
    start = values[warm]
    return round((values[-1] - start) / start, 4) if start else None


def _by_cache(fills: list[dict[str, Fill]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{process: {cache: {"capacity": n, "entries": [one per sample, None: not read]}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for index, sample in enumerate(fills):
        for process, caches in sample.items():
            for cache, (entries, capacity) in caches.items():
                row = out.setdefault(process, {}).setdefault(
                    cache, {"capacity": capacity, "entries": [None] * len(fills)}
                )
                row["entries"][index] = entries
                row["capacity"] = capacity
    return out
