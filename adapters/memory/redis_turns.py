"""The Redis session store's turns: the writer lease, taken over from a dead process, and the reply
streaming now, which survives the process that streams it.

**Taking a dead process's lease over.** A lease's value names its process (``redis_owner``: each
process keeps a short-lived ``{prefix}:owner:<instance>`` key alive). The begin-turn script is the
same on its fast path: a free lease (or the caller's own) is taken in its one round trip. Only when
the lease is busy does the store look further: ``EXISTS`` on the holder's owner key, a command of
its own, not inside the script (on a Redis Cluster the owner key is in another hash slot than the
session's keys, and a script may touch the keys of one slot only); when the key is gone, the
begin-turn script runs once more, told to take the lease over from exactly that holder (a
compare-and-set inside the script, so of two takers one wins). A dead process's lease is thus
free within ``owner_ttl_ms`` of its death instead of after ``lock_ttl_ms``, and a live process's
lease is never taken. The other design, a heartbeat deadline inside every lease that the process
renews for all the leases it holds (one pipelined call per beat), costs a script call per held
lease per beat; this one costs one ``SET`` per process per beat, and three round trips instead of
one for a turn that finds the lease busy. A process whose event loop stalls for longer than
``owner_ttl_ms`` loses its leases: its renewals then fail, and its late reply is still stored
once (idempotent on the message id).

**The partial reply.** While a reply streams, the lease's renewal (``renew``, at most every
``partial_flush_ms``, see ``assistant.turn_lease``) writes its text so far to the session's
``partial`` key (the session's hash tag) in the same script call: the first write the whole
partial, later ones only the new text (``APPEND``, checked against the length the writer expects,
so a lost write is noticed and the next one sends it whole). Its value is
``<lock value>\\n<once key>\\n<JSON before the text>\\n<JSON after it>\\n<the text, escaped>``: the
last three fields joined are the reply's message JSON with status ``interrupted``, so the
begin-turn script that takes the lease anew stores a partial another writer left with no JSON
code in Lua, before the new user message, once (on the message id's once key), and deletes it.
The end-turn script deletes the writer's own partial in the turn's second round trip.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from adapters.memory.redis_codec import (
    TOO_LARGE,
    TOO_MANY_MESSAGES,
    append_result,
    dump,
    limit_args,
    once_key,
    parse_message,
    refusal,
    session_meta,
)
from adapters.memory.redis_owner import OwnerHeartbeat, lock_value
from assistant.errors import SessionNotFoundError
from assistant.messages import Message
from assistant.ports import AppendResult, PartialReply, SessionSnapshot, TurnStart

log = logging.getLogger(__name__)

_TEXT = "PARTIAL_TEXT_3f9c1e"  # stands for the text where the message JSON is cut in two


def escape(text: str) -> str:
    """``text`` as it stands inside a JSON string (ASCII, so its length is its size in bytes;
    escaping is per character, so escaped pieces join into the escaped whole)."""
    return json.dumps(text)[1:-1]


def partial_header(lock: str, message_id: str) -> str:
    """What a partial reply's value starts with; its text (escaped) follows."""
    message = PartialReply(message_id, _TEXT).as_interrupted().model_dump_json()
    before, text, after = message.partition(json.dumps(_TEXT))
    assert text and _TEXT not in after, message
    return f'{lock}\nid:{message_id}\n{before}"\n"{after}\n'


def decode_partial(value: str) -> tuple[str, str]:
    """(lock value, text) of a stored partial reply (tests and tools)."""
    lock, _, _, _, text = value.split("\n", 4)
    return lock, json.loads(f'"{text}"')


@dataclass
class _Draft:
    message_id: str
    chars: int  # characters of the text the stored partial holds
    length: int  # its length in bytes; -1: unknown, the next write sends it whole


class PartialWriter:
    """The partial replies this process writes, so that each write sends only the new text."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._drafts: dict[str, _Draft] = {}

    def next(self, key: str, lock: str, partial: PartialReply) -> tuple[int, str]:
        """(offset, value) for the renew script: 0 and the whole value, or the length the stored
        partial has and the text to append to it."""
        draft = self._drafts.get(key)
        text = partial.text
        if (
            draft is None
            or draft.message_id != partial.message_id
            or draft.length < 0
            or len(text) < draft.chars
        ):
            if draft is None and len(self._drafts) >= self.size:
                del self._drafts[next(iter(self._drafts))]
            value = partial_header(lock, partial.message_id) + escape(text)
            self._drafts[key] = _Draft(partial.message_id, len(text), len(value.encode()))
            return 0, value
        chunk = escape(text[draft.chars :])
        offset = draft.length
        draft.chars, draft.length = len(text), offset + len(chunk)
        return offset, chunk

    def stored(self, key: str, length: int) -> None:
        """The renew script's answer: another length than expected makes the next write whole."""
        draft = self._drafts.get(key)
        if draft is not None and draft.length != length:
            draft.length = -1

    def lost(self, key: str) -> None:
        """A write that may or may not have happened: the next one sends the partial whole."""
        self.stored(key, -1)

    def forget(self, key: str) -> bool:
        """The turn ended; True when it wrote a partial (which the end script then deletes)."""
        return self._drafts.pop(key, None) is not None


class RedisTurns:
    """begin / end / renew of a ``RedisSessionStore`` (``store``: the tenant view calling, whose
    keys, scripts and ``round_trips`` counter are used)."""

    def __init__(self, owner: OwnerHeartbeat) -> None:
        self.owner = owner
        self.partials = PartialWriter()

    def lock(self, token: str) -> str:
        return lock_value(self.owner.instance, token)

    async def begin(
        self,
        store: Any,
        session_id: str,
        token: str,
        message: Message | None,
        last: int | None,
        known: int,
        event: dict[str, Any] | None = None,
    ) -> TurnStart | None:
        await self.owner.ensure()  # alive before it holds a lease (once per process)
        k = store.keys(session_id)
        args = [
            self.lock(token),
            str(store.lock_ttl_ms),
            dump(message) if message else "",
            once_key(message) if message else "",
            str(store.ttl_ms),
            "" if last is None else str(max(last, 0)),
            str(max(known, 0)),
            "",  # a dead holder to take the lease over from: none on the fast path
            *(limit_args(message, store.limits) if message else ("0", "0", "0")),
            *_event_args(store, event),
        ]
        keys = [k["meta"], k["msgs"], k["turns"], k["lock"], k["partial"], k["events"]]
        reply = await store._sent(store._run(store._begin_script, keys, args))
        if int(reply[0]) == -2:  # busy: the slow path asks whether the holder still lives
            if not await store._sent(self.owner.holder_gone(reply[1])):
                return None
            args[7] = reply[1]
            reply = await store._sent(store._run(store._begin_script, keys, args))
            if int(reply[0]) == -2:
                return None
            log.info("session %s: took the lease of a dead process over", session_id)
        if int(reply[0]) in (TOO_MANY_MESSAGES, TOO_LARGE) and message is not None:
            raise refusal(int(reply[0]), message, args[2], store.limits)
        if len(reply) == 1:
            raise SessionNotFoundError(f"no session {session_id!r} (it may have expired)")
        appended = None
        if message is not None:
            appended = append_result(message, int(reply[0]), reply[1], reply[7])
        messages = tuple([parse_message(raw) for raw in reply[3]])
        info, summary = session_meta(session_id, tuple(reply[2]))
        first = int(reply[4])
        snapshot = SessionSnapshot(info, messages, summary, first)
        return TurnStart(appended, snapshot, first, int(reply[5]), bool(reply[6]))

    async def end(
        self, store: Any, session_id: str, token: str, message: Message | None,
        event: dict[str, Any] | None = None,
    ) -> AppendResult | None:  # fmt: skip
        k = store.keys(session_id)
        args = [
            self.lock(token),
            dump(message) if message else "",
            once_key(message) if message else "",
            str(store.ttl_ms),
            "1" if self.partials.forget(k["partial"]) else "0",
            *_event_args(store, event),
        ]
        keys = [k["meta"], k["msgs"], k["turns"], k["lock"], k["partial"], k["events"]]
        reply = await store._sent(store._run(store._end_script, keys, args))
        if int(reply[0]) == -1 and len(reply) == 1:
            raise SessionNotFoundError(f"no session {session_id!r} (it may have expired)")
        return append_result(message, int(reply[0]), reply[1], reply[2]) if message else None

    async def renew(
        self, store: Any, session_id: str, token: str, partial: PartialReply | None
    ) -> bool:
        """Renew the lease; with ``partial``, write the reply's new text in the same call."""
        k = store.keys(session_id)
        lock = self.lock(token)
        args = [lock, str(store.lock_ttl_ms), str(store.ttl_ms), "", ""]
        if partial is not None:
            args[3:] = [str(n) for n in self.partials.next(k["partial"], lock, partial)]
        try:
            call = store._run(store._renew_script, [k["lock"], k["partial"]], args)
            code = int(await store._sent(call))
        except BaseException:
            if partial is not None:  # written or not: the next write sends it whole
                self.partials.lost(k["partial"])
            raise
        if partial is not None:
            self.partials.stored(k["partial"], code)
        return code != -1


def _event_args(store: Any, event: dict[str, Any] | None) -> tuple[str, str]:
    """The turn scripts' last two arguments: the event's JSON ('': none) and the stream's MAXLEN."""
    return (json.dumps(event) if event else "", str(store.events_maxlen))


__all__ = ["PartialWriter", "RedisTurns", "decode_partial", "escape", "partial_header"]
