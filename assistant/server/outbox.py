"""A connection's way out: one bounded queue of events, written in order by one sender task.

The write waits while the socket's buffer is full (the server's flow control), so a client that
does not read makes the queue grow until ``emit`` gives up on it: the client is told
(``slow_client``, close code 4008) and disconnected instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable

from fastapi import WebSocket
from starlette.types import Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from assistant.errors import AssistantError, SlowClientError
from assistant.protocol import ErrorEvent
from assistant.server.metrics import Metrics

log = logging.getLogger(__name__)

CLOSE_SLOW_CLIENT = 4008
_CLOSE = object()  # tells the sender to stop


class Outbox:
    """Events waiting to be written (server event models, or their JSON text), at most ``limit``.
    ``on_overflow`` runs once when a client is dropped for being too slow (the connection stops
    what it is generating)."""

    def __init__(
        self,
        ws: WebSocket,
        send: Send,
        metrics: Metrics,
        *,
        limit: int,
        on_overflow: Callable[[], None] = lambda: None,
    ) -> None:
        self._ws = ws
        self._send = send
        self._metrics = metrics
        self._limit = limit
        self._on_overflow = on_overflow
        self._events: collections.deque[object] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        #: Past this many queued events a streaming response yields to the sender.
        self.burst = limit // 2
        self.closed = False

    def __len__(self) -> int:
        return len(self._events)

    def emit(self, event: object) -> None:
        """Queue an event for the client: a server event model, or its JSON text."""
        if self.closed:
            return
        if len(self._events) >= self._limit:
            log.warning("client too slow, disconnecting")
            self._metrics.error(SlowClientError.code)
            self.closed = True
            self._on_overflow()
            asyncio.ensure_future(self.close(CLOSE_SLOW_CLIENT, "slow_client"))
            return
        self._push(event)

    def emit_error(self, exc: AssistantError, event_id: str | None = None) -> None:
        self._metrics.error(exc.code)
        self.emit(ErrorEvent.from_exception(exc, event_id))

    def finish(self) -> None:
        """No more events: the sender stops once it has written what is queued."""
        self.closed = True
        self._push(_CLOSE)

    async def run(self) -> None:
        """The sender: writes the queued events in order until ``finish``."""
        events, loop = self._events, asyncio.get_running_loop()
        while True:
            if not events:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            event = events.popleft()
            if event is _CLOSE:
                return
            text = event if isinstance(event, str) else event.model_dump_json()  # type: ignore[attr-defined]
            try:
                await self._send({"type": "websocket.send", "text": text})
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True
                return

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            if self._ws.client_state == WebSocketState.CONNECTED:
                await self._ws.close(code, reason)

    def _push(self, event: object) -> None:
        self._events.append(event)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
