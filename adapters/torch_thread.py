"""The one thread of the process that runs torch work: forward passes, and loading models.

libgomp gives each thread that starts parallel regions its own team of worker threads, and throttles
their spin-waiting once the workers of all teams outnumber the CPUs: each of the hundreds of short
parallel regions of a forward pass then waits for sleeping workers to wake up. Run on whichever
worker thread is free at the moment (the default executor's, ``asyncio.to_thread``), a model is
soon run by several threads, and every pass slows down: SmolLM2-135M prefilled 32 tokens on 2 cores
in ~125 ms instead of ~70 (a decode step: 56 ms vs 34). So every adapter's torch work (the language
models' token loops, the vision encoders, the projectors) runs on this one thread:

- ``run_sync(fn, *args)``: from a worker thread, blocking; inline when called on the torch thread;
- ``@on_torch_thread``: a function that always runs there (``run_sync``), whoever calls it;
- ``await run_on_torch_thread(fn, *args)``: from the event loop;
- ``iterate_on_torch_thread(steps)``: a generator advanced there one item per hop (~15 us), so that
  other work (an image to encode) interleaves between a token loop's steps.

Loading a model belongs there too: any other thread that once ran a parallel region (copying a
large state dict does) keeps its idle team for the life of the process, and that alone throttles
the torch thread (EfficientNet-Lite0's forward on 2 cores: ~25 ms after loading the weights on the
torch thread, ~55 ms after loading them on the main thread). A load there pauses a running token
loop between two of its steps for the load's duration.

The thread is started by the first call, not at import (and again in a forked child); this module
does not import torch. Jobs run one at a time in the order submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME = "torch"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_local = threading.local()  # ``on_torch``: set on the torch thread only
_DONE = object()  # a generator's end, as one hop's result


def _mark_torch_thread() -> None:
    _local.on_torch = True


def _the_executor() -> ThreadPoolExecutor:
    global _executor
    executor = _executor
    if executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=THREAD_NAME, initializer=_mark_torch_thread
                )
            executor = _executor
    return executor


def _forget_executor() -> None:
    """In a forked child the parent's thread does not exist: the next call starts a new one."""
    global _executor, _lock
    _executor = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def is_torch_thread() -> bool:
    """True on the torch thread (where ``run_sync`` runs a callable inline)."""
    return getattr(_local, "on_torch", False)


def run_sync(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` run on the torch thread, waiting for it there; its exception is
    raised here. Called on the torch thread itself it runs inline (a submit would wait for itself).
    Blocking: call it from a worker thread, never from the event loop."""
    if is_torch_thread():
        return fn(*args, **kwargs)
    return _the_executor().submit(fn, *args, **kwargs).result()


def on_torch_thread(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` made to run on the torch thread whoever calls it (``run_sync``, so inline when
    called there): for the blocking entry points of torch work, a forward pass or a model load."""

    @functools.wraps(fn)
    def on_the_torch_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(fn, *args, **kwargs)

    return on_the_torch_thread


async def run_on_torch_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the torch thread, awaited from the event loop. A cancelled await
    does not stop a job that has started (nothing can stop a forward pass half-way)."""
    if is_torch_thread():  # a loop run on the torch thread itself
        return fn(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_the_executor(), functools.partial(fn, *args, **kwargs))


def iterate_on_torch_thread(
    steps: Generator[T, None, None],
    context: Callable[[], AbstractContextManager[object]] | None = None,
) -> Iterator[T]:
    """The items of ``steps``, each advanced on the torch thread in its own hop, inside a fresh
    ``context()`` (e.g. ``torch.inference_mode``: grad modes are per thread, the caller's do not
    reach the torch thread). Closing this iterator closes ``steps`` there; an exception raised in
    ``steps`` is raised here. Between two items the torch thread is free for other jobs."""
    enter = context or contextlib.nullcontext

    def advance() -> object:
        with enter():
            return next(steps, _DONE)

    def close() -> None:
        with enter():
            steps.close()

    try:
        while (item := run_sync(advance)) is not _DONE:
            yield item  # type: ignore[misc]
    finally:
        run_sync(close)


__all__ = [
    "THREAD_NAME",
    "is_torch_thread",
    "iterate_on_torch_thread",
    "on_torch_thread",
    "run_on_torch_thread",
    "run_sync",
]
