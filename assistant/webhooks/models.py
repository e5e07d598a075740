"""What webhooks are made of: a tenant's subscription, one delivery of one event to one
subscription, and one attempt at sending it (an entry of the delivery log)."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict

DeliveryStatus = Literal["pending", "delivered", "failed"]
#: What an attempt led to: sent (2xx), another attempt later, or no more attempts.
Outcome = Literal["delivered", "retrying", "failed"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Subscription(_Record):
    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    #: The signing secret (``whsec_...``): in the create answer only, never listed.
    secret: str
    enabled: bool = True
    description: str = ""
    created_at: int = 0

    def public(self) -> dict[str, object]:
        return {"object": "webhook", **self.model_dump(exclude={"secret", "tenant"})}


class Delivery(_Record):
    """One event for one subscription. ``id`` is the same on every attempt (the
    ``X-Assistant-Delivery`` header): receivers de-duplicate by it, since a delivery may arrive
    more than once (a worker that dies after sending, before recording it)."""

    id: str
    tenant: str
    subscription_id: str
    event: str
    #: The request body exactly as sent (and signed) on every attempt: JSON text.
    body: str
    created_at: int


class Claim(_Record):
    """A delivery a worker took from the queue: its ``attempt`` number (counted by the queue, so
    two workers never make the same attempt) and the lease ``token`` that finishing it needs."""

    delivery: Delivery
    attempt: int
    token: str


class Attempt(_Record):
    """One entry of a subscription's delivery log."""

    object: Literal["webhook.attempt"] = "webhook.attempt"
    delivery_id: str
    event: str
    attempt: int
    outcome: Outcome
    #: The receiver's HTTP status; None when no answer came (refused, timed out, not allowed).
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    at: int = 0
    #: When the next attempt is due (ms since the epoch), for ``retrying``.
    next_attempt_at: int | None = None
