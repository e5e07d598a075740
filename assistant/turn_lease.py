"""A connection's hold on its session's writer lease: taken by the first write of a turn (the user's
item, or the response when there was none), kept alive while a reply streams, and given back when
the reply is stored. Both ends are one store round trip each, and the history the first returns is
what the response is built from, so a text turn costs two round trips.

Between the user's item and ``response.create`` the lease is not renewed: it lapses after the
store's lease time if no response follows, and the history is then read again before responding.

The lease keeps the history it has read (stored messages never change), so each turn's read only
brings the messages stored since: a turn costs the same at message 4 and message 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from assistant.errors import StoreError
from assistant.messages import Message
from assistant.ports import AppendResult, SessionSnapshot, SessionStore, TurnStart

log = logging.getLogger(__name__)


class TurnLease:
    def __init__(
        self, store: SessionStore, session_id: str, *, lease_s: float, wait_s: float, last: int
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.token = secrets.token_hex(16)
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.last = last
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

    def keep_alive(self) -> None:
        """Renew the lease every third of its time until ``finish``."""
        if self._renewer is None and self._renew_timer is None:
            loop = asyncio.get_running_loop()
            self._renew_timer = loop.call_later(self.lease_s / 3, self._start_renewing)

    def _start_renewing(self) -> None:
        self._renew_timer = None
        self._renewer = asyncio.create_task(self._renew_forever())

    async def finish(self, reply: Message | None) -> AppendResult | None:
        """Store the reply (if any) and give the lease back (one round trip)."""
        await self._stop_renewing()
        self.snapshot = None
        return await self.store.end_turn(self.session_id, self.token, reply)

    async def release(self) -> None:
        """Give the lease back if held (a connection closing); errors are logged, not raised:
        the lease lapses by itself."""
        if self.snapshot is None and self._renewer is None and self._renew_timer is None:
            return
        with contextlib.suppress(StoreError):
            await self.finish(None)

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
        self.snapshot = SessionSnapshot(started.snapshot.info, tuple(history))
        self._appended = appended

    async def _read(self, message: Message | None, known: int) -> TurnStart:
        started = await self.store.begin_turn(
            self.session_id, self.token, message=message, last=self.last, wait_s=self.wait_s,
            known=known,
        )  # fmt: skip
        self._taken_at = time.monotonic()
        return started

    async def _stop_renewing(self) -> None:
        if self._renew_timer is not None:
            self._renew_timer.cancel()
            self._renew_timer = None
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None

    async def _renew_forever(self) -> None:
        while True:
            try:
                if not await self.store.renew_turn(self.session_id, self.token):
                    log.warning("session %s: the writer lease was lost", self.session_id)
                    return
                self._taken_at = time.monotonic()
            except StoreError as exc:  # keep trying: the lease may still be ours
                log.warning("session %s: renewing the lease failed: %s", self.session_id, exc)
            await asyncio.sleep(self.lease_s / 3)
