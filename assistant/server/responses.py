"""A connection's responses: at most one at a time, streamed from its own task (so
``response.cancel`` is heard mid-stream), its deltas into the outbox, spoken when the session
speaks, and ``response.done`` always sent, whatever happened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Protocol

from assistant.auth.principal import Principal
from assistant.errors import AssistantError, InvalidRequestError, ResponseInProgressError
from assistant.handoff.gate import TurnGate
from assistant.messages import Message
from assistant.orchestrator import Orchestrator, ResponseOverrides, ResponseRun
from assistant.protocol import ResponseConfig
from assistant.protocol import fast_json as hot
from assistant.server.limits import KeyLimits
from assistant.server.metrics import Metrics
from assistant.server.outbox import Outbox
from assistant.turn_lease import TurnLease
from assistant.voice.speculation import Speculation

log = logging.getLogger(__name__)


class ReplyVoice(Protocol):
    """Speaks a response as it streams (the voice session implements it)."""

    def start(self, run: ResponseRun) -> ReplySpeech | None:
        """A speaker for ``run``'s text, or None when replies are not spoken."""
        ...


class ReplySpeech(Protocol):
    def feed(self, delta: str) -> None: ...

    async def end(self, run: ResponseRun) -> None:
        """Speak the rest (or stop, when ``run`` was cancelled) and close the audio."""
        ...


class Responses:
    def __init__(
        self,
        orchestrator: Orchestrator,
        session_id: str,
        lease: TurnLease,
        outbox: Outbox,
        metrics: Metrics,
        *,
        principal: Principal | None = None,
        limits: KeyLimits | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._principal = principal
        self._limits = limits
        self._session_id = session_id
        self._lease = lease
        self._outbox = outbox
        self._metrics = metrics
        self.voice: ReplyVoice | None = None
        #: The handoff's gate: the model silent while a person has the conversation.
        self.turns: TurnGate | None = None
        #: The session's defaults (``session.update``); a ``response.create`` may override them.
        self.max_output_tokens: int | None = None
        self.temperature: float | None = None
        self.running: ResponseRun | None = None
        self._task: asyncio.Task[None] | None = None
        self._interrupted: set[str] = set()  # ids of responses cut by the user's speech

    async def start(self, config: ResponseConfig, event_id: str | None = None) -> None:
        """``response.create``: ``response_in_progress`` while one streams; the key's limits
        (a request, tokens left, a generating place) are checked before anything is sent."""
        if self.running is not None:
            raise ResponseInProgressError(
                f"response {self.running.id} is still in progress; cancel it or wait for "
                "response.done",
                event_id=event_id,
            )
        places = await self._take_places(event_id)
        overrides = self._overrides(config)
        run = self._orchestrator.start_response()
        self.running = run
        self._outbox.emit(hot.response_created(run.id))
        self._task = asyncio.create_task(self._stream(run, overrides, event_id, places))

    @property
    def held(self) -> bool:
        """A person has the conversation (as last seen): the model is not to answer."""
        return self.turns is not None and self.turns.status != "bot"

    def speculate(self, message: Message) -> Speculation:
        """An early reply to ``message``, a spoken turn not stored yet (``assistant.voice.
        speculation``): generated into a buffer with the session's defaults; nothing sent."""
        return Speculation(
            self._orchestrator, self._lease, message, self._overrides(ResponseConfig()),
            before=self.wait,
        ).start()  # fmt: skip

    async def adopt(self, speculation: Speculation) -> None:
        """The pending ``speculation`` (its user message now stored) is committed and becomes the
        response: ``response.created``, its buffered deltas at once, then the rest, as any
        response. The key's limits are checked first (refused: it stays pending)."""
        if self.running is not None:
            raise ResponseInProgressError(f"response {self.running.id} is still in progress")
        places = await self._take_places(None)
        speculation.commit()
        run = speculation.run
        self.running = run
        self._outbox.emit(hot.response_created(run.id))
        deltas = speculation.deltas()
        stream = self._stream(run, speculation.overrides, None, places, deltas)
        self._task = asyncio.create_task(stream)

    async def _take_places(self, event_id: str | None) -> contextlib.AsyncExitStack:
        places = contextlib.AsyncExitStack()
        if self._limits is not None and self._principal is not None:
            await self._limits.request(self._principal)
            await self._limits.before_generation(self._principal)
            await places.enter_async_context(self._limits.generation(self._principal))
            if self.running is not None:  # another start won the race while this one waited
                await places.aclose()
                raise ResponseInProgressError("a response is in progress", event_id=event_id)
        return places

    def _overrides(self, config: ResponseConfig) -> ResponseOverrides:
        return ResponseOverrides(
            instructions=config.instructions,
            max_output_tokens=config.max_output_tokens or self.max_output_tokens,
            temperature=config.temperature if config.temperature is not None else self.temperature,
        )

    def cancel(self, response_id: str | None, event_id: str | None = None) -> None:
        """``response.cancel``: ``response_cancel_not_active`` when there is none to cancel."""
        run = self.running
        if run is None or (response_id and response_id != run.id):
            raise InvalidRequestError(
                "there is no response in progress to cancel",
                code="response_cancel_not_active",
                event_id=event_id,
            )
        run.cancel()

    def interrupt(self) -> None:
        """The user spoke over the response: it stops, and is stored as ``interrupted``."""
        if self.running is not None:
            self._interrupted.add(self.running.id)
            self.running.cancel()

    async def wait(self) -> None:
        """Until the running response (if any) is stored; the caller's cancellation does not
        cancel the response."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def close(self) -> None:
        """Cancel what is running and wait until it is stored."""
        if self.running is not None:
            self.running.cancel()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _stream(
        self,
        run: ResponseRun,
        overrides: ResponseOverrides,
        event_id: str | None,
        places: contextlib.AsyncExitStack,
        deltas: AsyncGenerator[str, None] | None = None,
    ) -> None:
        started = time.perf_counter()
        pieces: list[str] = []
        outbox = self._outbox
        speech = self.voice.start(run) if self.voice is not None else None
        try:
            if deltas is None and self.turns is not None:
                deltas = self.turns.respond(self._orchestrator, run, overrides, self._lease)
            elif deltas is None:
                deltas = self._orchestrator.respond(self._session_id, run, overrides, self._lease)
            # aclosing: if this task is cancelled, the reply is still stored before it ends.
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    if not pieces:
                        self._metrics.first_delta_s.observe(time.perf_counter() - started)
                    pieces.append(delta)
                    outbox.emit(hot.text_delta(run.id, run.item_id, delta))
                    if len(outbox) >= outbox.burst:
                        # A model faster than the loop turns: let the sender write before the
                        # queue is full. Only a sender stalled by the socket lets it fill.
                        await asyncio.sleep(0)
                    if speech is not None:
                        speech.feed(delta)
        except AssistantError as exc:
            self._fail(run, exc, event_id)
        except Exception:  # never leave the client without a response.done
            log.exception("response %s failed", run.id)
            self._fail(run, AssistantError("internal error (logged)"), event_id)
        finally:
            if speech is not None:
                await speech.end(run)
            await places.aclose()  # the generating place is given back,
            if self._limits is not None and self._principal is not None:  # the tokens counted,
                await self._limits.count_tokens(self._principal, run.usage.output_tokens)
            self._done(run, "".join(pieces))  # before the client hears it is done
            self.running = None

    def _fail(self, run: ResponseRun, exc: AssistantError, event_id: str | None) -> None:
        run.error = run.error or exc
        run.status = "failed"
        self._outbox.emit_error(exc, event_id)

    def _done(self, run: ResponseRun, text: str) -> None:
        status = run.status or "failed"
        self._metrics.response(status, run.usage.output_tokens)
        if run.message is not None:
            self._outbox.emit(hot.text_done(run.id, run.item_id, text))
        details = None
        cancel_reason = self._cancel_reason(run)  # always: forgets the run's interruption
        if run.error is not None:
            details = {"type": "failed", "error": {"type": run.error.type, "code": run.error.code}}
        elif status == "cancelled":
            details = {"type": status, "reason": cancel_reason}
        elif status == "incomplete":
            details = {"type": status, "reason": "max_output_tokens"}
        usage = (run.usage.input_tokens, run.usage.output_tokens)
        self._outbox.emit(hot.response_done(run.id, status, details, run.message, usage))

    def _cancel_reason(self, run: ResponseRun) -> str:
        """Why a cancelled response stopped: the user spoke over it, or the client cancelled it."""
        if run.id in self._interrupted:
            self._interrupted.discard(run.id)
            return "turn_detected"
        return "client_cancelled"
