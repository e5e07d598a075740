"""The events a webhook can subscribe to. ``ping`` is not subscribable: ``POST
/v1/webhooks/{id}/test`` sends one to that subscription alone."""

from __future__ import annotations

from typing import Literal

Event = Literal[
    "conversation.handoff", "conversation.claimed", "conversation.resolved", "message.created"
]
EVENTS: tuple[Event, ...] = (
    "conversation.handoff",
    "conversation.claimed",
    "conversation.resolved",
    "message.created",
)
PING = "ping"
