"""The soak's clients (``bench.soak``): sessions that talk to a real server the way people do, each
waiting for its reply and then thinking for a while, until told to stop.

A client holds one conversation at a time: ``conversation_turns`` turns on a new session, then a
new session. Each turn is a text turn; one in ``image_every`` also carries a small PNG (one of a
few, so the server's image cache gets hits and misses); before one in ``resume_every`` the client
hangs up and comes back on ``?session_id=`` (the protocol's resume), checks that
``session.created`` names the same session and that ``GET /v1/sessions/{id}/messages`` holds
every message of the conversation so far (two per turn), and goes on there.

Everything that goes wrong is counted by a code: the server's own (``error`` events:
``error.code``), ``response_<status>`` for a reply that did not complete, ``resume_*`` and
``history_mismatch`` for a resume that did not come back as it should, ``client_timeout`` and
``connection_closed`` on the client's side, else the exception's class name. After an error
the client starts a new conversation, so the load stays the same.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import random
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PROMPTS = (
    "Hello there, how are you?",
    "What is the capital of France?",
    "Tell me a short fact about the moon.",
    "Can you suggest a name for a cat?",
    "What should I cook tonight?",
)
#: Error messages kept, first come first kept.
KEPT_MESSAGES = 10


class SoakError(Exception):
    """A turn or a resume that went wrong, with the code it is counted under."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class ClientPlan:
    """How the clients behave (``SoakConfig`` fills it)."""

    think_s: float = 1.0  # mean pause after each reply (uniform over 0.5x..1.5x)
    conversation_turns: int = 40
    image_every: int = 20
    resume_every: int = 25
    max_output_tokens: int | None = None  # None: the server's default
    timeout_s: float = 60.0
    images: int = 6  # distinct photos in the pool


@dataclass
class Tally:
    """What every client did, shared by all of them (one event loop: no locks needed)."""

    started: float = field(default_factory=time.monotonic)
    turns: Counter[str] = field(default_factory=Counter)  # text, image
    resumes: int = 0
    conversations: int = 0
    turns_by_minute: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    #: The same errors by what the client was doing: open, resume, history, text turn, image turn.
    errors_by_step: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def turn_done(self, kind: str, latency_ms: float) -> None:
        self.turns[kind] += 1
        self.latencies_ms.append(latency_ms)
        minute = int((time.monotonic() - self.started) // 60)
        while len(self.turns_by_minute) <= minute:
            self.turns_by_minute.append(0)
        self.turns_by_minute[minute] += 1

    def error(self, exc: BaseException, step: str) -> None:
        if isinstance(exc, SoakError):
            code = exc.code
        elif isinstance(exc, TimeoutError):
            code = "client_timeout"
        elif isinstance(exc, ConnectionClosed):
            code = "connection_closed"
        else:
            code = type(exc).__name__
        self.errors[code] += 1
        self.errors_by_step[step] += 1
        if len(self.messages) < KEPT_MESSAGES:
            at = round(time.monotonic() - self.started, 1)
            self.messages.append(f"{at} s, {step}: {code}: {str(exc)[:300]}")


def image_pool(count: int, seed: int = 7) -> list[str]:
    """``count`` small PNG photos (noise over colour gradients, 96x64 to 256x192) as data URLs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    urls = []
    for i in range(count):
        w, h = 96 + 32 * (i % 6), 64 + 24 * (i % 6)
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.random(3)
        pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


class SoakClient:
    """One person: conversations one after another on ``url`` until ``stop`` is set."""

    def __init__(
        self, url: str, plan: ClientPlan, tally: Tally, stop: asyncio.Event,
        images: list[str], seed: int,
    ) -> None:  # fmt: skip
        self.url = url
        self.http = url.replace("ws://", "http://", 1).split("/v1/", 1)[0]
        self.plan = plan
        self.tally = tally
        self.stop = stop
        self.images = images
        self.rng = random.Random(seed)
        self.step = "open"  # what it is doing, for the errors

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                await self._conversation()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted; a new conversation starts
                self.tally.error(exc, self.step)
                await self._think()  # a failing server is not hammered

    async def _conversation(self) -> None:
        self.step = "open"
        ws, session_id = await self._open(None)
        self.tally.conversations += 1
        turns = 0
        try:
            while turns < self.plan.conversation_turns and not self.stop.is_set():
                if turns and self.rng.randrange(self.plan.resume_every) == 0:
                    self.step = "resume"
                    await _close(ws)
                    ws, _ = await self._open(session_id)
                    self.step = "history"
                    await self._check_history(session_id, 2 * turns)
                    self.tally.resumes += 1
                with_image = self.rng.randrange(self.plan.image_every) == 0
                self.step = "image turn" if with_image else "text turn"
                await self._turn(ws, with_image)
                turns += 1
                await self._think()
        finally:
            await _close(ws)

    async def _open(self, session_id: str | None) -> tuple[ClientConnection, str]:
        url = self.url if session_id is None else f"{self.url}?session_id={session_id}"
        async with asyncio.timeout(self.plan.timeout_s):
            ws = await connect(url, compression=None, ping_interval=None, close_timeout=2,
                               max_size=2**24, open_timeout=self.plan.timeout_s)  # fmt: skip
            try:
                created = await _event(ws)
                if created["type"] != "session.created":
                    raise SoakError("resume_failed" if session_id else "open_failed",
                                    json.dumps(created)[:300])  # fmt: skip
                got = created["session"]["id"]
                if session_id is not None and got != session_id:
                    raise SoakError("resume_wrong_session", f"asked {session_id}, got {got}")
                if self.plan.max_output_tokens is not None and session_id is None:
                    await self._limit_output(ws)
            except BaseException:
                await _close(ws)
                raise
        return ws, got

    async def _limit_output(self, ws: ClientConnection) -> None:
        session = {"max_output_tokens": self.plan.max_output_tokens}
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        while (await _event(ws))["type"] != "session.updated":
            pass

    async def _turn(self, ws: ClientConnection, with_image: bool) -> None:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": self.rng.choice(PROMPTS)}]
        if with_image:
            content.append({"type": "input_image", "image_url": self.rng.choice(self.images)})
        item = {"type": "message", "role": "user", "content": content}
        started = time.perf_counter()
        async with asyncio.timeout(self.plan.timeout_s):
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            while (event := await _event(ws))["type"] != "response.done":
                pass
        response = event["response"]
        if response["status"] != "completed" and not self._cut_as_asked(response):
            details = json.dumps(response.get("status_details"))[:300]
            raise SoakError(f"response_{response['status']}", details)
        self.tally.turn_done("image" if with_image else "text",
                             (time.perf_counter() - started) * 1000)  # fmt: skip

    def _cut_as_asked(self, response: dict[str, Any]) -> bool:
        """A reply stopped at the ``max_output_tokens`` this client set: a turn done as asked."""
        details = response.get("status_details") or {}
        return (
            self.plan.max_output_tokens is not None
            and response["status"] == "incomplete"
            and details.get("reason") == "max_output_tokens"
        )

    async def _check_history(self, session_id: str, expected: int) -> None:
        url = f"{self.http}/v1/sessions/{session_id}/messages"

        def read() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=self.plan.timeout_s) as answer:
                return dict(json.load(answer))

        stored = len((await asyncio.to_thread(read))["data"])
        if stored != expected:
            raise SoakError("history_mismatch", f"{session_id}: {stored} messages, {expected} sent")

    async def _think(self) -> None:
        pause = self.plan.think_s * self.rng.uniform(0.5, 1.5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), pause)


async def _event(ws: ClientConnection) -> dict[str, Any]:
    """The next server event; an ``error`` event raises, counted under its code."""
    event: dict[str, Any] = json.loads(await ws.recv())
    if event["type"] == "error":
        error = event.get("error") or {}
        raise SoakError(str(error.get("code") or "error"), str(error.get("message"))[:300])
    return event


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 5)
