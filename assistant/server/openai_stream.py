"""Answering a started chat completion: server-sent events in OpenAI's ``chat.completion.chunk``
format (``stream: true``), or one ``chat.completion`` object. The client going away (the
connection closes) cancels the generation, which then stops within a token.

A stream: a first chunk with ``delta.role = "assistant"``, a chunk per text delta, a last chunk
with ``finish_reason`` and an empty delta (a support bot's: the reply's ``annotations``, and
``unanswered`` on the choice for its fallback), then (``stream_options.include_usage``) a chunk with
``choices: []`` and ``usage``, then ``data: [DONE]``. An error once the stream has started is one
event ``data: {"error": {message, type, param, code}}`` (as OpenAI sends it; the ``openai``
client raises it as an ``APIError``), then ``data: [DONE]``.

Per delta a chunk costs one ``orjson.dumps`` of the text: the rest of its JSON is made once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from assistant.completions import Completion
from assistant.errors import AssistantError
from assistant.ports import Usage
from assistant.server.rest import error_response

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # a proxy in front must not hold the events back
]
#: A completion's end as the responses metric counts it (the realtime path's statuses).
STATUS_BY_FINISH = {
    "stop": "completed",
    "length": "incomplete",
    "cancelled": "cancelled",
    None: "cancelled",
}


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }  # fmt: skip


def grounded(
    message: dict[str, Any], completion: Completion
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``message`` (or a delta) with the reply's ``annotations`` (``file_citation``, as on the
    WebSocket) when it has sources, and the choice's extra fields: ``unanswered: true`` for a
    support bot's fallback. A plain assistant's reply gets neither."""
    annotations = completion.annotations
    if annotations:
        message = {**message, "annotations": [c.model_dump() for c in annotations]}
    return message, ({"unanswered": True} if completion.unanswered else {})


def error_dict(exc: AssistantError) -> dict[str, object]:
    return {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}


class ChunkEncoder:
    """The SSE events of one completion's stream, as bytes."""

    def __init__(self, completion: Completion, model: str, include_usage: bool) -> None:
        self._meta = {
            "id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
            "model": model, "system_fingerprint": None,
        }  # fmt: skip
        self._include_usage = include_usage
        self._completion = completion
        head = orjson.dumps(self._meta)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        self._head = b"data: " + head
        usage = b',"usage":null' if include_usage else b""
        self._tail = b'},"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n"

    def delta(self, text: str) -> bytes:
        return self._head + orjson.dumps(text) + self._tail

    def first(self) -> bytes:
        return self._event({"role": "assistant", "content": ""}, None)

    def last(self, finish_reason: str) -> bytes:
        """The last chunk; a support bot's reply brings its sources (``delta.annotations``)
        and, when it is the fallback, ``unanswered``."""
        delta, extra = grounded({}, self._completion)
        return self._event(delta, finish_reason, extra)

    def usage(self, usage: Usage) -> bytes:
        return (
            b"data: "
            + orjson.dumps({**self._meta, "choices": [], "usage": usage_dict(usage)})
            + b"\n\n"
        )

    @staticmethod
    def error(exc: AssistantError) -> bytes:
        return b"data: " + orjson.dumps({"error": error_dict(exc)}) + b"\n\n"

    def _event(
        self, delta: dict[str, Any], finish_reason: str | None, extra: dict[str, Any] | None = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        choice.update(extra or {})
        body = {**self._meta, "choices": [choice]}
        if self._include_usage:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"


class CompletionAnswer(Response):
    """The ASGI answer to one started completion. ``ended(completion, status)`` is awaited once
    whatever happens, with ``status`` one of completed, incomplete, cancelled, failed."""

    def __init__(
        self,
        completion: Completion,
        *,
        model: str,
        stream: bool,
        include_usage: bool,
        ended: Callable[[Completion, str], Awaitable[None]],
    ) -> None:
        super().__init__(status_code=200)
        self.completion = completion
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        self.ended = ended
        self.gone = False  # the client went away
        self.error: AssistantError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._watch(receive))
        try:
            if self.stream:
                await self._send_stream(send)
            else:
                await self._send_whole(scope, receive, send)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.completion.aclose()
            await self.ended(self.completion, self._status())

    def _status(self) -> str:
        if self.error is not None:
            return "failed"
        if self.gone:
            return "cancelled"
        return STATUS_BY_FINISH.get(self.completion.finish_reason, "failed")

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                self.completion.cancel()  # the generation stops within a token
                return

    async def _texts(self, each: Callable[[str], Awaitable[None]]) -> None:
        """Every delta to ``each`` until the completion ends, fails or the client is gone."""
        try:
            async for delta in self.completion:
                if self.gone:
                    break
                await each(delta)
        except AssistantError as exc:
            self.error = exc
        except Exception:
            log.exception("chat completion %s failed", self.completion.id)
            self.error = AssistantError("internal error (logged)")

    async def _send_stream(self, send: Send) -> None:
        encoder = ChunkEncoder(self.completion, self.model, self.include_usage)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})

        async def chunk(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        await chunk(encoder.first())
        await self._texts(lambda text: chunk(encoder.delta(text)))
        if self.gone:
            return
        if self.error is not None:
            await chunk(encoder.error(self.error))
        else:
            await chunk(encoder.last(self._finish_reason()))
            if self.include_usage:
                await chunk(encoder.usage(self.completion.usage))
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    async def _send_whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        pieces: list[str] = []

        async def keep(text: str) -> None:
            pieces.append(text)

        await self._texts(keep)
        if self.gone:
            return
        if self.error is not None:
            await error_response(self.error)(scope, receive, send)
            return
        completion = self.completion
        message, extra = grounded(
            {"role": "assistant", "content": "".join(pieces), "refusal": None}, completion
        )
        body = {
            "id": completion.id, "object": "chat.completion", "created": completion.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{
                "index": 0, "logprobs": None, "finish_reason": self._finish_reason(), **extra,
                "message": message,
            }],
            "usage": usage_dict(completion.usage),
        }  # fmt: skip
        data = orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    def _finish_reason(self) -> str:
        return "length" if self.completion.finish_reason == "length" else "stop"
