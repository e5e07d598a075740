"""The process's memory: giving freed memory back to the system, and what its bounded caches hold.

**Freed memory.** glibc's allocator keeps the pages of big freed blocks (a decoded photo, a
megabyte-long message) in its arenas, so a process's RSS stays at its peak long after the work is
done; ``malloc_trim(0)`` returns them. ``trim()`` is called after work that allocated a lot, at
most once a second; a no-op where glibc is not the allocator. ``tune_allocator`` (``assistant
serve`` calls it) keeps the arenas from growing with the churn of turns in the first place: see
``MALLOC_TUNING`` for what it sets and what the soak measured without it.

**Bounded caches.** Every in-process cache that grows with what the process serves (parsed
messages, rendered prompts, token counts, KV caches, ...) is bounded, and registers itself with
``track`` under a name with its capacity. ``caches()`` says how full each one is (summed over its
instances: several apps live in one test process): ``/metrics`` shows it
(``assistant_cache_entries``, ``assistant_cache_capacity``), and the soak (``bench.soak``) ends its
warm-up when the caches that fill have filled, so memory that grows only until the caches are full
is told apart from a leak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

_MIN_INTERVAL_S = 1.0
#: glibc malloc settings for the server's processes (``tune_allocator``). Two arenas, shared by a
#: process's threads: by default each thread that allocates gets one of its own (up to eight per
#: core), each keeping its own free pages (13 held 150 MB of a 410 MB soak worker). Blocks of
#: 128 KiB and more mapped on their own and unmapped when freed: by default glibc raises that
#: threshold (up to 32 MB) at the first such block freed, and from then on the big short-lived
#: buffers of turns (an image's data URL, its pixels, a long reply's JSON) are carved out of the
#: arenas, leaving holes: 20-50 MB free in a soak worker's arenas, still growing after minutes
#: (3-6 MB with these settings; the worker's RSS then flat within 2 % from minute two). Not where a
#: model's forward passes run in the process (``model_in_process``): its activations, 0.3-1 MB a
#: tensor, dozens a pass, were then each mapped, faulted in page by page and unmapped, and a
#: 128-token SmolLM2 prefill took 340-450 ms instead of 190-280 (16 tokens: +20 %); there the
#: arenas keep them, reused pass after pass, and ``trim()`` returns what a closed connection freed.
MALLOC_TUNING = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
#: What ``tune_allocator`` leaves out for a process running a model's forward passes.
_NOT_WITH_A_MODEL = frozenset({"MALLOC_MMAP_THRESHOLD_"})
#: ``mallopt`` parameters of those settings (``M_ARENA_MAX``, ``M_MMAP_THRESHOLD`` in malloc.h).
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3}
_lock = threading.Lock()
_last = 0.0

T = TypeVar("T")


@functools.cache
def _libc() -> Any:  # noqa: ANN401 - a ctypes library, or None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim() -> bool:
    """Return freed heap pages to the system, unless that was done less than a second ago;
    True when it ran. Safe from any thread."""
    global _last
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        now = time.monotonic()
        if now - _last < _MIN_INTERVAL_S:
            return False
        _last = now
    libc.malloc_trim(0)
    return True


def tune_allocator(
    environ: MutableMapping[str, str] | None = None, *, model_in_process: bool = False
) -> dict[str, str]:
    """Apply ``MALLOC_TUNING`` to this process (``mallopt``) and put it in ``environ`` (the
    process's environment) for the processes it starts: glibc reads it as each one starts. A
    setting the environment has already (an operator's own) is left as it is, and with
    ``model_in_process`` (the language model runs its passes here) the mmap threshold is not
    set. Returns what was set. ``assistant serve`` calls it first: the arena count holds only
    from before a second thread allocates."""
    environ = os.environ if environ is None else environ
    libc = _libc()
    applied = {}
    for name, value in MALLOC_TUNING.items():
        if name in environ or (model_in_process and name in _NOT_WITH_A_MODEL):
            continue
        environ[name] = applied[name] = value
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(_MALLOPT[name], int(value))
    return applied


# -- bounded caches --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheFill:
    """What a cache holds now and the most it may hold (in its own unit: entries, tokens)."""

    entries: int
    capacity: int

    @property
    def full(self) -> bool:
        return self.entries >= self.capacity


_tracked: list[tuple[str, weakref.ref[Any], Callable[[Any], int], Callable[[Any], int]]] = []
_tracked_lock = threading.Lock()


def track(
    name: str,
    cache: T,
    capacity: int | Callable[[T], int],
    entries: Callable[[T], int] = len,
) -> T:
    """Count ``cache`` under ``name`` while it lives: ``entries(cache)`` of at most ``capacity``
    (a number, or read from the cache). Only a weak reference is kept. Returns ``cache``."""
    cap: Callable[[Any], int] = capacity if callable(capacity) else (lambda _c, n=capacity: n)
    with _tracked_lock:
        _tracked[:] = [t for t in _tracked if t[1]() is not None]
        _tracked.append((name, weakref.ref(cache), entries, cap))
    return cache


def caches() -> dict[str, CacheFill]:
    """Every tracked cache alive now by name, its instances summed; sorted by name."""
    with _tracked_lock:
        living = [(name, ref(), entries, cap) for name, ref, entries, cap in _tracked]
    sums: dict[str, tuple[int, int]] = {}
    for name, cache, entries, cap in living:
        if cache is None:
            continue
        held, most = sums.get(name, (0, 0))
        sums[name] = (held + int(entries(cache)), most + int(cap(cache)))
    return {name: CacheFill(*sums[name]) for name in sorted(sums)}
