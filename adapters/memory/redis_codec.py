"""How the Redis session store writes and reads messages and session metadata: the JSON a message
is stored as (parsed once per process), the key it is stored once under, SessionInfo as a
hash of JSON values (parsed once per session while it stays the same), and what a message counts
towards the session's limits. The caches here are bounded and tracked (``assistant.heap``)."""

from __future__ import annotations

import json
from typing import Any

from assistant import heap
from assistant.errors import RateLimitError
from assistant.messages import Message, SessionInfo
from assistant.ports import AppendResult, ConversationSummary, SessionLimits

#: The meta hash's fields of the session's summary (not ``SessionInfo`` fields): its JSON, and the
#: number of messages it covers (compared by ``redis_scripts.FINISH_SUMMARY``).
SUMMARY, SUMMARY_UPTO = "#summary", "#summary_upto"


def text_of(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def info_from_hash(raw: dict[Any, Any]) -> SessionInfo:
    return SessionInfo.model_validate({text_of(k): json.loads(v) for k, v in raw.items()})


def summary_json(summary: ConversationSummary) -> str:
    fields = {"text": summary.text, "upto": summary.upto, "last_id": summary.last_id,
              "notes": list(summary.notes)}  # fmt: skip
    return json.dumps(fields, ensure_ascii=False)


def summary_from_hash(raw: dict[Any, Any]) -> ConversationSummary | None:
    """The summary in the meta hash's fields (None: it has none)."""
    value = raw.get(SUMMARY)
    if value is None:
        return None
    fields = json.loads(value)
    return ConversationSummary(
        fields["text"], int(fields["upto"]), fields["last_id"], tuple(fields.get("notes", ()))
    )


_Meta = tuple[tuple[str, ...], SessionInfo, ConversationSummary | None]


class SessionMeta:
    """Each session's meta hash as a turn reads it (HGETALL's flat field, value list), parsed
    once while it stays the same: its ``SessionInfo`` and summary, by session id (every turn
    reads them and they rarely change; both are frozen, so sharing them is safe). Holds at most
    ``size`` sessions, the least recently read first out; a session's entry is dropped when its
    connection closes (``forget``), so what is held follows the sessions open now."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._by_session: dict[str, _Meta] = {}  # session id -> (flat, info, summary)
        heap.track("session_meta", self, size)

    def __call__(
        self, session_id: str, flat: tuple[str, ...]
    ) -> tuple[SessionInfo, ConversationSummary | None]:
        by_session = self._by_session
        entry = by_session.pop(session_id, None)
        if entry is None or entry[0] != flat:
            fields = dict(zip(flat[::2], flat[1::2]))
            entry = (flat, info_from_hash(fields), summary_from_hash(fields))
            if len(by_session) >= self.size:
                del by_session[next(iter(by_session))]
        by_session[session_id] = entry  # the most recently read last
        return entry[1], entry[2]

    def forget(self, session_id: str) -> None:
        self._by_session.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_session)


session_meta = SessionMeta()


class SessionKeys:
    """The key names of each session under ``base`` (``{prefix}:{tenant}``), made once (every turn
    needs them); at most ``size`` sessions' (the oldest made first out), a session's dropped when
    its connection closes (``forget``)."""

    PARTS = ("meta", "msgs", "turns", "lock", "partial", "sumlock", "events")

    def __init__(self, base: str, size: int = 4096) -> None:
        self.base = base
        self.size = size
        self._by_session: dict[str, dict[str, str]] = {}
        heap.track("session_keys", self, size)

    def __call__(self, session_id: str) -> dict[str, str]:
        keys = self._by_session.get(session_id)
        if keys is None:
            prefix = f"{self.base}:s:{{{session_id}}}:"
            keys = {part: prefix + part for part in self.PARTS}
            if len(self._by_session) >= self.size:
                del self._by_session[next(iter(self._by_session))]
            self._by_session[session_id] = keys
        return keys

    def forget(self, session_id: str) -> None:
        self._by_session.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_session)


def info_to_mapping(data: dict[str, Any]) -> dict[str, str]:
    return {name: json.dumps(value, ensure_ascii=False) for name, value in data.items()}


class ParsedMessages:
    """Stored message JSON -> Message, once per process: messages are immutable once stored and
    every turn reads the newest again (Message is frozen, so sharing one is safe). A message this
    process writes is remembered with the JSON it wrote, so reading it back parses nothing.
    Bounded by count and by bytes (a message holds its JSON and about as much again parsed): the
    oldest entries go first, and a message bigger than ``max_entry_bytes`` is not kept at all."""

    def __init__(
        self,
        size: int = 16_384,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 256 * 1024,
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.bytes = 0  # what the kept JSON takes, in characters
        self._by_raw: dict[str, Message] = {}
        heap.track("parsed_messages", self, size)

    def __len__(self) -> int:
        return len(self._by_raw)

    def __call__(self, raw: str) -> Message:
        message = self._by_raw.get(raw)
        if message is None:
            message = Message.model_validate_json(raw)
            self.remember(raw, message)
        return message

    def remember(self, raw: str, message: Message) -> str:
        if len(raw) > self.max_entry_bytes:
            return raw  # a large message is parsed again when read: it is not kept
        while self._by_raw and (
            len(self._by_raw) >= self.size or self.bytes + len(raw) > self.max_bytes
        ):
            oldest = next(iter(self._by_raw))
            del self._by_raw[oldest]
            self.bytes -= len(oldest)
        self._by_raw[raw] = message
        self.bytes += len(raw)
        return raw


parse_message = ParsedMessages()


def dump(message: Message) -> str:
    """The JSON a message is stored as (remembered, see ``ParsedMessages``)."""
    return parse_message.remember(message.model_dump_json(), message)


def once_key(message: Message) -> str:
    """The key a message is stored once under: the client's turn id, else the message id (so a
    write redis-py retries after a dropped connection is not stored twice)."""
    return message.turn_id or f"id:{message.id}"


class BlobSizes:
    """The size of each blob this process wrote lately, by sha256 (content-addressed, so true for
    every store and tenant): a message that brings an image counts the image's bytes towards the
    session's limit. Bounded; an image whose blob another process wrote (or one forgotten since)
    counts only its part of the message's JSON."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._sizes: dict[str, int] = {}
        heap.track("blob_sizes", self, size, lambda sizes: len(sizes._sizes))

    def wrote(self, sha256: str, size: int) -> None:
        sizes = self._sizes
        sizes.pop(sha256, None)
        if len(sizes) >= self.size:
            del sizes[next(iter(sizes))]
        sizes[sha256] = size

    def of(self, message: Message) -> int:
        """The bytes of the images ``message`` brings (0 for most messages: no image)."""
        images = message.images
        return sum(self._sizes.get(part.sha256, 0) for part in images) if images else 0


blob_sizes = BlobSizes()

#: The scripts' answers for a new message the session's limits refuse.
TOO_MANY_MESSAGES, TOO_LARGE = -3, -4


def limit_args(message: Message, limits: SessionLimits) -> list[str]:
    """The scripts' extra bytes, max messages, max bytes for a message the limits apply to."""
    return [str(blob_sizes.of(message)), str(limits.messages), str(limits.bytes)]


def refusal(status: int, message: Message, stored: str, limits: SessionLimits) -> RateLimitError:
    """The error for a script's refusal (``TOO_MANY_MESSAGES`` or ``TOO_LARGE``) of ``message``,
    stored as ``stored`` JSON."""
    if status == TOO_MANY_MESSAGES:
        return limits.too_many_messages()
    return limits.too_large(len(stored.encode()) + blob_sizes.of(message))


def append_result(message: Message, created: int, stored: str, seq: Any = "") -> AppendResult:
    """A script's answer for a message: the stored one for a known turn id (``created`` 0), else
    ``message``; ``seq``: its event's stream id when the script appended one ('': none)."""
    if created == 0:
        return AppendResult(Message.model_validate_json(stored), created=False)
    seq = seq.decode() if isinstance(seq, bytes) else str(seq or "")
    return AppendResult(message, created=True, seq=seq or None)


__all__ = [
    "BlobSizes",
    "ParsedMessages",
    "SessionKeys",
    "SessionMeta",
    "TOO_LARGE",
    "TOO_MANY_MESSAGES",
    "append_result",
    "blob_sizes",
    "dump",
    "info_from_hash",
    "info_to_mapping",
    "limit_args",
    "once_key",
    "parse_message",
    "refusal",
    "text_of",
]
