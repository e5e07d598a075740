"""Server-sent events as OpenAI-compatible servers stream chat completions, parsed incrementally.

``SSEDecoder`` takes the body's bytes as they arrive, cut anywhere, and hands back the ``data``
of each complete event (lines ended by LF, CRLF or CR; ``data:`` lines joined by LF; comments and
other fields ignored; an event ends at a blank line). Splitting bytes on LF is safe with UTF-8: no
byte of a multi-byte character is a line end. ``parse_chunk`` reads one event's data as a chat
completion chunk (``{"choices": [{"delta": {"content": ...}, "finish_reason": ...}], "usage":
...}``), or the end (``[DONE]``), or an error the server sent in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

#: The data of the event that ends an OpenAI stream.
DONE = b"[DONE]"


class SSEDecoder:
    """Bytes in, each complete event's data out. One decoder per response."""

    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""  # an unfinished line (or a CR that may be half of a CRLF)
        self._data: list[bytes] = []  # the data lines of the event being read

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of the events that ``chunk`` completes, in order."""
        text = self._pending + chunk if self._pending else chunk
        if text.endswith(b"\r"):  # its LF may come in the next chunk
            text, self._pending = text[:-1], b"\r"
        else:
            self._pending = b""
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = text.split(b"\n")
        self._pending = lines.pop() + self._pending  # the last line is not finished yet
        return self._lines(lines)

    def close(self) -> list[bytes]:
        """The body ended: the last event, even without its blank line (lenient on purpose)."""
        pending, self._pending = self._pending.rstrip(b"\r"), b""
        events = self._lines([pending, b""] if pending else [b""])
        return events

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:  # a blank line ends the event
                if data:
                    events.append(b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # comments (":"), event:, id: and retry: lines carry nothing a completion needs
        return events


@dataclass(frozen=True)
class Chunk:
    """What one streamed chat completion chunk says."""

    text: str = ""
    finish_reason: str | None = None
    #: (prompt_tokens, completion_tokens) when the chunk carries the usage (the last one does,
    #: with ``stream_options.include_usage``).
    usage: tuple[int, int] | None = None
    done: bool = False  # the ``[DONE]`` event
    error: str | None = None  # the server reported an error in the stream


_DONE_CHUNK = Chunk(done=True)


class ChunkFormatError(ValueError):
    """An event's data is not a chat completion chunk."""


def parse_chunk(data: bytes) -> Chunk:
    if data == DONE:
        return _DONE_CHUNK
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ChunkFormatError(f"an event that is not JSON: {data[:80]!r}") from exc
    if not isinstance(body, dict):
        raise ChunkFormatError(f"an event that is not a JSON object: {data[:80]!r}")
    if body.get("error") is not None or body.get("object") == "error":
        return Chunk(error=error_message(body) or "the server reported an error")
    text, finish = "", None
    choices = body.get("choices") or ()
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        text = content if isinstance(content, str) else ""
        finish = choice.get("finish_reason")
    usage = body.get("usage")
    counts = None
    if isinstance(usage, dict):
        counts = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return Chunk(text=text, finish_reason=finish, usage=counts)


def error_message(body: object) -> str:
    """The message of an error body in the shapes servers use: OpenAI's and llama.cpp's
    ``{"error": {"message"}}``, Ollama's ``{"error": "..."}``, vLLM's older ``{"message"}``."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) else ""
    if isinstance(error, str):
        return error
    message = body.get("message") or body.get("detail")
    return message if isinstance(message, str) else ""
