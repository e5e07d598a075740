"""The early reply to a spoken turn: started at the user's pause, before the silence wait ends, and
either taken as the turn's response or dropped without a trace.

LiveKit's *preemptive generation* is the anchor: once the transcript at a pause looks final, the
reply is generated at once; if the turn really ends with that transcript the reply is already
under way, else it is thrown away. Here:

- ``Speculation`` runs ``Orchestrator.respond`` (the same prompt building, the same model options
  as any response) over a ``TentativeLease``: the stored history (read, not locked) plus the user's
  message held in memory, a ``Message`` that is nowhere stored (under an id of its own: the
  prompt cache takes a message id for its content, and the stored turn's text may differ). The
  deltas go into a buffer.
- ``commit()``, once the turn ended with the same transcript and the user's message is stored
  (through the connection's real lease): the buffered deltas are handed over at once, the rest
  as they come (``deltas()``), and the lease forwards to the real one from then on, so the reply
  is kept alive and stored as usual.
- ``drop()``, when voice came back or the final transcript differs: the generation is cancelled
  and nothing is written (the tentative lease writes nothing until committed) nor sent (nothing
  is sent before ``commit``).

Commit or drop is decided once; the reply's storing (``finish``) waits for it, so a reply that
was all generated before the turn ended is stored only if the turn is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Literal

from assistant.errors import AssistantError, SessionNotFoundError
from assistant.messages import Message, new_id
from assistant.orchestrator import Orchestrator, ResponseOverrides, ResponseRun
from assistant.ports import AppendResult, SessionSnapshot
from assistant.turn_lease import StreamingReply, TurnLease

log = logging.getLogger(__name__)

Outcome = Literal["pending", "committed", "dropped"]
Before = Callable[[], Awaitable[None]]


class TentativeLease(TurnLease):
    """A lease for a reply that may never be: ``history`` is the stored history (read without
    taking the writer lease) with the tentative user message last; nothing is written until
    ``decide(True)``, after which it is the connection's ``real`` lease (which stored the user's
    message meanwhile). ``finish`` waits for the decision."""

    def __init__(self, real: TurnLease, message: Message, before: Before | None = None) -> None:
        super().__init__(
            real.store, real.session_id, lease_s=real.lease_s, wait_s=real.wait_s,
            last=real.last, flush_s=real.flush_s,
        )  # fmt: skip
        self.real = real
        self.message = message.model_copy(update={"id": new_id("msg")})  # see the module doc
        self._before = before
        #: Ids of the stored messages the prompt was built on (None until read).
        self.history_ids: tuple[str, ...] | None = None
        self._decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._streaming: StreamingReply | None = None

    @property
    def decided(self) -> bool:
        return self._decision.done()

    def decide(self, commit: bool) -> None:
        if self._decision.done():
            return
        self._decision.set_result(commit)
        if commit and self._streaming is not None:
            self.real.keep_alive(self._streaming)

    async def history(self) -> SessionSnapshot:
        if self._before is not None:
            await self._before()  # a reply still being stored goes first
        last = max(self.last - 1, 1)
        snapshot = await self.store.load(self.session_id, last=last)
        if snapshot is None:
            raise SessionNotFoundError("the session is gone")
        self.history_ids = tuple(m.id for m in snapshot.messages)
        return SessionSnapshot(snapshot.info, (*snapshot.messages, self.message))

    def keep_alive(self, reply: StreamingReply | None = None) -> None:
        self._streaming = reply
        if self._decision.done() and self._decision.result():
            self.real.keep_alive(reply)

    async def finish(self, reply: Message | None) -> AppendResult | None:
        if not await asyncio.shield(self._decision):
            return None
        return await self.real.finish(reply)

    async def release(self) -> None:
        if self._decision.done() and self._decision.result():
            await self.real.release()


class _End:
    def __init__(self, error: AssistantError | None = None) -> None:
        self.error = error


class Speculation:
    """The early reply to ``message`` (the tentative user turn, its text the transcript at the
    pause). Start it with ``start()``; then ``commit()`` + ``deltas()``, or ``drop()``."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        lease: TurnLease,
        message: Message,
        overrides: ResponseOverrides = ResponseOverrides(),
        *,
        before: Before | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.message = message  # its id: the item id the stored turn will have
        self.overrides = overrides
        self.run: ResponseRun = orchestrator.start_response()
        self.lease = TentativeLease(lease, message, before)
        self.outcome: Outcome = "pending"
        self.buffered = 0  # deltas generated before the commit
        self._queue: asyncio.Queue[str | _End] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def transcript(self) -> str:
        return self.message.text

    def start(self) -> Speculation:
        self._task = asyncio.create_task(self._pump(), name=f"speculation {self.run.id}")
        return self

    def matches_store(self) -> bool:
        """After the user's message was stored through the real lease: the history it returned
        is the one the prompt was built on, with that message last (no other writer came in
        between)."""
        snapshot, ids = self.lease.real.snapshot, self.lease.history_ids
        if snapshot is None or ids is None or not snapshot.messages:
            return False
        *before, last = snapshot.messages
        return last.id == self.message.id and tuple(m.id for m in before) == ids

    def commit(self) -> None:
        """The turn ended with this transcript and its message is stored: the reply is the
        turn's response from now on (stored through the real lease)."""
        if self.outcome != "pending":
            raise RuntimeError(f"the speculation was already {self.outcome}")
        self.outcome = "committed"
        log.debug("early reply %s committed with %d deltas buffered", self.run.id, self.buffered)
        self.lease.decide(True)

    def drop(self) -> None:
        """Cancel it: nothing of it is sent or stored."""
        if self.outcome != "pending":
            return
        self.outcome = "dropped"
        self.run.cancel()
        self.lease.decide(False)

    async def wait(self) -> None:
        """Until the generation is over (a dropped one: cancelled)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def deltas(self) -> AsyncGenerator[str, None]:
        """After ``commit``: the buffered deltas at once, then the rest as they come; raises the
        generation's error. Closing it early cancels the reply (which is stored as cut short)."""
        if self.outcome != "committed":
            raise RuntimeError("deltas() before commit()")
        finished = False
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    finished = True
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if not finished:
                self.run.cancel()
                await self.wait()

    async def _pump(self) -> None:
        generator = self.orchestrator.respond(
            self.lease.session_id, self.run, self.overrides, self.lease
        )
        error: AssistantError | None = None
        try:
            async with contextlib.aclosing(generator):
                async for delta in generator:
                    if self.outcome == "pending":
                        self.buffered += 1
                    self._queue.put_nowait(delta)
        except AssistantError as exc:
            error = exc
            if self.outcome == "pending":
                self.drop()
        except Exception:  # a bug: the turn is answered the normal way
            log.exception("speculation %s failed", self.run.id)
            error = AssistantError("internal error (logged)")
            self.drop()
        finally:
            self._queue.put_nowait(_End(error))


__all__ = ["Speculation", "TentativeLease"]
