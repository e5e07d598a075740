"""``Webhooks``: a tenant's subscriptions and the one call that publishes an event to them.

    await webhooks.publish("acme", "conversation.handoff", {"session_id": ..., "reason": ...})

enqueues one delivery per enabled subscription of the tenant that wants the event; the
delivery workers (``worker.DeliveryWorker``, one per server process) send them. The body a
receiver gets (signed, see ``signing``):

    {"id": "evt_...", "type": "conversation.handoff", "created_at": 1767000000,
     "tenant": "acme", "data": {...}}
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from assistant.errors import InvalidRequestError, WebhookNotFoundError, shown
from assistant.messages import now_ms
from assistant.ports.memory import check_tenant
from assistant.ports.webhooks import WebhookStore
from assistant.webhooks.events import EVENTS, PING
from assistant.webhooks.models import Attempt, Delivery, Subscription, new_id
from assistant.webhooks.settings import WebhookSettings
from assistant.webhooks.signing import new_secret
from assistant.webhooks.urls import check_destination


class Webhooks:
    def __init__(self, store: WebhookStore, settings: WebhookSettings) -> None:
        self.store = store
        self.settings = settings
        #: Called after each enqueue: the worker of this process wakes at once.
        self.on_enqueue: Callable[[], None] | None = None

    async def create(
        self, tenant: str, url: str, events: list[str], *, description: str = "",
        enabled: bool = True,
    ) -> Subscription:  # fmt: skip
        """A new subscription with a fresh secret (the caller shows it once)."""
        check_tenant(tenant)
        wanted = check_events(events)
        await check_destination(url, self.settings)
        if len(await self.store.subscriptions(tenant)) >= self.settings.max_subscriptions:
            raise InvalidRequestError(
                f"a tenant has at most {self.settings.max_subscriptions} webhooks",
                code="too_many_webhooks",
            )
        subscription = Subscription(
            id=new_id("wh"), tenant=tenant, url=url, events=wanted, secret=new_secret(),
            enabled=enabled, description=description, created_at=now_ms(),
        )  # fmt: skip
        await self.store.put_subscription(subscription)
        return subscription

    async def list(self, tenant: str) -> list[Subscription]:
        return await self.store.subscriptions(tenant)

    async def get(self, tenant: str, subscription_id: str) -> Subscription:
        """The tenant's subscription; another tenant's is not found (nothing says it exists)."""
        found = await self.store.subscription(tenant, subscription_id)
        if found is None:
            raise WebhookNotFoundError(f"no webhook {shown(subscription_id)}")
        return found

    async def delete(self, tenant: str, subscription_id: str) -> Subscription:
        found = await self.get(tenant, subscription_id)
        await self.store.delete_subscription(tenant, subscription_id)
        return found

    async def deliveries(self, tenant: str, subscription_id: str, limit: int) -> list[Attempt]:
        await self.get(tenant, subscription_id)
        return await self.store.log(tenant, subscription_id, limit)

    async def publish(self, tenant: str, event: str, data: Mapping[str, Any]) -> list[Delivery]:
        """Enqueue ``event`` for every enabled subscription of ``tenant`` that wants it; the
        deliveries made (none when nobody subscribed)."""
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}; known: {', '.join(EVENTS)}")
        subscriptions = [s for s in await self.store.subscriptions(tenant)
                         if s.enabled and event in s.events]  # fmt: skip
        return await self._enqueue(tenant, event, data, subscriptions)

    async def ping(self, tenant: str, subscription_id: str) -> Delivery:
        """A ``ping`` delivery to that one subscription (``POST /v1/webhooks/{id}/test``)."""
        subscription = await self.get(tenant, subscription_id)
        data = {"webhook_id": subscription.id, "message": "a test delivery"}
        (delivery,) = await self._enqueue(tenant, PING, data, [subscription])
        return delivery

    async def _enqueue(
        self, tenant: str, event: str, data: Mapping[str, Any], to: list[Subscription]
    ) -> list[Delivery]:
        if not to:
            return []
        at = now_ms()
        body = json.dumps({"id": new_id("evt"), "type": event, "created_at": at // 1000,
                           "tenant": tenant, "data": data}, separators=(",", ":"))  # fmt: skip
        deliveries = [
            Delivery(
                id=new_id("whd"),
                tenant=tenant,
                subscription_id=s.id,
                event=event,
                body=body,
                created_at=at,
            )  # fmt: skip
            for s in to
        ]
        await asyncio.gather(*(self.store.enqueue(d, at) for d in deliveries))
        if self.on_enqueue is not None:
            self.on_enqueue()
        return deliveries


def check_events(events: list[str]) -> tuple[str, ...]:
    if not events:
        raise InvalidRequestError("a webhook needs at least one event", code="invalid_request",
                                  param="events")  # fmt: skip
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidRequestError(
            f"unknown webhook event {shown(unknown[0])}; known: {', '.join(EVENTS)}",
            code="invalid_request", param="events",
        )  # fmt: skip
    return tuple(dict.fromkeys(events))
