"""What the soak (``bench.soak``) reads of a server's bounded caches, and when its warm-up is over.

Every bounded in-process cache of a worker is on its ``/metrics`` (``assistant.heap``):
``assistant_cache_entries{cache}`` of at most ``assistant_cache_capacity{cache}`` (entries; tokens
for ``kv_cache_tokens``), with ``assistant_worker_pid``. Several workers share the port and each
request lands on one of them, so ``scrape`` asks again, a new connection each time, until every
worker has answered.

A worker's memory grows while its caches fill; that is warm-up, not a leak. ``warm_index`` is the
first sample (after the first one) by which every cache that fills up during the run (``FULL`` of
its capacity at some sample) has been full: the warm-up is the time those caches take to fill,
reported as such (``caches_filling``: what it waited for). A cache that never fills during the run
does not hold the warm-up back: what it gains is counted in the growth after warm-up, not
excused (ending the warm-up earlier can only make that growth larger). A cache that fills only
late in the run keeps the warm-up going until then: the run is too short to judge
(``bench.soak`` reports it); the goal is not moved.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from typing import Any

#: A cache this full counts as full (a cache bounded by tokens evicts whole entries: it stays a
#: little under its bound).
FULL = 0.95

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
    """The first sample (index >= 1) by which every cache that fills up during the run has been
    full, and the caches not full yet at the sample before it (``"worker-1 parsed_messages
    14389/16384"``); None when no sample is warm, with the caches not full at the end.
    ``fills[i]``: sample ``i``'s ``{process: {cache: [entries, capacity]}}``; a process or cache
    missing from a sample (not scraped) makes that sample not warm."""
    names = sorted({(p, c) for sample in fills for p, caches in sample.items() for c in caches})

    def filling(index: int) -> list[str]:
        return [cold for p, c in names if (cold := _cold(fills, index, p, c))]

    for index in range(1, len(fills)):
        if not filling(index):
            return index, filling(index - 1)
    return None, filling(len(fills) - 1)


def _cold(fills: list[dict[str, Fill]], index: int, process: str, cache: str) -> str:
    """Empty when ``cache`` of ``process`` does not hold the warm-up back at sample ``index``,
    else how full it is."""
    series = [sample.get(process, {}).get(cache) for sample in fills]
    now = series[index]
    if now is None:
        return f"{process} {cache} not read"

    def full(pair: list[int] | None) -> bool:
        return pair is not None and pair[0] >= FULL * pair[1]

    if not any(full(pair) for pair in series) or any(full(pair) for pair in series[: index + 1]):
        return ""  # it never fills in this run (its growth is counted), or it has filled
    return f"{process} {cache} {now[0]}/{now[1]}"


def fill_report(names: dict[str, int], scraped: list[dict[int, Fill]]) -> list[dict[str, Any]]:
    """The samples' ``{pid: fill}`` by process name (``names``: name -> pid)."""
    by_pid = {pid: name for name, pid in names.items()}
    return [{by_pid[p]: fill for p, fill in sample.items() if p in by_pid} for sample in scraped]
