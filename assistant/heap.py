"""Giving freed memory back to the system. glibc's allocator keeps the pages of big freed blocks
(a decoded photo, a megabyte-long message) in its arenas, so a process's RSS stays at its peak
long after the work is done; ``malloc_trim(0)`` returns them. Called after work that allocated a
lot, at most once a second; a no-op where glibc is not the allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time

_MIN_INTERVAL_S = 1.0
_lock = threading.Lock()
_last = 0.0


@functools.cache
def _malloc_trim():  # noqa: ANN202 - a ctypes function, or None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def trim() -> bool:
    """Return freed heap pages to the system, unless that was done less than a second ago;
    True when it ran. Safe from any thread."""
    global _last
    trim_fn = _malloc_trim()
    if trim_fn is None:
        return False
    with _lock:
        now = time.monotonic()
        if now - _last < _MIN_INTERVAL_S:
            return False
        _last = now
    trim_fn(0)
    return True
