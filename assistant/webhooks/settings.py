"""``WebhookSettings``: the ``webhooks`` section of ``assistant.config.Settings`` (kept here, beside
what it configures; ``assistant.config`` re-exports it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WebhookSettings(BaseModel):
    """Signed webhooks (``/v1/webhooks``): each delivery is queued in Redis and sent by a worker
    in every server process, retried after ``backoff_base_s`` doubling up to ``backoff_max_s``
    (each wait drawn between half and all of that: jitter), at most ``max_attempts`` times.
    ``ASSISTANT_WEBHOOKS__...``; a section of ``config.Settings`` (there as ``webhooks``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Run the delivery worker in this process (the routes work either way).
    enabled: bool = True
    max_attempts: int = Field(12, ge=1, le=50)
    backoff_base_s: float = Field(10.0, gt=0, le=3600)
    backoff_max_s: float = Field(3600.0, gt=0, le=86_400)
    #: Seconds one attempt may take (connect, send, the receiver's answer).
    timeout_s: float = Field(10.0, gt=0, le=300)
    #: A worker holds a delivery it took this long; if its process dies mid-attempt, another
    #: worker takes the delivery again after it (so it must be longer than ``timeout_s``).
    lease_s: float = Field(60.0, gt=0, le=3600)
    #: The longest a worker waits before looking at the queue again (it also wakes at the next
    #: due time it knows of, and when its own process publishes).
    poll_s: float = Field(1.0, gt=0, le=60)
    #: Deliveries sent at once per process.
    concurrency: int = Field(4, ge=1, le=64)
    allowed_schemes: tuple[str, ...] = ("https", "http")
    #: Let webhook URLs resolve to loopback, private, link-local or reserved addresses. Off by
    #: default: a tenant's webhook could otherwise reach the server's own network (SSRF).
    allow_private_addresses: bool = False
    #: Subscriptions per tenant.
    max_subscriptions: int = Field(20, ge=1, le=1000)
    #: Attempts kept in a subscription's delivery log (newest first); deliveries and logs
    #: expire ``retention_s`` after their last write.
    log_entries: int = Field(200, ge=1, le=10_000)
    retention_s: int = Field(7 * 24 * 3600, ge=60)

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> WebhookSettings:
        if self.lease_s <= self.timeout_s:
            raise ValueError("webhooks.lease_s must be longer than webhooks.timeout_s")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("webhooks.backoff_max_s must be at least webhooks.backoff_base_s")
        return self
