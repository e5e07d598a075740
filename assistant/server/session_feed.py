"""``SessionFeed``: a realtime connection's view of its session's event stream
(``handoff.hub``): the events other connections and agents add (their messages, status changes)
sent to this client as ``conversation.item.added`` / ``conversation.status.updated`` with their
``seq``, from the position the client asked for (``?after=<seq>`` on connect: every event since,
once) or from now. The connection's own items are on the stream too but not echoed to it (they
carry its ``origin``); status changes are sent to every connection, its own request's too.
``on_item`` hears every item sent (a voice connection speaks an agent's reply)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from assistant.errors import EventsLostError, InvalidRequestError
from assistant.handoff.hub import EventHub, Subscription
from assistant.messages import ConversationStatus, new_id
from assistant.ports.conversations import Event, valid_seq
from assistant.protocol import ConversationItemAdded, ConversationStatusUpdated
from assistant.server.outbox import Outbox

log = logging.getLogger(__name__)


def check_after(after: str | None) -> str | None:
    if after is not None and not valid_seq(after):
        raise InvalidRequestError(
            f"after: not a sequence number ({after[:40]!r}); use the seq of the last event seen",
            code="invalid_request", param="after",
        )  # fmt: skip
    return after


def lost(after: str) -> EventsLostError:
    return EventsLostError(
        f"events after seq {after} are no longer kept (the stream was trimmed): read the "
        "history again (GET /v1/sessions/{id}/messages) and follow on from its last event"
    )


STATUS = "conversation.status.updated"


class SessionFeed:
    def __init__(
        self, hub: EventHub, tenant: str, session_id: str, outbox: Outbox,
        on_status: Callable[[ConversationStatus], None] | None = None,
        on_item: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:  # fmt: skip
        self.hub = hub
        self.tenant = tenant
        self.session_id = session_id
        self.outbox = outbox
        self.on_status = on_status
        self.on_item = on_item
        self.origin = new_id("conn")
        #: The status as the stream last said (the turn gate reads the stored one).
        self.status: ConversationStatus | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def last_seq(self) -> str:
        return await self.hub.store.for_tenant(self.tenant).last_seq(self.session_id)

    async def start(self, after: str) -> None:
        """Follow from ``after``; one trimmed away: an ``events_lost`` error first (the client
        reads the history again), then the events kept."""
        self._sub = await self.hub.subscribe(self.tenant, self.session_id, after)
        if self._sub.lost:
            self.outbox.emit_error(lost(after))
        self._task = asyncio.create_task(self._forward(self._sub))

    async def _forward(self, sub: Subscription) -> None:
        async for seq, event in sub:
            if event.get("origin") == self.origin and event.get("type") != STATUS:
                continue  # its own items: it had them as conversation.item.created / response.done
            wire = self._wire(seq, event)
            if wire is not None:
                self.outbox.emit(wire)
        if sub.lagging:
            log.info("session feed: the client fell behind its session's events; closing")
            self.outbox.finish()

    def _wire(self, seq: str, event: Event) -> object | None:
        kind = event.get("type")
        if kind == "conversation.item.added":
            wire = ConversationItemAdded(seq=seq, item=event["item"])
            if self.on_item is not None:
                self.on_item(event["item"])
            return wire
        if kind == "conversation.status.updated":
            self.status = event["status"]
            if self.on_status is not None:
                self.on_status(event["status"])
            return ConversationStatusUpdated(
                seq=seq, status=event["status"], reason=event.get("reason"),
                agent=event.get("agent"),
            )  # fmt: skip
        return None

    async def stop(self) -> None:
        if self._sub is not None:
            self.hub.unsubscribe(self._sub)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
