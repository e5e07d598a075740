"""The ``/v1/realtime`` WebSocket: one connection, one session. Client events are parsed and handled
in order; a response streams from its own task so ``response.cancel`` is heard mid-stream. Every
event to the client goes through one bounded send queue: a client that does not keep up is told
(``slow_client``) and disconnected instead of growing the server's memory.

Voice: binary frames (raw PCM16) and ``input_audio_buffer.*`` events feed the connection's
``VoicePipeline`` (``assistant.voice``), built on the first audio; its events become
``input_audio_buffer.*`` / ``conversation.item.input_audio_transcription.*`` wire events, and a
turn the server VAD ends is stored and answered here. Speech that starts while a response streams
cancels it (barge-in). With ``audio`` in the session's modalities, replies are also spoken
(``assistant.spoken_reply``) as ``response.output_audio.delta`` events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from fastapi import WebSocket
from starlette.types import Receive, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from assistant import protocol_json as hot
from assistant.config import ServerSettings
from assistant.errors import (
    AssistantError,
    InvalidRequestError,
    ResponseInProgressError,
    SlowClientError,
)
from assistant.messages import SessionInfo
from assistant.orchestrator import Orchestrator, ResponseOverrides, ResponseRun
from assistant.protocol import (
    ConversationItemCreate,
    ErrorEvent,
    ResponseCancel,
    ResponseConfig,
    ResponseCreate,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    WireSession,
    parse_client_event,
)
from assistant.server.metrics import Metrics
from assistant.server.realtime_voice import VoiceMixin
from assistant.speech import SpeechModels

log = logging.getLogger(__name__)

_CLOSE = object()  # tells the sender to stop
CLOSE_SLOW_CLIENT = 4008


class RealtimeConnection(VoiceMixin):
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
    ) -> None:
        self.ws = ws
        # ASGI messages in and out: the server's own callables when given (the hot path then
        # skips the wrapper's per-message state checks), else the wrapper's.
        self._asgi_receive = receive or ws.receive
        self._asgi_send = send or ws.send
        self.orchestrator = orchestrator
        self.metrics = metrics
        self.settings = settings
        self.session = session
        # Events waiting to be written (models, or JSON text already encoded), at most
        # ``send_queue_events``; the sender sleeps on ``_wakeup`` when there are none.
        self._outbox: collections.deque[object] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._burst_events = settings.send_queue_events // 2
        self._closed = False
        self._run: ResponseRun | None = None
        # This connection's writer lease on the session: taken by a user item, given back when
        # the reply is stored (two store round trips per text turn).
        self._lease = orchestrator.new_lease(session.id)
        self._run_task: asyncio.Task[None] | None = None
        self._max_output_tokens: int | None = None
        self._temperature: float | None = None
        self._init_voice(speech)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        sender = asyncio.create_task(self._sender())
        self.metrics.connections.inc()
        try:
            self.emit(SessionCreated(session=self._wire_session()))
            await self._receive_loop()
        finally:
            self.metrics.connections.dec()
            await self._close_voice()  # first: a spoken turn being finished starts no response
            await self._finish_response(cancel=True)
            await self._lease.release()
            self._closed = True
            self._push(_CLOSE)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, 5)

    async def _receive_loop(self) -> None:
        while not self._closed:
            try:
                frame = await self._asgi_receive()
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                await self._handle_bytes(frame.get("bytes") or b"")
                continue
            await self._handle_text(text)

    async def _handle_text(self, text: str) -> None:
        if len(text) > self.settings.max_event_bytes:
            self.emit_error(
                InvalidRequestError(
                    f"event of {len(text)} bytes exceeds {self.settings.max_event_bytes}",
                    code="event_too_large",
                )
            )
            return
        event = None
        try:
            event = parse_client_event(text)
            self.metrics.event_in(event.type)
            await self._dispatch(event)
        except AssistantError as exc:
            self.emit_error(exc, exc.event_id or getattr(event, "event_id", None))

    async def _dispatch(self, event: object) -> None:
        if isinstance(event, ConversationItemCreate):
            await self._on_item_create(event)
        elif isinstance(event, ResponseCreate):
            self._on_response_create(event)
        elif isinstance(event, ResponseCancel):
            self._on_response_cancel(event)
        elif isinstance(event, SessionUpdate):
            await self._on_session_update(event)
        else:
            await self._dispatch_voice(event)

    # -- sending -----------------------------------------------------------------------------------

    def emit(self, event: object) -> None:
        """Queue an event for the client: a server event model, or its JSON text."""
        if self._closed:
            return
        if len(self._outbox) >= self.settings.send_queue_events:
            log.warning("session %s: client too slow, disconnecting", self.session.id)
            self.metrics.error(SlowClientError.code)
            self._closed = True
            if self._run is not None:
                self._run.cancel()
            asyncio.ensure_future(self._close(CLOSE_SLOW_CLIENT, "slow_client"))
            return
        self._push(event)

    def _push(self, event: object) -> None:
        self._outbox.append(event)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def emit_error(self, exc: AssistantError, event_id: str | None = None) -> None:
        self.metrics.error(exc.code)
        self.emit(ErrorEvent.from_exception(exc, event_id))

    async def _sender(self) -> None:
        """Writes the queued events in order. The write waits while the socket's buffer is full
        (the server's flow control), so a client that does not read makes the queue grow until
        ``emit`` gives up on it."""
        outbox, loop = self._outbox, asyncio.get_running_loop()
        while True:
            if not outbox:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            event = outbox.popleft()
            if event is _CLOSE:
                return
            text = event if isinstance(event, str) else event.model_dump_json()  # type: ignore[attr-defined]
            try:
                await self._asgi_send({"type": "websocket.send", "text": text})
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True
                return

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            if self.ws.client_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason)

    # -- handlers ----------------------------------------------------------------------------------

    def _wire_session(self) -> WireSession:
        return WireSession(
            id=self.session.id,
            instructions=self.session.instructions,
            max_output_tokens=self._max_output_tokens,
            temperature=self._temperature,
            **self._voice_session_fields(),
        )

    async def _on_session_update(self, event: SessionUpdate) -> None:
        config = event.session
        await self._update_voice_settings(config)
        if config.instructions is not None:
            self.session = await self.orchestrator.update_session(
                self.session.id, instructions=config.instructions
            )
        if config.max_output_tokens is not None:
            self._max_output_tokens = config.max_output_tokens
        if config.temperature is not None:
            self._temperature = config.temperature
        self.emit(SessionUpdated(session=self._wire_session()))

    async def _on_item_create(self, event: ConversationItemCreate) -> None:
        message = await self._message_from_item(event.item)
        result = await self.orchestrator.add_item(self.session.id, message, self._lease)
        self.emit(hot.item_created(result.message, event.previous_item_id))
        self._emit_upload_transcripts(result.message)

    def _on_response_create(self, event: ResponseCreate) -> None:
        if self._run is not None:
            raise ResponseInProgressError(
                f"response {self._run.id} is still in progress; cancel it or wait for response.done",
                event_id=event.event_id,
            )
        self._start_response(event.response, event.event_id)

    def _start_response(self, config: ResponseConfig, event_id: str | None) -> None:
        overrides = ResponseOverrides(
            instructions=config.instructions,
            max_output_tokens=config.max_output_tokens or self._max_output_tokens,
            temperature=config.temperature if config.temperature is not None else self._temperature,
        )
        run = self.orchestrator.start_response()
        self._run = run
        self.emit(hot.response_created(run.id))
        self._run_task = asyncio.create_task(self._stream_response(run, overrides, event_id))

    def _on_response_cancel(self, event: ResponseCancel) -> None:
        run = self._run
        if run is None or (event.response_id and event.response_id != run.id):
            raise InvalidRequestError(
                "there is no response in progress to cancel",
                code="response_cancel_not_active",
                event_id=event.event_id,
            )
        run.cancel()

    async def _stream_response(
        self, run: ResponseRun, overrides: ResponseOverrides, event_id: str | None
    ) -> None:
        started = time.perf_counter()
        pieces: list[str] = []
        spoken = self._speaker(run) if "audio" in self._modalities else None
        try:
            deltas = self.orchestrator.respond(self.session.id, run, overrides, self._lease)
            # aclosing: if this task is cancelled, the reply is still stored before it ends.
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    if not pieces:
                        self.metrics.first_delta_s.observe(time.perf_counter() - started)
                    pieces.append(delta)
                    self.emit(hot.text_delta(run.id, run.item_id, delta))
                    if len(self._outbox) >= self._burst_events:
                        # A model faster than the loop turns: let the sender write before the
                        # queue is full. Only a sender stalled by the socket lets it fill.
                        await asyncio.sleep(0)
                    if spoken is not None:
                        spoken.feed(delta)
        except AssistantError as exc:
            run.error = run.error or exc
            run.status = "failed"
            self.emit_error(exc, event_id)
        except Exception as exc:  # never leave the client without a response.done
            log.exception("response %s failed", run.id)
            run.error = AssistantError(f"internal error: {exc}")
            run.status = "failed"
            self.emit_error(run.error, event_id)
        finally:
            if spoken is not None:
                await self._end_speech(run, spoken)
            self._send_done(run, "".join(pieces))
            self._run = None

    def _send_done(self, run: ResponseRun, text: str) -> None:
        status = run.status or "failed"
        self.metrics.response(status, run.usage.output_tokens)
        if run.message is not None:
            self.emit(hot.text_done(run.id, run.item_id, text))
        details = None
        cancel_reason = self._cancel_reason(run)
        if run.error is not None:
            details = {"type": "failed", "error": {"type": run.error.type, "code": run.error.code}}
        elif status in ("cancelled", "incomplete"):
            reason = cancel_reason if status == "cancelled" else "max_output_tokens"
            details = {"type": status, "reason": reason}
        usage = (run.usage.input_tokens, run.usage.output_tokens)
        self.emit(hot.response_done(run.id, status, details, run.message, usage))

    async def _finish_response(self, *, cancel: bool) -> None:
        if self._run is not None and cancel:
            self._run.cancel()
        if self._run_task is not None:
            with contextlib.suppress(Exception):
                await self._run_task
