"""The conversations port: a session's handoff state (``handoff.status``), changed only by one
atomic compare-and-set, and the session's event stream (the fan-out: every event of a session, in
order, each with its sequence number, readable live by any number of connections on any worker
and from any sequence number on).

A store belongs to one tenant (``for_tenant``), as ``SessionStore`` does: another tenant's
conversation is simply not found. ``wait`` is the exception: one blocking read over the streams of
many sessions of any tenants (``handoff.hub.EventHub``, one per process), keyed by
``(tenant, session_id)``.

Sequence numbers are the stream's ids (``"1767000000000-0"``): strings that grow, compared with
``seq_key``; ``"0"`` is before the first event.

Beside the sessions' streams each tenant has one more, its queue (``QUEUE`` in place of a session
id, for ``events``, ``first_seq``, ``last_seq``, ``wait`` and ``EventHub.subscribe``): one
``conversation.status.updated`` event per status change of any of its conversations
(``queue_event``: with the ``conversation``'s id and its whole state), so an agent console follows
every conversation waiting for a person with one subscription."""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from assistant.handoff.status import ConversationState
from assistant.messages import ConversationStatus
from assistant.ports.store_calls import store_call

_T = TypeVar("_T")

#: An event as stored in a session's stream: a JSON-ready dict with a ``type``.
Event = dict[str, Any]
#: A stream position: (tenant, session id).
StreamKey = tuple[str, str]
#: The session id that names the tenant's queue stream (no session has an empty id).
QUEUE = ""


def seq_key(seq: str) -> tuple[int, int]:
    """A sequence number as a sortable pair (``"0"`` is (0, 0))."""
    ms, _, n = seq.partition("-")
    return int(ms), int(n or 0)


#: A stream entry id as Redis takes it: ASCII digits ("²" and "٣" are digits to ``str.isdigit``,
#: and Redis refused them, which came back as ``store_unavailable``: found by the REST fuzzer).
_SEQ = re.compile(r"[0-9]{1,19}(?:-[0-9]{1,19})?")


def valid_seq(seq: str) -> bool:
    return _SEQ.fullmatch(seq) is not None


def queue_event(session_id: str, state: ConversationState, event: Event) -> Event:
    """A status change as the tenant's queue stream holds it: the session's event with the
    conversation's id and its whole state (reason, summary, since, handoff_at)."""
    fields = state.model_dump(mode="json")
    body = {k: v for k, v in event.items() if k != "origin"}
    return {**body, **fields, "conversation": session_id}


@dataclass(frozen=True)
class Transitioned:
    """What ``transition`` did: ``applied`` the new state (``state``, its event at ``seq``), or
    not, the status not being one expected (``state`` is then the current one)."""

    applied: bool
    state: ConversationState
    seq: str = ""


@dataclass(frozen=True)
class Listed:
    session_id: str
    state: ConversationState


class ConversationStore(abc.ABC):
    name: str = "conversations"
    tenant: str = "default"
    backend_errors: tuple[type[Exception], ...] = ()

    @abc.abstractmethod
    def for_tenant(self, tenant: str) -> ConversationStore: ...

    async def state(self, session_id: str) -> ConversationState | None:
        """The session's handoff state (status ``bot`` when it never changed); None: no session."""
        return await self._call(self._state_impl(session_id))

    async def transition(
        self,
        session_id: str,
        expected: Iterable[ConversationStatus],
        new: ConversationState,
        event: Event,
    ) -> Transitioned:
        """Atomically: if the session's status is one of ``expected``, store ``new`` (the
        session's ``status`` with it) and append ``event`` to its stream; else change nothing.
        An applied change is then appended to the tenant's queue stream too (``queue_event``).
        ``SessionNotFoundError`` for an unknown session."""
        return await self._call(self._transition_impl(session_id, frozenset(expected), new, event))

    async def listed(self, status: ConversationStatus | None, limit: int) -> list[Listed]:
        """The tenant's conversations that ever left ``bot`` (handed off), newest handoff first,
        those in ``status`` only when given; expired sessions are left out."""
        return await self._call(self._listed_impl(status, limit))

    async def due(self, before_ms: int, limit: int) -> list[StreamKey]:
        """``(tenant, session id)`` of up to ``limit`` conversations of any tenant that went to
        ``waiting_human`` before ``before_ms`` and were not ``swept`` since: the claim-timeout
        sweeper's work list (``handoff.sweeper``). Each applied change to ``waiting_human``
        (re)enters it."""
        return await self._call(self._due_impl(before_ms, limit))

    async def swept(self, keys: list[StreamKey]) -> None:
        """Take ``keys`` off the sweeper's work list."""
        await self._call(self._swept_impl(keys))

    async def publish(self, session_id: str, event: Event) -> str:
        """Append ``event`` to the session's stream (trimmed to about ``maxlen`` events, expiring
        with the session); its sequence number."""
        return await self._call(self._publish_impl(session_id, event))

    async def events(self, session_id: str, after: str, count: int) -> list[tuple[str, Event]]:
        """Up to ``count`` events after sequence number ``after``, oldest first (no waiting)."""
        return await self._call(self._events_impl(session_id, after, count))

    async def first_seq(self, session_id: str) -> str:
        """The sequence number of the oldest event still kept ("0": none): a resume from before
        it has lost events to the trimming."""
        return await self._call(self._first_seq_impl(session_id))

    async def last_seq(self, session_id: str) -> str:
        """The sequence number of the newest event ("0": none yet)."""
        return await self._call(self._last_seq_impl(session_id))

    async def wait(
        self, cursors: Mapping[StreamKey, str], block_ms: int, count: int
    ) -> dict[StreamKey, list[tuple[str, Event]]]:
        """Block up to ``block_ms`` until any of the streams has events after its cursor (one
        blocking read for all of them); those events, at most ``count`` per stream. ``unblock``
        ends a wait early (then: no events)."""
        return await self._call(self._wait_impl(cursors, block_ms, count))

    @abc.abstractmethod
    async def unblock(self) -> None:
        """End the ``wait`` in progress, if any (a stream was added to the cursors)."""

    async def aclose(self) -> None:
        """Release the connections this store opened itself."""

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        return await store_call(self.name, "conversation store", awaitable, self.backend_errors)

    @abc.abstractmethod
    async def _state_impl(self, session_id: str) -> ConversationState | None: ...

    @abc.abstractmethod
    async def _transition_impl(
        self,
        session_id: str,
        expected: frozenset[ConversationStatus],
        new: ConversationState,
        event: Event,
    ) -> Transitioned: ...

    @abc.abstractmethod
    async def _listed_impl(self, status: ConversationStatus | None, limit: int) -> list[Listed]: ...

    @abc.abstractmethod
    async def _due_impl(self, before_ms: int, limit: int) -> list[StreamKey]: ...

    @abc.abstractmethod
    async def _swept_impl(self, keys: list[StreamKey]) -> None: ...

    @abc.abstractmethod
    async def _publish_impl(self, session_id: str, event: Event) -> str: ...

    @abc.abstractmethod
    async def _events_impl(
        self, session_id: str, after: str, count: int
    ) -> list[tuple[str, Event]]: ...

    @abc.abstractmethod
    async def _first_seq_impl(self, session_id: str) -> str: ...

    @abc.abstractmethod
    async def _last_seq_impl(self, session_id: str) -> str: ...

    @abc.abstractmethod
    async def _wait_impl(
        self, cursors: Mapping[StreamKey, str], block_ms: int, count: int
    ) -> dict[StreamKey, list[tuple[str, Event]]]: ...
