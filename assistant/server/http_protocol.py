"""uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn times out an idle keep-alive connection (``timeout_keep_alive``, 5 s) but not a request
that is still arriving: a client that opens a connection and sends ``GET / HTTP/1.1\\r\\nHost:
x\\r\\n`` and never the blank line holds the connection (a file descriptor, a slot in the
server's connection set) forever, and a few thousand such clients starve the server (slowloris).
Here a connection gets ``header_timeout_s`` from when it is made, and a later request on a
keep-alive connection as much from its first byte, to send its request line and headers whole;
one that does not is closed (after a ``408 Request Timeout`` when it had sent part of a request).
Once the headers are in, the deadline is off: a request's body, the app's work and a WebSocket
(the upgrade happens when its headers are in) have their own limits.

The protocol is uvicorn's own (``uvicorn.protocols.http.auto``: httptools when installed, else
h11) with a few hooks; ``uvicorn_options`` gives what to pass to ``uvicorn.run`` /
``uvicorn.Config``. The class is found by name (``HeaderTimeout10000ms``), so uvicorn's own
worker processes, which unpickle their config, get the same one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)

_BODY_408 = b"the request headers took too long"
_RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY_408), _BODY_408)
)
_NAME = re.compile(r"HeaderTimeout(\d+)ms")


class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol closing a connection whose request headers are not in within
    ``header_timeout_s`` (0: no deadline). Subclasses made by ``http_protocol`` set it."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._header_timer: asyncio.TimerHandle | None = None
        self._waited_cycle: object = None  # the request cycle before the awaited headers
        self._request_begun = False
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._await_headers()  # a new request on a keep-alive connection
        self._request_begun = True
        super().data_received(data)
        if self._header_timer is not None and self._headers_in():
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's, then this protocol lets go of its parser: the WebSocket protocol has the
        connection now and this one never hears of it again (no ``connection_lost``), and
        httptools' parser refers back to it, a cycle that kept every upgraded connection's
        objects (and its transport's) until the collector's next full pass, which the
        server's tuning makes rare (``ServerSettings.gc_threshold``)."""
        super().handle_websocket_upgrade()
        self.parser = None

    def _await_headers(self) -> None:
        if self.header_timeout_s > 0:
            self._waited_cycle, self._request_begun = self.cycle, False
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _headers_in(self) -> bool:
        """A new request cycle started (its headers are parsed), the connection became a
        WebSocket (upgraded once its headers were in), or it is closing (a bad request)."""
        transport = self.transport
        return (
            self.cycle is not self._waited_cycle
            or transport.is_closing()
            or transport.get_protocol() is not self
        )

    def _too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            return
        log.debug("closing a connection whose request headers took over %s s",
                  self.header_timeout_s)  # fmt: skip
        if self._request_begun:
            transport.write(_RESPONSE_408)
        transport.close()


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class with this deadline (one class per value, found again by its name)."""
    ms = max(0, round(header_timeout_s * 1000))
    name = f"HeaderTimeout{ms}ms"
    cls = globals().get(name)
    if cls is None:
        attributes = {"header_timeout_s": ms / 1000, "__module__": __name__, "__qualname__": name}
        cls = globals()[name] = type(name, (HeaderTimeoutProtocol,), attributes)
    return cls


def __getattr__(name: str) -> Any:
    """``HeaderTimeout<ms>ms``, made on demand (unpickling a config in another process)."""
    match = _NAME.fullmatch(name)
    if match:
        return http_protocol(int(match[1]) / 1000)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The longest request line the WebSocket handshake takes. websockets' own limit (8 KiB) is
#: below what the HTTP parser accepts, and uvicorn never sends the 414 it logs for it: such a
#: handshake hung with no answer. The HTTP parser's own limit (it answers 400) bounds it now.
WS_MAX_LINE_BYTES = 1024 * 1024


def uvicorn_options(server: Any) -> dict[str, Any]:
    """What ``uvicorn.run`` / ``uvicorn.Config`` take from ``ServerSettings``: the HTTP protocol
    with ``header_timeout_s``; and the WebSocket handshake's line limit raised (see
    ``WS_MAX_LINE_BYTES``), set when the server starts, not at import."""
    import websockets.http11

    websockets.http11.MAX_LINE_LENGTH = max(websockets.http11.MAX_LINE_LENGTH, WS_MAX_LINE_BYTES)
    return {"http": http_protocol(server.header_timeout_s)}


__all__ = ["HeaderTimeoutProtocol", "http_protocol", "uvicorn_options"]
