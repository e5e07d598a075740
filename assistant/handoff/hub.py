"""``EventHub``: a process's one reader of the session event streams it watches.

    subscription = await hub.subscribe(tenant, session_id, after="0")   # catches up first
    async for seq, event in subscription: ...                            # then live
    hub.unsubscribe(subscription)

One task per process runs one blocking read (``ConversationStore.wait``: one ``XREAD BLOCK`` over
every watched stream) and hands each event to the subscriptions of its stream, instead of one
blocking connection per viewer: a thousand viewers cost one connection and one read per batch of
events, not a thousand. A new subscription first reads what it missed itself (``events``, pages
of ``page`` events, without blocking), then joins the read at the last event it got, and wakes it
(``unblock``) so its stream is read from then on: nothing between is missed, and each
subscription takes only events after the last one it was handed, so nothing comes twice (the
stream's ids only grow).

Every event added to a watched stream ends the blocking read, and the next one names every watched
stream again (the arguments and Redis's work grow with them): with a thousand sessions taking
turns, reading again at once made the hub read about once per event, and took the gateway from
0.57-0.65 of a bare echo server's turns/s to 0.37 (server CPU per turn 0.42 -> 0.84 ms). So after
a read that found events the hub waits ``coalesce_s`` (``COALESCE_S_PER_STREAM`` per watched
stream, at most ``COALESCE_MAX_S``: 50 ms at 1,000 streams, 0.5 ms at 10) before reading again:
the events of that time come in one read (a live event waits that long at most), and the cursors
it reads from are kept up to date as events are handed out, not rebuilt for every read.

A subscription whose consumer falls ``max_queue`` events behind is dropped (``lagging``; its
iteration ends): its connection resumes from its last sequence number when it is ready again.
A subscription from a sequence number older than the stream's oldest kept event is ``lost``:
events after it may have been trimmed (the caller tells its client: ``events_lost``); it goes on
from the oldest kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from assistant.errors import StoreError
from assistant.ports.conversations import ConversationStore, Event, StreamKey, seq_key

log = logging.getLogger(__name__)

_END = ("", {})
#: After a read that found events, the wait before the next read per watched stream, and at most.
COALESCE_S_PER_STREAM = 50e-6
COALESCE_MAX_S = 0.05


class Subscription:
    def __init__(self, key: StreamKey, after: str, max_queue: int) -> None:
        self.key = key
        self.after = after  # the last sequence number handed to the consumer's queue
        self.lagging = False
        self.lost = False  # events after ``after`` may have been trimmed before it caught up
        self.closed = False
        self._queue: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()
        self._max_queue = max_queue

    def offer(self, entries: list[tuple[str, Event]]) -> None:
        if self.closed:
            return
        last = seq_key(self.after)
        for seq, event in entries:
            key = seq_key(seq)
            if key <= last:
                continue  # had it already (caught up, or another cursor's read)
            self._queue.put_nowait((seq, event))
            self.after, last = seq, key
        if self._queue.qsize() > self._max_queue:
            self.lagging = True
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_END)

    async def next(self, timeout_s: float) -> tuple[str, Event] | None:
        """The next event, or None when none came within ``timeout_s``; ``StopAsyncIteration``
        once the subscription has ended."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None
        if item is _END:
            self._queue.put_nowait(_END)  # ended for every later call too
            raise StopAsyncIteration
        return item

    async def __aiter__(self) -> AsyncIterator[tuple[str, Event]]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            yield item


class EventHub:
    def __init__(
        self,
        store: ConversationStore,
        *,
        block_ms: int = 5_000,
        page: int = 500,
        max_queue: int = 10_000,
    ) -> None:
        self.store = store
        self.block_ms = block_ms
        self.page = page
        self.max_queue = max_queue
        self._subs: dict[StreamKey, set[Subscription]] = {}
        self._cursors: dict[StreamKey, str] = {}  # per watched stream: its subscriptions' lowest
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        #: Blocking reads made (for tests and the bench: one per batch, not one per viewer).
        self.reads = 0

    @property
    def watched(self) -> int:
        return len(self._subs)

    @property
    def coalesce_s(self) -> float:
        """How long the hub waits after a read that found events before reading again."""
        return min(COALESCE_MAX_S, len(self._subs) * COALESCE_S_PER_STREAM)

    async def subscribe(self, tenant: str, session_id: str, after: str = "0") -> Subscription:
        """Events of the session after ``after``: those already in the stream, then live ones."""
        store = self.store.for_tenant(tenant)
        sub = Subscription((tenant, session_id), after, self.max_queue)
        if after != "0":
            first = await store.first_seq(session_id)
            sub.lost = first != "0" and seq_key(first) > seq_key(after)
        while True:
            entries = await store.events(session_id, sub.after, self.page)
            sub.offer(entries)
            if len(entries) < self.page or sub.closed:
                break
        self._subs.setdefault(sub.key, set()).add(sub)
        self._cursor(sub.key)
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        else:
            with contextlib.suppress(StoreError):
                await self.store.unblock()  # the read in progress does not know this stream
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]
            self._cursor(sub.key)

    def _cursor(self, key: StreamKey) -> None:
        """Where the next read starts for ``key``: its subscriptions' lowest sequence number."""
        subs = self._subs.get(key)
        if subs:
            self._cursors[key] = min((s.after for s in subs), key=seq_key)
        else:
            self._cursors.pop(key, None)

    async def _run(self) -> None:
        pause = 0.05
        while self._subs:
            self._changed.clear()
            cursors = dict(self._cursors)
            try:
                found = await self.store.wait(cursors, self.block_ms, self.page)
                pause = 0.05
            except Exception as exc:  # the store down (StoreError), or a bug: logged, read again
                log.warning("event hub: %s: %s; reading again in %.2f s",
                            type(exc).__name__, exc, pause)  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            self.reads += 1
            for key, entries in found.items():
                for sub in list(self._subs.get(key, ())):
                    sub.offer(entries)
                    if sub.lagging:
                        self.unsubscribe(sub)
                self._cursor(key)
            if found:
                await asyncio.sleep(self.coalesce_s)

    async def aclose(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                self.unsubscribe(sub)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
