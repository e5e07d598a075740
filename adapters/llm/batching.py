"""Continuous batching for the local transformers model: one scheduler per model serves every
session's generation together (the vLLM / TGI / llama.cpp-server idea, on a CPU).

A generation is a ``BatchRequest``: its prompt ids, its sampling options, its cancel token and
where its token ids go (``deliver``, called from the scheduler's threads). ``BatchScheduler.submit`` queues it (or refuses it at once with
``server_busy`` past ``max_batch + max_queue`` requests in all); the scheduler's thread then runs
*steps*, each one forward pass on the process's torch thread (``adapters.torch_thread``, so other
torch work still interleaves between two steps) over every active sequence at once
(``adapters.llm.packed``):

- a sequence decoding feeds its last token; a new one feeds a chunk of its prompt: all of it when
  nothing else is decoding, else at most ``prefill_chunk_tokens`` prompt tokens per step over all
  the sequences prefilling, so the running streams go on while a long prompt comes in;
- a request joins at the next step (up to ``max_batch`` sequences at once; more wait, first come
  first served). When nothing runs, the first step waits for a burst to come in (a request arriving
  less than ``admission_gap_s`` after the one before, at most ``admission_window_s`` after the
  first, until ``max_batch`` wait): people asking at once reach the server a few milliseconds
  apart, and one that arrives just after a step began waits for all of it and then its own, where
  waiting those milliseconds prefills it in the same pass as the others. A request alone pays
  ``admission_gap_s`` once;
- a request leaves as soon as it ends: an EOS id (not sent), ``max_new_tokens``, or its
  cancel token, checked before and after every step, so a cancel stops within one token;
- each sequence picks its token with its own settings (temperature, top-p, its own seeded
  generator) and keeps its own KV cache: taken from the adapter's ``PrefixCacheLRU`` when it joins
  and put back when it leaves (``BatchEngine.admit`` / ``release``), so the next turn of the
  conversation prefills only its new tokens, batched or not.

Stop strings and ``token_timeout_s`` stay the port's (``LanguageModel._guarded``): a generation
that times out there sets its cancel token and leaves at the next step. A forward pass that fails
fails the sequences it carried (their caches are dropped), not the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.llm.decoding import pick, rng
from adapters.llm.kv_cache import CachedPrefix
from adapters.llm.packed import Part
from adapters.torch_thread import run_sync
from assistant.errors import ServerBusyError
from assistant.ports import CancelToken, GenerationOptions, Usage

THREAD_NAME = "llm-batch"
END = object()  # delivered last to a request that ended without an error
#: With nothing running, how long the first step waits for one more request to arrive (another
#: after it waits again), and for the first at most: a burst is admitted into one step.
ADMISSION_GAP_S = 0.003
ADMISSION_WINDOW_S = 0.02


class BatchEngine(Protocol):
    """What the scheduler needs from the adapter. All three run on the torch thread."""

    def admit(self, request: BatchRequest) -> CachedPrefix:
        """The cache the request starts from (its conversation's, or an empty one)."""

    def release(self, request: BatchRequest) -> None:
        """The request has left consistent: keep its cache for the conversation's next turn."""

    def step(self, parts: Sequence[Part]) -> Any:
        """One forward pass over ``parts``; the logits of each part's last token, ``(K, V)``."""


@dataclass(eq=False)
class BatchRequest:
    """One generation: what it feeds, how it picks, and where its token ids go."""

    input_ids: list[int]
    options: GenerationOptions
    cancel: CancelToken
    usage: Usage
    cache_key: str | None = None
    image_rows: dict[int, Any] = field(default_factory=dict)  # pseudo-id -> (H,) embedding row
    prefix: CachedPrefix | None = None  # set when it joins: the cache and the ids it holds
    pending: int | None = None  # the last token picked, fed at the next step
    produced: int = 0
    queued_at: float = 0.0  # time.monotonic() when it was submitted
    #: Called from the scheduler's threads with each token id, then ``END`` or the exception
    #: that ended the request (e.g. ``loop.call_soon_threadsafe`` onto an asyncio queue).
    deliver: Callable[[object], None] = lambda item: None
    _generator: Any = None

    @property
    def prefilling(self) -> bool:
        return self.pending is None

    def remaining_prompt(self) -> list[int]:
        assert self.prefix is not None
        return self.input_ids[len(self.prefix.ids) :]


class BatchScheduler:
    """Runs the steps of every generation of one model together; see the module docstring."""

    def __init__(
        self,
        engine: BatchEngine,
        eos_ids: Collection[int],
        *,
        max_batch: int = 8,
        max_queue: int = 32,
        prefill_chunk_tokens: int = 128,
        admission_gap_s: float = ADMISSION_GAP_S,
        admission_window_s: float = ADMISSION_WINDOW_S,
        name: str = "language model",
        inference_mode: Callable[[], Any] | None = None,
    ) -> None:
        self.engine = engine
        self.eos_ids = frozenset(eos_ids)
        self.max_batch = max(int(max_batch), 1)
        self.max_queue = max(int(max_queue), 0)
        self.prefill_chunk_tokens = max(int(prefill_chunk_tokens), 1)
        self.admission_gap_s = max(float(admission_gap_s), 0.0)
        self.admission_window_s = max(float(admission_window_s), 0.0)
        self.name = name
        self._inference_mode = inference_mode
        self._reset()
        #: Steps run and the most sequences one of them carried (for tests and the bench).
        self.steps = 0
        self.widest_step = 0

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[BatchRequest] = deque()
        self._active: list[BatchRequest] = []
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # -- the callers' side ------------------------------------------------------------------------

    def submit(self, request: BatchRequest) -> None:
        """Queue ``request``; raises ``ServerBusyError`` when ``max_batch`` sequences run and
        ``max_queue`` wait already."""
        if self._pid != os.getpid():  # a forked child: the parent's thread is not here
            self._reset()
        with self._cond:
            if len(self._active) + len(self._waiting) >= self.max_batch + self.max_queue:
                raise ServerBusyError(
                    f"{self.name} is busy: {len(self._active)} replies are being generated and "
                    f"{len(self._waiting)} wait; try again shortly"
                )
            request.queued_at = time.monotonic()
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify()

    async def stream(self, request: BatchRequest) -> AsyncIterator[int]:
        """``submit`` the request and yield its token ids on this event loop (delivered from the
        scheduler's threads: no thread waits per generation). Leaving early cancels it and waits
        for it to leave the batch (within one step), its cache put back."""
        loop, arrived = asyncio.get_running_loop(), asyncio.Queue[object]()
        request.deliver = lambda item: loop.call_soon_threadsafe(arrived.put_nowait, item)
        self.submit(request)
        item: object = None
        try:
            while (item := await arrived.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            request.cancel.cancel()
            while item is not END and not isinstance(item, BaseException):
                item = await arrived.get()

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the scheduler's thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._active:
                    self._cond.wait()
                if not self._active:
                    self._admit_burst()
                joining = []
                while self._waiting and len(self._active) < self.max_batch:
                    joining.append(self._waiting.popleft())
                self._active.extend(joining)
                active = list(self._active)
            try:
                left = run_sync(self._step_here, active, joining)
            except BaseException as exc:  # noqa: BLE001 - the step's own failures are handled in it
                left = {request: exc for request in active}
            with self._cond:
                self._active = [r for r in self._active if r not in left]
            for request, error in left.items():  # after leaving the batch: a next turn may join
                request.deliver(END if error is None else error)

    def _admit_burst(self) -> None:
        """With nothing running (under the lock): wait while requests keep arriving less than
        ``admission_gap_s`` apart, at most ``admission_window_s`` after the first, until
        ``max_batch`` wait."""
        first = self._waiting[0].queued_at
        while len(self._waiting) < self.max_batch:
            last = self._waiting[-1].queued_at
            until = min(last + self.admission_gap_s, first + self.admission_window_s)
            left = until - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _step_here(
        self, active: list[BatchRequest], joining: list[BatchRequest]
    ) -> dict[BatchRequest, BaseException | None]:
        """On the torch thread: admit ``joining``, run one step over ``active``; the requests
        that left, each with the error that ended it (None: it ended normally)."""
        with self._inference_mode() if self._inference_mode else contextlib.nullcontext():
            return self._step(active, joining)

    def _step(
        self, active: list[BatchRequest], joining: list[BatchRequest]
    ) -> dict[BatchRequest, BaseException | None]:
        left: dict[BatchRequest, BaseException | None] = {}
        for request in joining:
            try:
                request.prefix = self.engine.admit(request)
                request._generator = rng(request.options.seed)
            except Exception as exc:  # noqa: BLE001 - handed to the request's caller
                left[request] = exc
        running = [r for r in active if r not in left]
        for request in running:
            if request.cancel.cancelled or request.options.max_new_tokens <= request.produced:
                left[request] = self._leave(request)  # cancelled while it waited
        running = [r for r in running if r not in left]
        plan = self._plan(running)
        if not plan:
            return left
        try:
            logits = self.engine.step([part for _, part in plan])  # (K, V)
        except Exception as exc:  # noqa: BLE001 - the pass carried these; the caches are dropped
            left.update({request: exc for request, _ in plan})
            return left
        self.steps += 1
        self.widest_step = max(self.widest_step, len(plan))
        for row, (request, _) in enumerate(plan):
            if request.cancel.cancelled:
                left[request] = self._leave(request)
            elif not (request.prefilling and request.remaining_prompt()):
                if self._pick(request, logits[row : row + 1]):
                    left[request] = self._leave(request)
        return left

    def _plan(self, running: list[BatchRequest]) -> list[tuple[BatchRequest, Part]]:
        """This step's parts: each decoding sequence's last token, then prompt chunks in the
        order the requests came, within ``prefill_chunk_tokens`` while anything decodes."""
        plan = []
        for request in running:
            if not request.prefilling:
                assert request.prefix is not None and request.pending is not None
                plan.append((request, Part(request.prefix, [request.pending])))
        budget = self.prefill_chunk_tokens if plan else None
        for request in running:
            if not request.prefilling or budget == 0:
                continue
            assert request.prefix is not None
            chunk = request.remaining_prompt()
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
            plan.append((request, Part(request.prefix, chunk, request.image_rows)))
        return plan

    def _pick(self, request: BatchRequest, logits: Any) -> bool:
        """Pick the request's next token from its logits ``(1, V)`` and send it; whether the
        request ends here."""
        options = request.options
        next_id = pick(logits, options.temperature, options.top_p, request._generator)
        if next_id in self.eos_ids:
            return True
        request.usage.output_tokens += 1
        request.produced += 1
        request.deliver(next_id)
        request.pending = next_id
        return request.cancel.cancelled or request.produced >= options.max_new_tokens

    def _leave(self, request: BatchRequest) -> None:
        """A request that ends normally: its cache goes back for the next turn. (None: no error.)"""
        self.engine.release(request)


__all__ = ["END", "THREAD_NAME", "BatchEngine", "BatchRequest", "BatchScheduler"]
