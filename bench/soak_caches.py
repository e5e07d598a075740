"""What the soak (``bench.soak``) reads of a server's bounded caches, and when its warm-up is over.

Every bounded in-process cache of a worker is on its ``/metrics`` (``assistant.heap``):
``assistant_cache_entries{cache}`` of at most ``assistant_cache_capacity{cache}`` (entries; tokens
for ``kv_cache_tokens``), with ``assistant_worker_pid``. Several workers share the port and each
request lands on one of them, so ``scrape`` asks again, a new connection each time, until every
worker has answered.

A worker's memory grows while its caches fill; that is warm-up, not a leak. ``warm_index`` is the
first sample (after the first one) at which every cache of every worker is *warm*: it has been
full (``FULL`` of its capacity) by then, or it holds at least ``STEADY`` of the median of what it
holds from then on (it has reached the level it keeps: the sessions open now, the texts in use;
the median, so a level that wavers is a level), or what it gains later is at most ``NEGLIGIBLE``
of its capacity (a few sessions' worth of a cache of thousands). A cache that fills all run long keeps the warm-up
going until late in the run (a steady rise: about four fifths of it) or to its end: the run is
then too short to judge (``bench.soak`` reports it); the goal is not moved.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import urllib.request
from typing import Any

#: A cache this full counts as full (a cache bounded by tokens evicts whole entries: it stays a
#: little under its bound).
FULL = 0.95
#: A cache holding this much of the median it holds from then on has reached its level.
STEADY = 0.9
#: A cache that gains at most this share of its capacity from then on is as good as warm.
NEGLIGIBLE = 0.01

#: ``{cache: [entries, capacity]}`` of one worker at one sample.
Fill = dict[str, list[int]]


def parse_metrics(text: str) -> tuple[int | None, Fill]:
    """The answering worker's pid and its caches' fill, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    pid: int | None = None
    fill: Fill = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "assistant_worker_pid":
                pid = int(sample.value)
            elif sample.name in ("assistant_cache_entries", "assistant_cache_capacity"):
                pair = fill.setdefault(sample.labels["cache"], [0, 0])
                pair[sample.name.endswith("capacity")] = int(sample.value)
    return pid, fill


def scrape(base_url: str, pids: set[int], timeout_s: float = 20.0) -> dict[int, Fill]:
    """``{pid: fill}`` for each of ``pids`` that answered ``/metrics`` within ``timeout_s``."""
    found: dict[int, Fill] = {}
    deadline = time.monotonic() + timeout_s
    while set(found) < pids and time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as answer:
                pid, fill = parse_metrics(answer.read().decode())
            if pid in pids:
                found[pid] = fill
    return found


def warm_index(fills: list[dict[str, Fill]]) -> tuple[int | None, list[str]]:
    """The first sample (index >= 1) at which every cache is warm (see the module's doc), and
    the caches still filling at the sample before it (``"worker-1 prompts 120/4096"``); None
    when no sample is warm, with the caches still filling at the end. ``fills[i]``: sample
    ``i``'s ``{process: {cache: [entries, capacity]}}``; a process or cache missing from a
    sample (not scraped) makes that sample not warm."""
    names = sorted({(p, c) for sample in fills for p, caches in sample.items() for c in caches})

    def filling(index: int) -> list[str]:
        return [cold for p, c in names if (cold := _cold(fills, index, p, c))]

    for index in range(1, len(fills)):
        if not filling(index):
            return index, filling(index - 1)
    return None, filling(len(fills) - 1)


def _cold(fills: list[dict[str, Fill]], index: int, process: str, cache: str) -> str:
    """Empty when ``cache`` of ``process`` is warm at sample ``index``, else how full it is."""
    series = [sample.get(process, {}).get(cache) for sample in fills]
    now = series[index]
    if now is None:
        return f"{process} {cache} not read"
    entries, capacity = now
    been_full = any(p is not None and p[0] >= FULL * p[1] for p in series[: index + 1])
    later = [p[0] for p in series[index:] if p is not None]
    steady = entries >= STEADY * statistics.median(later)
    if been_full or steady or max(later) - entries <= NEGLIGIBLE * capacity:
        return ""
    return f"{process} {cache} {entries}/{capacity}"


def fill_report(names: dict[str, int], scraped: list[dict[int, Fill]]) -> list[dict[str, Any]]:
    """The samples' ``{pid: fill}`` by process name (``names``: name -> pid)."""
    by_pid = {pid: name for name, pid in names.items()}
    return [{by_pid[p]: fill for p, fill in sample.items() if p in by_pid} for sample in scraped]
