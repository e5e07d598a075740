"""``DeliveryWorker``: the asyncio task of a server process that sends webhook deliveries. It
claims due deliveries from the queue (leased to it), sends each signed, and records the attempt:
a 2xx answer ends the delivery; anything else (another status, refused, timed out, a URL no
longer allowed) is tried again after a backoff, until ``max_attempts``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from assistant.errors import AssistantError
from assistant.messages import now_ms
from assistant.ports.webhooks import WebhookSender, WebhookStore
from assistant.webhooks.models import Attempt, Claim, DeliveryStatus, Outcome
from assistant.webhooks.settings import WebhookSettings
from assistant.webhooks.signing import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
)
from assistant.webhooks.urls import check_destination

log = logging.getLogger(__name__)

USER_AGENT = "assistant-webhooks/1"


def backoff_s(attempt: int, settings: WebhookSettings, draw: Callable[[], float]) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, ...): ``backoff_base_s`` doubling per
    attempt up to ``backoff_max_s``, then a random part of it (between half and all of it), so
    deliveries that failed together do not all come back together."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** min(attempt - 1, 60))
    return ceiling * (0.5 + 0.5 * draw())


class DeliveryWorker:
    def __init__(
        self, store: WebhookStore, sender: WebhookSender, settings: WebhookSettings,
        *, draw: Callable[[], float] = random.random,
    ) -> None:  # fmt: skip
        self.store = store
        self.sender = sender
        self.settings = settings
        self._draw = draw
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._claims: dict[str, Claim] = {}  # claim token -> claim, while it is not finished
        self._stopping = False

    def wake(self) -> None:
        """Look at the queue now (something was enqueued, or a send finished)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        """Stop claiming and cancel the sends under way; their deliveries are given back, due at
        once, for another worker (or this one, restarted). One that cannot be given back (the
        store is down) is taken again when its lease ends."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        unfinished = list(self._claims.values())
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        for claim in unfinished:
            with contextlib.suppress(AssistantError):
                await self.store.release(claim, now_ms())

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._tick()
            except AssistantError as exc:  # the store is down: try again after a poll
                log.warning("webhook deliveries: %s", exc.message)
                await self._sleep(self.settings.poll_s)
            except Exception:  # a bug: logged, and the worker goes on
                log.exception("webhook deliveries")
                await self._sleep(self.settings.poll_s)

    async def _tick(self) -> None:
        free = self.settings.concurrency - len(self._sending)
        if free > 0:
            claims = await self.store.claim(now_ms(), free, round(self.settings.lease_s * 1000),
                                            self.settings.max_attempts)  # fmt: skip
            for claim in claims:
                self._claims[claim.token] = claim
                task = asyncio.create_task(self._send(claim), name=f"webhook-{claim.delivery.id}")
                self._sending.add(task)
                task.add_done_callback(self._sent)
            free -= len(claims)
        if free <= 0:
            return await self._sleep(self.settings.poll_s)  # full: a send that ends wakes it
        due = await self.store.next_due_ms()  # all that was due is taken: until the next one
        wait = self.settings.poll_s
        if due is not None:
            wait = min(wait, max(due - now_ms(), 0) / 1000)
        await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # comes as the wait ends, and ``stop`` would wait for this loop forever
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.001)):
                await self._wake.wait()
        self._wake.clear()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self.wake()

    async def _send(self, claim: Claim) -> None:
        try:
            attempt, status, next_due = await self._attempt(claim)
            await self.store.finish(claim, attempt, status, next_due)
        except asyncio.CancelledError:
            raise  # stopping: ``stop`` gives the claim back
        except AssistantError as exc:  # not recorded: the lease lapses, the delivery comes back
            log.warning("webhook delivery %s: %s", claim.delivery.id, exc.message)
        except Exception:  # a bug must not stop the worker
            log.exception("webhook delivery %s", claim.delivery.id)
        self._claims.pop(claim.token, None)

    async def _attempt(self, claim: Claim) -> tuple[Attempt, DeliveryStatus, int | None]:
        delivery, started = claim.delivery, time.perf_counter()
        status_code, error, final = None, None, False
        subscription = await self.store.subscription(delivery.tenant, delivery.subscription_id)
        if subscription is None or not subscription.enabled:
            error = "the webhook was deleted" if subscription is None else "the webhook is disabled"
            final = True
        else:
            body = delivery.body.encode()
            headers = {
                "Content-Type": "application/json", "User-Agent": USER_AGENT,
                EVENT_HEADER: delivery.event, DELIVERY_HEADER: delivery.id,
                ATTEMPT_HEADER: str(claim.attempt), SIGNATURE_HEADER: sign(subscription.secret, body),
            }  # fmt: skip
            try:
                await check_destination(subscription.url, self.settings)
                result = await self.sender.post(subscription.url, body, headers,
                                                self.settings.timeout_s)  # fmt: skip
                status_code = result.status_code
                if not 200 <= status_code < 300:
                    error = f"the receiver answered HTTP {status_code}"
            except AssistantError as exc:  # the URL is not allowed (now)
                error = exc.message
            except (OSError, TimeoutError, *self.sender.errors) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        outcome: Outcome = "delivered" if error is None else "retrying"
        next_due = None
        if error is not None and (final or claim.attempt >= self.settings.max_attempts):
            outcome = "failed"
        elif error is not None:
            next_due = now_ms() + round(backoff_s(claim.attempt, self.settings, self._draw) * 1000)
        attempt = Attempt(
            delivery_id=delivery.id, event=delivery.event, attempt=claim.attempt, outcome=outcome,
            status_code=status_code, error=error, duration_ms=duration_ms, at=now_ms(),
            next_attempt_at=next_due,
        )  # fmt: skip
        status: DeliveryStatus = "pending" if outcome == "retrying" else outcome
        return attempt, status, next_due
