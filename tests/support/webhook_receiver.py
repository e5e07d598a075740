"""A real HTTP receiver for webhook tests, on loopback in the test's event loop: it records every
request (headers, body, the status it answered) and answers from a script, so a test can make
it fail the first attempts, hang on one, or not listen at all (``stop``: connections refused).

    receiver = WebhookReceiver(statuses=[500, 500])   # then 200
    await receiver.start()
    ... await receiver.wait(lambda r: r.delivered)    # an asyncio.Condition, no polling
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.processes import free_port


@dataclass
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int | None  # None: not answered (held open)

    @property
    def delivery(self) -> str:
        return self.headers.get("x-assistant-delivery", "")

    @property
    def attempt(self) -> int:
        return int(self.headers.get("x-assistant-attempt", "0"))


class WebhookReceiver:
    """Answers the n-th request with ``statuses[n]`` (``None``: hold it open until ``stop``),
    then ``default``."""

    def __init__(
        self, statuses: list[int | None] | None = None, *, default: int = 200, port: int = 0
    ) -> None:
        self.statuses = list(statuses or [])
        self.default = default
        self.port = port or free_port()
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._held = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]

    async def start(self) -> WebhookReceiver:
        self._held = asyncio.Event()
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        return self

    async def stop(self) -> None:
        """Stop listening (new connections are refused) and drop the held requests."""
        self._held.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait(self, predicate: Callable[[WebhookReceiver], object], timeout_s: float = 60):
        """Until ``predicate(self)`` holds (checked whenever a request comes in)."""
        async with asyncio.timeout(timeout_s), self._changed:  # (3.11's wait_for may hang)
            return await self._changed.wait_for(lambda: predicate(self))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {}
            for line in lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.statuses.pop(0) if self.statuses else self.default
            received = Received(headers, body, status)
            async with self._changed:
                self.requests.append(received)
                self._changed.notify_all()
            if status is None:
                await self._held.wait()
                return
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                         .encode())  # fmt: skip
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()
