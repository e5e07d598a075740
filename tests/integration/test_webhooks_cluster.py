"""The webhook queue on a real 3-master Redis Cluster, through the session store's cluster client
(``redis+cluster://``): subscriptions on their tenants' slots, the queue's keys on the one slot
of ``{webhooks}``; deliveries published, claimed three times (a lease of 0), delivered by the last
claim, their scripts run on that slot's node; a claim whose lease passed finishes nothing."""

from __future__ import annotations

import pytest

from assistant.config import Settings
from assistant.messages import now_ms
from assistant.registry import build_session_store
from assistant.webhooks.models import Attempt
from assistant.webhooks.service import Webhooks
from tests.support.redis_topology import redis_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("webhook-cluster")) as cluster:
        yield cluster


async def test_the_queue_runs_its_scripts_on_one_slot_of_a_cluster(cluster):
    from adapters.webhooks.redis_queue import RedisWebhookStore

    settings = Settings(redis_url=cluster.url)
    session_store = build_session_store(settings, redis_url=cluster.url)
    try:
        store = RedisWebhookStore(session_store.client, settings.webhooks.model_copy(
            update={"allow_private_addresses": True}))  # fmt: skip
        webhooks = Webhooks(store, store.settings)
        tenants = [f"tenant-{n}" for n in range(6)]  # their subscription keys on several nodes
        hooks = [
            await webhooks.create(t, "http://127.0.0.1:9/", ["message.created"]) for t in tenants
        ]
        made = [d for t in tenants for d in await webhooks.publish(t, "message.created", {"t": t})]
        assert len(made) == len(tenants)
        first = await store.claim(now_ms(), 100, 0, 5) + await store.claim(now_ms(), 100, 0, 5)
        again = await store.claim(now_ms(), 100, 60_000, 5)
        taken = [(c.delivery.id, c.attempt) for c in first + again]
        assert len(taken) == len(set(taken)) == 3 * len(tenants)  # lease 0: due again at once
        for claim in again:
            attempt = Attempt(delivery_id=claim.delivery.id, event=claim.delivery.event,
                              attempt=claim.attempt, outcome="delivered", status_code=200)  # fmt: skip
            assert await store.finish(claim, attempt, "delivered", None)
        assert await store.next_due_ms() is None
        for tenant, hook in zip(tenants, hooks, strict=True):
            log = await webhooks.deliveries(tenant, hook.id, 10)
            assert [(a.attempt, a.outcome) for a in log] == [(3, "delivered")]
        stale = first[0]  # its lease passed to the second claim: finishing it changes nothing
        assert not await store.finish(stale, Attempt(
            delivery_id=stale.delivery.id, event="message.created", attempt=1,
            outcome="retrying"), "pending", now_ms())  # fmt: skip
        assert await store.next_due_ms() is None
    finally:
        await session_store.aclose()
