"""The webhook ports: where subscriptions, the delivery queue and the delivery log live
(``WebhookStore``), and how a delivery is sent (``WebhookSender``).

The queue is at-least-once: ``claim`` hands a due delivery to one worker for ``lease_ms``, with
the next attempt number; ``finish`` records the attempt and, while the lease is still that
worker's, reschedules the delivery or ends it. A worker that dies mid-attempt leaves its claim to
lapse, and the delivery is claimed again (a new attempt) once the lease has passed.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from assistant.ports.store_calls import store_call
from assistant.webhooks.models import Attempt, Claim, Delivery, DeliveryStatus, Subscription

_T = TypeVar("_T")


class WebhookStore(abc.ABC):
    name: str = "webhook_store"
    #: The client library's own exceptions that mean the backend failed (see ``store_call``).
    backend_errors: tuple[type[Exception], ...] = ()

    async def put_subscription(self, subscription: Subscription) -> None:
        await self._call(self._put_subscription_impl(subscription))

    async def subscriptions(self, tenant: str) -> list[Subscription]:
        """The tenant's subscriptions, oldest first."""
        found = await self._call(self._subscriptions_impl(tenant))
        return sorted(found, key=lambda s: (s.created_at, s.id))

    async def subscription(self, tenant: str, subscription_id: str) -> Subscription | None:
        return await self._call(self._subscription_impl(tenant, subscription_id))

    async def delete_subscription(self, tenant: str, subscription_id: str) -> bool:
        """Remove it and its log; its pending deliveries fail at their next attempt."""
        return await self._call(self._delete_subscription_impl(tenant, subscription_id))

    async def enqueue(self, delivery: Delivery, due_ms: int) -> None:
        await self._call(self._enqueue_impl(delivery, due_ms))

    async def claim(self, now_ms: int, limit: int, lease_ms: int, max_attempts: int) -> list[Claim]:
        """Up to ``limit`` deliveries due by ``now_ms``, each leased to the caller for
        ``lease_ms``. One whose ``max_attempts`` are used up (its last worker died) fails."""
        return await self._call(self._claim_impl(now_ms, limit, lease_ms, max_attempts))

    async def finish(
        self, claim: Claim, attempt: Attempt, status: DeliveryStatus, next_due_ms: int | None
    ) -> bool:
        """Log ``attempt``; if the lease is still ``claim``'s: the delivery becomes ``status``
        (``pending``: due again at ``next_due_ms``). False: the lease had passed to another
        worker (the attempt is logged, the delivery is that worker's)."""
        return await self._call(self._finish_impl(claim, attempt, status, next_due_ms))

    async def release(self, claim: Claim, due_ms: int) -> None:
        """Give a claim back unfinished (its worker is stopping): due again at ``due_ms`` instead
        of when its lease ends. Its attempt stays counted (it may have been sent)."""
        await self._call(self._release_impl(claim, due_ms))

    async def next_due_ms(self) -> int | None:
        """When the earliest queued delivery is due (a leased one: when its lease ends)."""
        return await self._call(self._next_due_impl())

    async def log(self, tenant: str, subscription_id: str, limit: int) -> list[Attempt]:
        """The subscription's attempts, newest first."""
        return await self._call(self._log_impl(tenant, subscription_id, limit))

    async def delivery_state(self, tenant: str, delivery_id: str) -> Mapping[str, str] | None:
        """The delivery's state (status, attempts, next_at, last_error), None once it expired."""
        return await self._call(self._delivery_state_impl(tenant, delivery_id))

    async def aclose(self) -> None:  # noqa: B027
        """Release connections."""

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        return await store_call(self.name, "webhook store", awaitable, self.backend_errors)

    @abc.abstractmethod
    async def _put_subscription_impl(self, subscription: Subscription) -> None: ...

    @abc.abstractmethod
    async def _subscriptions_impl(self, tenant: str) -> list[Subscription]: ...

    @abc.abstractmethod
    async def _subscription_impl(
        self, tenant: str, subscription_id: str
    ) -> Subscription | None: ...

    @abc.abstractmethod
    async def _delete_subscription_impl(self, tenant: str, subscription_id: str) -> bool: ...

    @abc.abstractmethod
    async def _enqueue_impl(self, delivery: Delivery, due_ms: int) -> None: ...

    @abc.abstractmethod
    async def _claim_impl(
        self, now_ms: int, limit: int, lease_ms: int, max_attempts: int
    ) -> list[Claim]: ...

    @abc.abstractmethod
    async def _finish_impl(
        self, claim: Claim, attempt: Attempt, status: DeliveryStatus, next_due_ms: int | None
    ) -> bool: ...

    @abc.abstractmethod
    async def _release_impl(self, claim: Claim, due_ms: int) -> None: ...

    @abc.abstractmethod
    async def _next_due_impl(self) -> int | None: ...

    @abc.abstractmethod
    async def _log_impl(self, tenant: str, subscription_id: str, limit: int) -> list[Attempt]: ...

    @abc.abstractmethod
    async def _delivery_state_impl(
        self, tenant: str, delivery_id: str
    ) -> Mapping[str, str] | None: ...


@dataclass(frozen=True)
class SendResult:
    status_code: int


class WebhookSender(abc.ABC):
    """Sends one request. Raises ``OSError`` / ``TimeoutError`` (or the ``errors`` it names)
    when no answer came; any HTTP answer is a ``SendResult``."""

    name: str = "webhook_sender"
    errors: tuple[type[Exception], ...] = ()

    @abc.abstractmethod
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> SendResult: ...

    async def aclose(self) -> None:  # noqa: B027
        """Release connections."""
