"""A connection's hold on its session's writer lease: taken by the first write of a turn (the user's
item, or the response when there was none), kept alive while a reply streams, and given back when
the reply is stored. Both ends are one store round trip each, and the history the first returns is
what the response is built from, so a text turn costs two round trips.

Between the user's item and ``response.create`` the lease is not renewed: it lapses after the
store's lease time if no response follows, and the history is then read again before responding.

The lease keeps the history it has read (stored messages never change), so each turn's read only
brings the messages stored since: a turn costs the same at message 4 and message 400.

While a reply streams, the renewals also carry its text so far (``PartialReply``), at most every
``flush_s`` and only when it grew, so a reply survives the process that streams it (the next
turn stores it as ``interrupted``). Nothing is written before the first ``flush_s``: a reply
that is done by then still costs two round trips. The lease is renewed with those writes, and on
its own when a third of its time has passed since the last one.

With ``events`` set (a connection that others follow: ``server.session_feed``) and a store that
``appends_events``, each message the lease stores (the user's item, the reply) has its event
appended to the session's event stream by the same round trip (``AppendResult.seq``): no write
of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.errors import StoreError
from assistant.messages import Message
from assistant.ports import AppendResult, PartialReply, SessionSnapshot, SessionStore, TurnStart

log = logging.getLogger(__name__)


@dataclass
class StreamingReply:
    """A reply being streamed: its message id and its deltas so far (the streamer appends)."""

    message_id: str
    pieces: list[str]


class TurnLease:
    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        *,
        lease_s: float,
        wait_s: float,
        last: int,
        flush_s: float = 0.25,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.token = secrets.token_hex(16)
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.last = last
        self.flush_s = flush_s
        #: A stored message -> its event for the session's stream (None: nothing published).
        self.events: Callable[[Message], dict[str, Any]] | None = None
        self.snapshot: SessionSnapshot | None = None
        self._taken_at = 0.0
        # The last ``last`` messages read so far, the session's length then, and its creation
        # time (a session created again under the same id starts over).
        self._history: list[Message] = []
        self._known = 0
        self._created_at: int | None = None
        # A timer, not a task, until the first renewal is due: most replies end before it is.
        self._renew_timer: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None
        # The reply streaming now, and how much of it the store has (pieces, and their text).
        self._reply: StreamingReply | None = None
        self._flushed = 0
        self._flushed_text = ""

    @property
    def fresh(self) -> bool:
        """The lease is (still) ours and the snapshot current: no other writer can have written."""
        if self.snapshot is None:
            return False
        return time.monotonic() - self._taken_at < self.lease_s * 0.8

    async def add(self, message: Message) -> AppendResult:
        """Store the user's message, taking the lease (one round trip)."""
        await self._begin(message)
        assert self._appended is not None
        return self._appended

    async def history(self) -> SessionSnapshot:
        """The session as this turn sees it: from the lease's own write when fresh, else re-read
        while taking the lease again (one round trip)."""
        if not self.fresh:
            await self._begin(None)
        assert self.snapshot is not None
        return self.snapshot

    def keep_alive(self, reply: StreamingReply | None = None) -> None:
        """Renew the lease until ``finish``: every third of its time, and with the text of
        ``reply`` (if given) each ``flush_s`` in which it grew."""
        if self._renewer is None and self._renew_timer is None:
            self._reply, self._flushed, self._flushed_text = reply, 0, ""
            loop = asyncio.get_running_loop()
            self._renew_timer = loop.call_later(self._tick(), self._start_renewing)

    def _tick(self) -> float:
        third = self.lease_s / 3
        return third if self._reply is None else min(self.flush_s, third)

    def _start_renewing(self) -> None:
        self._renew_timer = None
        self._renewer = asyncio.create_task(self._renew_forever())

    async def finish(self, reply: Message | None) -> AppendResult | None:
        """Store the reply (if any) and give the lease back (one round trip)."""
        await self._stop_renewing()
        self.snapshot = None
        self._reply = None
        return await self.store.end_turn(self.session_id, self.token, reply, self._event(reply))

    @property
    def publishes(self) -> bool:
        """The messages it stores go on the session's event stream in the same round trip."""
        return self.events is not None and self.store.appends_events

    def _event(self, message: Message | None) -> dict[str, Any] | None:
        if message is None or not self.publishes:
            return None
        assert self.events is not None
        return self.events(message)

    async def release(self) -> None:
        """Give the lease back if held (a connection closing); errors are logged, not raised:
        the lease lapses by itself."""
        if self.snapshot is None and self._renewer is None and self._renew_timer is None:
            return
        with contextlib.suppress(StoreError):
            await self.finish(None)

    def forget(self) -> None:
        """Drop the history kept for the next turn (the connection is gone)."""
        self._history, self._known = [], 0

    async def _begin(self, message: Message | None) -> None:
        known = self._known
        started = await self._read(message, known)
        appended = started.appended
        info = started.snapshot.info
        if known and info.created_at != self._created_at:  # a new session under the same id
            known = 0
            started = await self._read(None, known)
        new = started.snapshot.messages
        if known and started.first == known:
            history = self._history + list(new) if new else self._history
        else:
            history = list(new)
        if len(history) > self.last:
            history = history[-self.last :]
        self._history, self._known, self._created_at = history, started.length, info.created_at
        first, summary = started.length - len(history), started.snapshot.summary
        self.snapshot = SessionSnapshot(started.snapshot.info, tuple(history), summary, first)
        self._appended = appended

    async def _read(self, message: Message | None, known: int) -> TurnStart:
        started = await self.store.begin_turn(
            self.session_id, self.token, message=message, last=self.last, wait_s=self.wait_s,
            known=known, event=self._event(message),
        )  # fmt: skip
        self._taken_at = time.monotonic()
        if started.recovered:
            log.info("session %s: a dead writer's reply was stored, interrupted", self.session_id)
        return started

    async def _stop_renewing(self) -> None:
        if self._renew_timer is not None:
            self._renew_timer.cancel()
            self._renew_timer = None
        if self._renewer is not None:
            renewer, self._renewer = self._renewer, None
            # A cancel can be swallowed by a call inside the renewer (asyncio.wait_for on Python
            # 3.11 sometimes does): cancel again until it ends, never wait on it unbounded.
            while not renewer.done():
                renewer.cancel()
                await asyncio.wait({renewer}, timeout=0.1)
            if not renewer.cancelled():
                renewer.exception()  # retrieved: errors were logged by the renewer

    async def _renew_forever(self) -> None:
        tick = self._tick()
        while True:
            partial, pieces = self._unflushed()
            if partial is not None or time.monotonic() - self._taken_at >= self.lease_s / 3:
                try:
                    if not await self.store.renew_turn(self.session_id, self.token, partial):
                        log.warning("session %s: the writer lease was lost", self.session_id)
                        return
                    self._taken_at = time.monotonic()
                    if partial is not None:
                        self._flushed, self._flushed_text = pieces, partial.text
                except StoreError as exc:  # keep trying: the lease may still be ours
                    log.warning("session %s: renewing the lease failed: %s", self.session_id, exc)
            await asyncio.sleep(tick)

    def _unflushed(self) -> tuple[PartialReply | None, int]:
        """The streaming reply's text, when it grew since the store last had it."""
        reply = self._reply
        if reply is None or len(reply.pieces) <= self._flushed:
            return None, self._flushed
        pieces = len(reply.pieces)
        text = self._flushed_text + "".join(reply.pieces[self._flushed : pieces])
        return PartialReply(reply.message_id, text), pieces
