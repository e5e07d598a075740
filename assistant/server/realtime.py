"""The ``/v1/realtime`` WebSocket: one connection, one session. Client events are parsed and
dispatched in order. The connection owns the transport and dispatch; it is composed of
collaborators with explicit interfaces, each owning one concern:

    Outbox        the bounded send queue and its sender task (backpressure, ``slow_client``)
    Responses     one response at a time, streamed from its own task, cancel, ``response.done``
    VoiceSession  the audio buffer, VAD, streaming transcript, barge-in and spoken replies
    TurnLease     this connection's writer lease on the session
    SessionFeed   the session's event stream: others' messages and status changes, live
    TurnGate      the model silent while a person has the conversation (``handoff.gate``)

Text items are handled here: a client item becomes a message (uploaded audio transcribed by the
voice session first) and is stored through the lease, which the response that follows keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket
from starlette.types import Receive, Send
from starlette.websockets import WebSocketDisconnect

from assistant import heap
from assistant.auth.principal import Principal
from assistant.config import ServerSettings
from assistant.errors import AssistantError, InvalidRequestError
from assistant.handoff.gate import TurnGate
from assistant.handoff.runtime import HandoffRuntime
from assistant.messages import AudioPart, Message, SessionInfo
from assistant.orchestrator import Orchestrator
from assistant.ports import AppendResult
from assistant.protocol import (
    ConversationHandoffRequest,
    ConversationItemCreate,
    InputAudioTranscriptionCompleted,
    ResponseCancel,
    ResponseCreate,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    WireSession,
    message_from_input,
    parse_client_event,
)
from assistant.protocol import fast_json as hot
from assistant.server.limits import KeyLimits
from assistant.server.metrics import Metrics
from assistant.server.outbox import CLOSE_SLOW_CLIENT, Outbox
from assistant.server.responses import Responses
from assistant.server.session_feed import SessionFeed
from assistant.server.voice_session import VOICE_EVENTS, VoiceSession
from assistant.voice.models import SpeechModels

__all__ = ["CLOSE_SLOW_CLIENT", "RealtimeConnection"]

#: A connection that received more than this gives freed memory back to the system as it closes.
_TRIM_AFTER_BYTES = 1024 * 1024


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (the connection's own) called through a weak reference, for a collaborator to
    hold: no reference cycle back to the connection, so a closed connection and everything it
    holds (its socket's objects and buffers) is freed as it closes, not at the collector's next
    full pass, which the server's tuning makes rare (``ServerSettings.gc_threshold``): the soak
    found every closed connection waiting for it, ~5 a second per worker, and RSS creeping."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - the method's own
        bound = ref()
        return None if bound is None else bound(*args, **kwargs)

    return call


class RealtimeConnection:
    def __init__(
        self,
        ws: WebSocket,
        orchestrator: Orchestrator,
        metrics: Metrics,
        settings: ServerSettings,
        session: SessionInfo,
        *,
        speech: SpeechModels | None = None,
        receive: Receive | None = None,
        send: Send | None = None,
        principal: Principal | None = None,
        limits: KeyLimits | None = None,
        handoff: HandoffRuntime | None = None,
        events_after: str | None = None,
    ) -> None:
        """``principal`` and ``limits``: the caller and its key's limits (None: no limits).
        ``handoff``: the process's handoff and event hub (None: neither); ``events_after``: the
        client's last seen sequence number of the session's events (None: from now on)."""
        # ASGI messages in and out: the server's own callables when given (the hot path then
        # skips the wrapper's per-message state checks), else the wrapper's.
        self._receive = receive or ws.receive
        self.orchestrator = orchestrator
        self.metrics = metrics
        self.settings = settings
        self.session = session
        self.outbox = Outbox(
            ws, send or ws.send, metrics, limit=settings.send_queue_events,
            on_overflow=_weakly(self._on_slow_client),
        )  # fmt: skip
        # This connection's writer lease on the session: taken by a user item, given back when
        # the reply is stored (two store round trips per text turn).
        self.lease = orchestrator.new_lease(session.id)
        self.responses = Responses(
            orchestrator, session.id, self.lease, self.outbox, metrics,
            principal=principal, limits=limits,
        )  # fmt: skip
        self.voice = VoiceSession(
            speech, self.outbox, self.responses, _weakly(self._add_message), metrics
        )
        self._received = 0  # bytes the client sent
        self.feed: SessionFeed | None = None
        self.gate: TurnGate | None = None
        self._events_after = events_after
        self._last_seq: str | None = None
        if handoff is not None:
            tenant = orchestrator.store.tenant
            self.feed = SessionFeed(handoff.hub, tenant, session.id, self.outbox)
            self.gate = TurnGate(handoff.handoff, tenant, session.id, origin=self.feed.origin)
            self.gate.status = session.status
            self.feed.on_status = self.gate.note_status
            self.feed.on_item = self.voice.speak_added
            self.lease.events = self.gate.lease_events
            self.responses.turns = self.gate

    # -- lifecycle ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        sender = asyncio.create_task(self.outbox.run())
        self.metrics.connections.inc()
        try:
            if self.feed is not None:
                self._last_seq = await self.feed.last_seq()
            self.outbox.emit(SessionCreated(session=self._wire_session()))
            if self.feed is not None:
                await self.feed.start(self._events_after or self._last_seq or "0")
            await self._receive_loop()
        finally:
            self.metrics.connections.dec()
            if self.feed is not None:
                await self.feed.stop()
            await self.voice.aclose()  # first: a spoken turn being finished starts no response
            await self.responses.close()
            self.responses.voice = None  # the voice session's link back: no cycle left to collect
            await self.lease.release()
            self.outbox.finish()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, 5)
            self.lease.forget()  # the history it kept for the next turn
            self.orchestrator.forget_session(self.session.id)  # its last prompt, parsed metadata
            if self._received > _TRIM_AFTER_BYTES:
                heap.trim()  # this connection's large messages are freed now

    async def _receive_loop(self) -> None:
        while not self.outbox.closed:
            try:
                frame = await self._receive()
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            self._received += len(text) if text is not None else len(frame.get("bytes") or b"")
            try:
                if text is None:
                    await self.voice.handle_bytes(frame.get("bytes") or b"")
                else:
                    await self._handle_text(text)
            except AssistantError as exc:
                self.outbox.emit_error(exc, exc.event_id)

    def _on_slow_client(self) -> None:
        if self.responses.running is not None:
            self.responses.running.cancel()

    # -- dispatch ----------------------------------------------------------------------------------

    async def _handle_text(self, text: str) -> None:
        limit = self.settings.max_event_bytes
        if len(text) > limit:
            raise InvalidRequestError(
                f"event of {len(text)} bytes exceeds {limit}", code="event_too_large"
            )
        event = parse_client_event(text)
        self.metrics.event_in(event.type)
        try:
            await self._dispatch(event)
        except AssistantError as exc:
            exc.event_id = exc.event_id or event.event_id
            raise

    async def _dispatch(self, event: object) -> None:
        if isinstance(event, ConversationItemCreate):
            await self._on_item_create(event)
        elif isinstance(event, ResponseCreate):
            await self.responses.start(event.response, event.event_id)
        elif isinstance(event, ResponseCancel):
            self.responses.cancel(event.response_id, event.event_id)
        elif isinstance(event, SessionUpdate):
            await self._on_session_update(event)
        elif isinstance(event, VOICE_EVENTS):
            await self.voice.handle(event)
        elif isinstance(event, ConversationHandoffRequest):
            if self.gate is None:
                raise InvalidRequestError(
                    "this server has no human handoff", code="invalid_request"
                )
            await self.gate.request()

    # -- the session and its text items ------------------------------------------------------------

    def _wire_session(self) -> WireSession:
        return WireSession(
            id=self.session.id,
            instructions=self.session.instructions,
            max_output_tokens=self.responses.max_output_tokens,
            temperature=self.responses.temperature,
            status=self.session.status
            if self.feed is None
            else self.feed.status or self.session.status,
            last_seq=self._last_seq,
            **self.voice.session_fields(),
        )

    async def _on_session_update(self, event: SessionUpdate) -> None:
        config = event.session
        await self.voice.update(config)
        if config.instructions is not None:
            self.session = await self.orchestrator.update_session(
                self.session.id, instructions=config.instructions
            )
        if config.max_output_tokens is not None:
            self.responses.max_output_tokens = config.max_output_tokens
        if config.temperature is not None:
            self.responses.temperature = config.temperature
        self.outbox.emit(SessionUpdated(session=self._wire_session()))

    async def _on_item_create(self, event: ConversationItemCreate) -> None:
        message = await self.voice.transcribe_uploads(message_from_input(event.item))
        result = await self._add_message(message)
        self.outbox.emit(hot.item_created(result.message, event.previous_item_id))
        for index, part in enumerate(result.message.content):
            if isinstance(part, AudioPart):
                self.outbox.emit(
                    InputAudioTranscriptionCompleted(
                        item_id=result.message.id, content_index=index, transcript=part.transcript
                    )
                )

    async def _add_message(self, message: Message) -> AppendResult:
        result = await self.orchestrator.add_item(self.session.id, message, self.lease)
        if self.gate is not None and result.created:  # on the session's stream, for the others
            snapshot = self.lease.snapshot
            info = snapshot.info if snapshot else None
            await self.gate.message_added(result.message, info, result.seq)
        return result
