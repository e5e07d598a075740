"""The session store port: sessions, messages, the turn lease, blobs and a derived-data cache."""

from __future__ import annotations

import abc
import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from assistant.errors import (
    RateLimitError,
    SessionBusyError,
    StoreError,
)
from assistant.messages import Message, SessionInfo, TextPart
from assistant.ports.store_calls import store_call

_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------------
# Session memory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendResult:
    message: Message
    created: bool  # False when the turn id was seen before: the stored message is returned
    #: The position of the message's event on the session's event stream, when the store
    #: appended it in the same round trip (``begin_turn`` / ``end_turn`` with ``event``).
    seq: str | None = None


@dataclass(frozen=True)
class ConversationSummary:
    """What the model is told of a session's earliest messages instead of them: ``text`` sums up
    messages ``[0, upto)``, the last of them ``last_id``; ``notes``: sentences of them kept word
    for word (those with a number: order ids, amounts, dates). See ``assistant.summaries``."""

    text: str
    upto: int
    last_id: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionSnapshot:
    """``messages`` are the session's from index ``first`` (a turn's history: its last N);
    ``summary``: the session's summary of its earliest messages, if one was made."""

    info: SessionInfo
    messages: tuple[Message, ...]
    summary: ConversationSummary | None = None
    first: int = 0


@dataclass(frozen=True)
class TurnStart:
    """What ``begin_turn`` returns: the stored user message (if one was given) and the history:
    ``snapshot.messages`` are the session's messages from index ``first`` (of ``length`` in all).
    ``recovered``: a reply a dead writer left streaming was stored first, as ``interrupted``."""

    appended: AppendResult | None
    snapshot: SessionSnapshot
    first: int = 0
    length: int = 0
    recovered: bool = False


@dataclass(frozen=True)
class PartialReply:
    """A reply still streaming: its message id and its text so far (which only grows)."""

    message_id: str
    text: str

    def as_interrupted(self) -> Message:
        """The message it is stored as when its writer died before storing it."""
        return Message(
            id=self.message_id, role="assistant", content=(TextPart(text=self.text),),
            status="interrupted",
        )  # fmt: skip


@dataclass(frozen=True)
class SessionLimits:
    """What one session may store; 0 is no limit. ``messages``: messages in all; ``bytes``: their
    size, a message counting its stored JSON plus the images it brings (each blob's size, where
    the store wrote it). Only the client's writes are refused (``append``, ``begin_turn``'s
    message), and then nothing is stored; a reply (``end_turn``) or a recovered partial is always
    stored, so a session may pass its limits by one message."""

    messages: int = 0
    bytes: int = 0

    @classmethod
    def from_settings(cls, limits: Any) -> SessionLimits:
        """From ``LimitsSettings`` (``session_turns``, ``session_bytes``)."""
        return cls(messages=limits.session_turns, bytes=limits.session_bytes)

    def too_many_messages(self) -> RateLimitError:
        return RateLimitError(
            f"the session holds {self.messages} messages, as many as a session may: start a new "
            "session", code="session_turn_limit",
        )  # fmt: skip

    def too_large(self, size: int) -> RateLimitError:
        return RateLimitError(
            f"this message ({size} bytes) would take the session past the {self.bytes} bytes a "
            "session may store: start a new session", code="session_too_large",
        )  # fmt: skip


#: What a tenant's name may be: it is part of every key of its sessions.
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_tenant(tenant: str) -> str:
    if not TENANT_NAME.fullmatch(tenant):
        raise ValueError(
            f"a tenant name is 1-64 letters, digits, '_', '.' or '-' (first a letter or digit), "
            f"got {tenant!r}"
        )
    return tenant


class SessionStore(abc.ABC):
    """Where sessions live. Every read and write refreshes the session's time to live.

    A store belongs to one tenant (``tenant``); ``for_tenant`` gives the same store for another,
    sharing its connections. Nothing one tenant's store reads or writes (sessions, blobs, cache)
    is visible to another's: another tenant's session is simply not found."""

    name: str = "session_store"
    tenant: str = "default"
    #: The client library's own exceptions that mean the backend failed (see ``store_call``).
    backend_errors: tuple[type[Exception], ...] = ()
    #: What each session may store (``SessionLimits``); the default is no limit.
    limits: SessionLimits = SessionLimits()
    #: ``begin_turn`` / ``end_turn`` append a message's ``event`` to the session's event stream
    #: in their own round trip (the Redis store); else the caller publishes it.
    appends_events: bool = False

    @abc.abstractmethod
    def for_tenant(self, tenant: str) -> SessionStore:
        """This store, scoped to ``tenant`` (``ValueError`` for a name ``check_tenant`` refuses)."""

    async def create(self, info: SessionInfo) -> SessionInfo:
        return await self._call(self._create_impl(info))

    async def load(self, session_id: str, *, last: int | None = None) -> SessionSnapshot | None:
        """The session and its messages (the ``last`` N only, when given); None if unknown."""
        return await self._call(self._load_impl(session_id, last))

    async def update_info(self, session_id: str, **fields: object) -> SessionInfo:
        """Change some of a session's metadata fields; a field ``SessionInfo`` lacks is refused."""
        unknown = set(fields) - set(SessionInfo.model_fields)
        if unknown:
            raise ValueError(f"SessionInfo has no field(s) {sorted(unknown)}")
        if "status" in fields:  # the handoff's compare-and-set is its one writer
            raise ValueError("a session's status changes by ConversationStore.transition only")
        return await self._call(self._update_info_impl(session_id, fields))

    async def append(self, session_id: str, message: Message) -> AppendResult:
        """Append a message; a message whose ``turn_id`` was stored before is not stored again.
        A new message past the session's ``limits`` is refused (``RateLimitError``
        ``session_turn_limit`` / ``session_too_large``), nothing stored."""
        return await self._call(self._append_impl(session_id, message))

    # -- turns: the hot path, one round trip at each end -------------------------------------------
    #
    # Crash safety: while a reply streams, ``renew_turn`` records its text so far with the lease
    # (``partial``); the next writer to take the lease stores a partial its writer left as the
    # reply, ``interrupted``, once (idempotent on its message id), before its own message. A lease
    # whose holder's process is gone (its heartbeat stopped) is taken over without waiting for the
    # lease to run out.

    async def begin_turn(
        self,
        session_id: str,
        token: str,
        *,
        message: Message | None = None,
        last: int | None = None,
        wait_s: float = 0.0,
        known: int = 0,
        event: dict[str, Any] | None = None,
    ) -> TurnStart:
        """In one round trip: take (or keep) the session's writer lease for ``token``, append
        ``message`` (idempotent on its turn id) and return the history (the ``last`` N messages).
        Waits up to ``wait_s`` while another token holds the lease, then ``SessionBusyError``;
        a lease held by a process that died is free (found on the slow path, when it is busy).
        Taking the lease anew stores the reply another writer left streaming (see above).

        ``known``: the caller holds the session's first ``known`` messages already (stored
        messages never change), so only later ones are returned (``first == known``), unless
        ``known`` is more than the session holds (then as if 0).

        ``message`` past the session's ``limits`` is refused as ``append`` refuses it: nothing
        is stored and the lease is not kept (unless it was the caller's already); a partial
        reply recovered on the way is stored all the same.

        ``event``: appended to the session's event stream (``ports.conversations``) in the same
        round trip when ``message`` is created (its ``seq`` in ``appended``), by a store whose
        ``appends_events`` is true; others ignore it (the caller publishes)."""
        deadline = time.monotonic() + max(wait_s, 0.0)
        pause = 0.02
        while True:
            call = self._begin_turn_impl(session_id, token, message, last, known, event)
            started = await self._call(call)
            if started is not None:
                return started
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionBusyError(f"session {session_id!r} is busy (another writer)")
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.2)

    async def end_turn(
        self, session_id: str, token: str, message: Message | None = None,
        event: dict[str, Any] | None = None,
    ) -> AppendResult | None:  # fmt: skip
        """In one round trip: append ``message`` (the reply), release ``token``'s lease and drop
        the partial reply ``token`` recorded, if any. The reply is never refused for the
        session's ``limits`` (it counts towards them). ``event``: as ``begin_turn``'s."""
        return await self._call(self._end_turn_impl(session_id, token, message, event))

    async def renew_turn(
        self, session_id: str, token: str, partial: PartialReply | None = None
    ) -> bool:
        """Extend ``token``'s lease and, in the same round trip, record ``partial`` (the reply
        streamed so far); False when the lease is no longer ``token``'s (nothing is written)."""
        return await self._call(self._renew_turn_impl(session_id, token, partial))

    # -- the summary of a long conversation's earliest messages (``assistant.summaries``) --------

    async def claim_summary(self, session_id: str, token: str, lease_ms: int) -> bool:
        """Take the session's summary claim for ``token`` (so one summary at a time is made for
        it, whichever process makes it) for ``lease_ms``; False while another token holds it."""
        return await self._call(self._claim_summary_impl(session_id, token, lease_ms))

    async def finish_summary(
        self, session_id: str, token: str, summary: ConversationSummary | None, created_at: int
    ) -> bool:
        """Atomically: give ``token``'s summary claim back and store ``summary`` (if given) as the
        session's, unless it already has one covering as many messages or more (a late summary
        never replaces a newer one) or the session is gone or was created again since
        ``created_at``. True when ``summary`` was stored. A load or turn returns it."""
        return await self._call(self._finish_summary_impl(session_id, token, summary, created_at))

    # -- content-addressed blobs and a derived-data cache, shared by a tenant's sessions ----------

    async def put_blob(self, sha256: str, data: bytes) -> None:
        """Store bytes under their sha256 (images); they live as long as a session would."""
        await self._call(self._put_blob_impl(sha256, data))

    async def get_blob(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256`` (their time to live refreshed), or None."""
        return await self._call(self._get_blob_impl(sha256))

    async def cache_get(self, key: str) -> bytes | None:
        """Derived data (image embeddings) by key; None on a miss."""
        return await self._call(self._cache_get_impl(key))

    async def cache_set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self._call(self._cache_set_impl(key, value, ttl_s))

    async def ping(self) -> bool:
        try:
            return await self._call(self._ping_impl())
        except StoreError:
            return False

    def forget_session(self, session_id: str) -> None:
        """Drop what this process keeps of ``session_id`` in memory to speed up its turns (its
        connection closed); the stored session is untouched. A no-op by default."""

    async def aclose(self) -> None:
        """Release connections."""

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        return await store_call(self.name, "session store", awaitable, self.backend_errors)

    @abc.abstractmethod
    async def _create_impl(self, info: SessionInfo) -> SessionInfo: ...

    @abc.abstractmethod
    async def _load_impl(self, session_id: str, last: int | None) -> SessionSnapshot | None: ...

    @abc.abstractmethod
    async def _update_info_impl(
        self, session_id: str, fields: dict[str, object]
    ) -> SessionInfo: ...

    @abc.abstractmethod
    async def _append_impl(self, session_id: str, message: Message) -> AppendResult: ...

    @abc.abstractmethod
    async def _ping_impl(self) -> bool: ...

    @abc.abstractmethod
    async def _begin_turn_impl(
        self, session_id: str, token: str, message: Message | None, last: int | None, known: int,
        event: dict[str, Any] | None,
    ) -> TurnStart | None:  # fmt: skip
        """None when another token holds the lease. ``SessionNotFoundError`` for an unknown id."""

    @abc.abstractmethod
    async def _end_turn_impl(
        self, session_id: str, token: str, message: Message | None, event: dict[str, Any] | None
    ) -> AppendResult | None: ...

    @abc.abstractmethod
    async def _renew_turn_impl(
        self, session_id: str, token: str, partial: PartialReply | None
    ) -> bool: ...

    @abc.abstractmethod
    async def _claim_summary_impl(self, session_id: str, token: str, lease_ms: int) -> bool: ...

    @abc.abstractmethod
    async def _finish_summary_impl(
        self, session_id: str, token: str, summary: ConversationSummary | None, created_at: int
    ) -> bool: ...

    @abc.abstractmethod
    async def _put_blob_impl(self, sha256: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def _get_blob_impl(self, sha256: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _cache_get_impl(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _cache_set_impl(self, key: str, value: bytes, ttl_s: int) -> None: ...
