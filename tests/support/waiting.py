"""Bounded waits: poll a condition until it holds, or fail with what was waited for.

A test that needs something to have happened (a server up, a decode finished, a key expired)
waits for exactly that, not for a fixed time: it goes on as soon as the condition holds, and a
condition that never comes fails with a clear message instead of an assertion further on.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Long enough for anything a test waits for on a loaded machine; only a failure waits this long.
TIMEOUT_S = 30.0
POLL_S = 0.01


def _describe(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def wait_for(
    predicate: Callable[[], T],
    *,
    what: str | Callable[[], str],
    timeout_s: float = TIMEOUT_S,
    poll_s: float = POLL_S,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value. After
    ``timeout_s`` without one: ``AssertionError`` naming ``what`` was waited for (a callable is
    asked only then, e.g. for a log's tail). Exceptions of ``predicate`` propagate."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {_describe(what)}")
        time.sleep(poll_s)  # the poll interval, not a wait for something


async def wait_for_async(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    what: str | Callable[[], str],
    timeout_s: float = TIMEOUT_S,
    poll_s: float = POLL_S,
) -> T:
    """``wait_for`` inside an event loop: the loop runs between polls, and ``predicate`` may be
    a coroutine function (e.g. a Redis query). The deadline also bounds a predicate that hangs."""
    try:
        async with asyncio.timeout(timeout_s) as scope:
            while True:
                value: Any = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(poll_s)  # the poll interval, not a wait for something
    except TimeoutError:
        if not scope.expired():
            raise  # the predicate's own timeout
        raise AssertionError(
            f"timed out after {timeout_s:g} s waiting for {_describe(what)}"
        ) from None
