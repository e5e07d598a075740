"""Webhooks in one process on a real redis-server: ``Webhooks.publish`` through the Redis queue
to the delivery worker, over real HTTP (httpx) to a real receiver on loopback; the queue's claim
racing between two workers on their own connections."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import redis.asyncio as aioredis

from adapters.webhooks.http_sender import HttpxSender
from adapters.webhooks.redis_queue import RedisWebhookStore
from assistant.messages import now_ms
from assistant.webhooks.models import Delivery
from assistant.webhooks.service import Webhooks
from assistant.webhooks.settings import WebhookSettings
from assistant.webhooks.signing import verify
from assistant.webhooks.worker import DeliveryWorker
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

FAST = WebhookSettings(backoff_base_s=0.02, backoff_max_s=0.1, timeout_s=5, lease_s=10,
                       allow_private_addresses=True, max_attempts=5)  # fmt: skip


@contextlib.asynccontextmanager
async def running(redis_url: str, settings: WebhookSettings = FAST):
    client = aioredis.from_url(redis_url)
    store = RedisWebhookStore(client, settings)
    sender = HttpxSender()
    worker = DeliveryWorker(store, sender, settings)
    webhooks = Webhooks(store, settings)
    webhooks.on_enqueue = worker.wake
    worker.start()
    try:
        yield webhooks
    finally:
        await worker.stop()
        await sender.aclose()
        await client.aclose()


async def test_a_published_event_reaches_a_subscriber_that_fails_twice_signed(redis_url):
    receiver = await WebhookReceiver(statuses=[500, 503]).start()
    try:
        async with running(redis_url) as webhooks:
            wanted = await webhooks.create("acme", receiver.url, ["message.created"])
            other = await webhooks.create("acme", receiver.url, ["conversation.resolved"])
            await webhooks.create("other-tenant", receiver.url, ["message.created"])
            made = await webhooks.publish("acme", "message.created", {"text": "hi"})
            assert [d.subscription_id for d in made] == [wanted.id]
            await receiver.wait(lambda r: r.delivered)
            log = await logged(webhooks, wanted.id, 3)  # recorded just after the answer came
            assert await webhooks.deliveries("acme", other.id, 10) == []
    finally:
        await receiver.stop()
    assert [r.attempt for r in receiver.requests] == [1, 2, 3]
    assert {r.delivery for r in receiver.requests} == {made[0].id}
    final = receiver.delivered[0]
    assert verify(wanted.secret, final.headers["x-assistant-signature"], final.body)
    assert not verify(other.secret, final.headers["x-assistant-signature"], final.body)
    assert final.headers["x-assistant-event"] == "message.created"
    body = json.loads(final.body)
    assert body["type"] == "message.created" and body["data"] == {"text": "hi"}
    assert body["tenant"] == "acme"
    assert [(a.attempt, a.outcome, a.status_code) for a in reversed(log)] == [
        (1, "retrying", 500), (2, "retrying", 503), (3, "delivered", 200),
    ]  # fmt: skip


async def test_a_delivery_fails_after_its_last_attempt(redis_url):
    receiver = await WebhookReceiver(default=500).start()
    settings = FAST.model_copy(update={"max_attempts": 2})
    try:
        async with running(redis_url, settings) as webhooks:
            hook = await webhooks.create("acme", receiver.url, ["conversation.handoff"])
            (delivery,) = await webhooks.publish("acme", "conversation.handoff", {})

            async def failed() -> bool:
                state = await webhooks.store.delivery_state("acme", delivery.id)
                return state is not None and state["status"] == "failed"

            await wait_until(failed)
            log = await webhooks.deliveries("acme", hook.id, 10)
    finally:
        await receiver.stop()
    assert [(a.attempt, a.outcome) for a in reversed(log)] == [(1, "retrying"), (2, "failed")]
    assert len(receiver.requests) == 2


async def logged(webhooks: Webhooks, webhook_id: str, attempts: int) -> list:
    """The webhook's log once it holds ``attempts`` entries."""
    from tests.support.waiting import wait_for_async

    async def check():
        log = await webhooks.deliveries("acme", webhook_id, 10)
        return log if len(log) >= attempts else None

    return await wait_for_async(check, what=f"{attempts} attempts logged")


async def wait_until(predicate, timeout_s: float = 30) -> None:
    from tests.support.waiting import wait_for_async

    await wait_for_async(predicate, what="the delivery to fail", timeout_s=timeout_s)


async def test_two_workers_claiming_at_once_never_take_the_same_attempt(redis_url):
    """Two claimers on their own connections race over 300 due deliveries, each attempt twice
    (the lease is 0: a claim is due again at once): every (delivery, attempt) is claimed once."""
    settings = FAST
    clients = [aioredis.from_url(redis_url) for _ in range(2)]
    stores = [RedisWebhookStore(c, settings) for c in clients]
    at = now_ms()
    for n in range(300):
        delivery = Delivery(id=f"whd_{n}", tenant="acme", subscription_id="wh_1",
                            event="ping", body="{}", created_at=at)  # fmt: skip
        await stores[0].enqueue(delivery, at)
    taken: list[list[tuple[str, int]]] = [[], []]

    async def claimer(index: int) -> None:
        while True:
            claims = await stores[index].claim(now_ms(), 7, 0, 2)
            if not claims and await stores[index].next_due_ms() is None:
                return
            taken[index].extend((c.delivery.id, c.attempt) for c in claims)

    try:
        await asyncio.gather(claimer(0), claimer(1))
    finally:
        for client in clients:
            await client.aclose()
    every = taken[0] + taken[1]
    assert len(every) == len(set(every)) == 600
    assert taken[0] and taken[1]  # both took part


async def test_a_stopping_worker_gives_its_claims_back_for_the_next_at_once(redis_url):
    """Worker A's attempt 1 hangs (the receiver holds it); A stops: the delivery is due again at
    once, not after the 10-minute lease, and worker B's attempt 2 lands."""
    receiver = await WebhookReceiver(statuses=[None]).start()
    settings = FAST.model_copy(update={"lease_s": 600})
    try:
        async with running(redis_url, settings) as first:
            hook = await first.create("acme", receiver.url, ["message.created"])
            (delivery,) = await first.publish("acme", "message.created", {})
            await receiver.wait(lambda r: r.requests)
        async with running(redis_url, settings) as second:
            await receiver.wait(lambda r: r.delivered, timeout_s=20)
            log = await logged(second, hook.id, 1)
    finally:
        await receiver.stop()
    assert [(r.delivery, r.attempt, r.status) for r in receiver.requests] == [
        (delivery.id, 1, None),
        (delivery.id, 2, 200),
    ]
    assert [(a.attempt, a.outcome) for a in log] == [(2, "delivered")]


async def test_a_delivery_to_a_deleted_or_disabled_webhook_fails_unsent(redis_url):
    receiver = WebhookReceiver()  # never listening: nothing may be sent
    async with running(redis_url) as webhooks:
        worker_wake, webhooks.on_enqueue = webhooks.on_enqueue, None  # enqueue without waking
        deleted = await webhooks.create("acme", receiver.url, ["message.created"])
        (first,) = await webhooks.publish("acme", "message.created", {})
        await webhooks.delete("acme", deleted.id)
        disabled = await webhooks.create("acme", receiver.url, ["message.created"])
        await webhooks.store.put_subscription(disabled.model_copy(update={"enabled": False}))
        assert await webhooks.publish("acme", "message.created", {}) == []  # none enabled
        (second,) = [await webhooks.ping("acme", disabled.id)]
        assert worker_wake is not None
        worker_wake()

        async def both_failed() -> list[str] | None:
            states = [await webhooks.store.delivery_state("acme", d.id) for d in (first, second)]
            errors = [s["last_error"] for s in states if s and s["status"] == "failed"]
            return errors if len(errors) == 2 else None

        from tests.support.waiting import wait_for_async

        errors = await wait_for_async(both_failed, what="both deliveries to fail")
    assert errors == ["the webhook was deleted", "the webhook is disabled"]
    assert receiver.requests == []
