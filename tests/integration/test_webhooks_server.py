"""Webhooks on real ``assistant serve`` processes over a real redis-server, delivering to a real
HTTP receiver on loopback (private addresses allowed for it, backoff made tiny): a receiver down
for the first attempts gets the event once it is back, signed; a server killed between attempts
or in the middle of one loses nothing (a second server on the same Redis delivers it); two
servers send each attempt once; every route keeps to the caller's tenant and needs admin."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import httpx
import pytest

from adapters.memory.redis_keys import RedisKeyStore
from assistant.server.auth_routes import make_key
from assistant.webhooks.signing import verify
from tests.support.server import ServerProcess, serve_env
from tests.support.waiting import wait_for_async
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "test-server-secret-webhooks-0123456789"


def env(tmp_path, redis_url: str, **settings: str) -> dict[str, str]:
    defaults = {
        "ASSISTANT_LLM__ADAPTER": "scripted", "ASSISTANT_REDIS_URL": redis_url,
        "ASSISTANT_AUTH__OPEN": "false", "ASSISTANT_AUTH__SECRET": SECRET,
        "ASSISTANT_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES": "true",
        "ASSISTANT_WEBHOOKS__BACKOFF_BASE_S": "0.05", "ASSISTANT_WEBHOOKS__BACKOFF_MAX_S": "0.2",
    }  # fmt: skip
    return serve_env(tmp_path, **{**defaults, **settings})


async def started(environment: dict[str, str]) -> ServerProcess:
    return await asyncio.to_thread(ServerProcess(environment).start)  # the loop serves meanwhile


async def new_key(redis_url: str, tenant: str, *scopes: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        _, key = await make_key(RedisKeyStore(client), SECRET.encode(), tenant, "secret",
                                scopes or ("admin",), (), "")  # fmt: skip
    finally:
        await client.aclose()
    return key


def client(server: ServerProcess, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"})


async def subscribe(http: httpx.AsyncClient, url: str, events=("message.created",)) -> dict:
    created = await http.post("/v1/webhooks", json={"url": url, "events": list(events)})
    assert created.status_code == 201, created.text
    return created.json()


async def ping(http: httpx.AsyncClient, webhook_id: str) -> str:
    sent = await http.post(f"/v1/webhooks/{webhook_id}/test")
    assert sent.status_code == 202, sent.text
    return sent.json()["id"]


async def log_of(http: httpx.AsyncClient, webhook_id: str) -> list[dict]:
    answer = await http.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["data"]))  # oldest first


async def wait_log(http, webhook_id: str, predicate, what: str) -> list[dict]:
    async def check():
        log = await log_of(http, webhook_id)
        return log if predicate(log) else None

    return await wait_for_async(check, what=what, poll_s=0.05)


async def test_a_receiver_down_for_three_attempts_gets_the_event_signed_once_back(
    tmp_path, redis_url
):
    receiver = await WebhookReceiver(statuses=[500, 502, 503]).start()
    key = await new_key(redis_url, "acme")
    server = await started(env(tmp_path, redis_url))
    try:
        async with client(server, key) as http:
            hook = await subscribe(http, receiver.url)
            assert hook["secret"].startswith("whsec_")
            listed = (await http.get("/v1/webhooks")).json()["data"]
            assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
            delivery_id = await ping(http, hook["id"])
            await receiver.wait(lambda r: r.delivered)
            log = await wait_log(http, hook["id"], lambda log: len(log) == 4, "4 attempts logged")
    finally:
        server.stop()
        await receiver.stop()
    assert [(r.attempt, r.status, r.delivery) for r in receiver.requests] == [
        (1, 500, delivery_id), (2, 502, delivery_id), (3, 503, delivery_id),
        (4, 200, delivery_id),
    ]  # fmt: skip
    final = receiver.delivered[0]
    assert verify(hook["secret"], final.headers["x-assistant-signature"], final.body)
    assert final.headers["x-assistant-event"] == "ping"
    assert json.loads(final.body)["data"]["webhook_id"] == hook["id"]
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in log] == [
        (1, "retrying", 500), (2, "retrying", 502), (3, "retrying", 503), (4, "delivered", 200),
    ]  # fmt: skip
    assert all(a["delivery_id"] == delivery_id and a["duration_ms"] >= 0 for a in log)
    assert all(a["error"] for a in log[:3]) and log[3]["error"] is None


def kill(server: ServerProcess) -> None:
    os.kill(server.pid, signal.SIGKILL)
    assert server.proc is not None
    server.proc.wait(timeout=30)


async def test_a_server_killed_between_attempts_loses_no_delivery(tmp_path, redis_url):
    """The receiver refuses connections (not listening) while server A tries; A is SIGKILLed
    after its first attempt; the receiver comes back, and server B delivers."""
    receiver = WebhookReceiver()
    key = await new_key(redis_url, "acme")
    # a second attempt A may have begun before the kill is B's after a short lease
    slow = {"ASSISTANT_WEBHOOKS__BACKOFF_BASE_S": "1", "ASSISTANT_WEBHOOKS__BACKOFF_MAX_S": "2",
            "ASSISTANT_WEBHOOKS__TIMEOUT_S": "2", "ASSISTANT_WEBHOOKS__LEASE_S": "3"}  # fmt: skip
    first = await started(env(tmp_path, redis_url, **slow))
    try:
        async with client(first, key) as http:
            hook = await subscribe(http, receiver.url)
            delivery_id = await ping(http, hook["id"])
            await wait_log(http, hook["id"], lambda log: len(log) >= 1, "attempt 1 logged")
            kill(first)
    finally:
        first.stop()
    await receiver.start()
    second = await started(env(tmp_path, redis_url))
    try:
        await receiver.wait(lambda r: r.delivered)
        async with client(second, key) as http:
            log = await wait_log(http, hook["id"], lambda log: log[-1]["outcome"] == "delivered",
                                 "the delivery logged")  # fmt: skip
    finally:
        second.stop()
        await receiver.stop()
    assert [(r.delivery, r.status) for r in receiver.requests] == [(delivery_id, 200)]
    final = receiver.delivered[0]
    assert verify(hook["secret"], final.headers["x-assistant-signature"], final.body)
    *refused, delivered = log
    assert refused and all(a["outcome"] == "retrying" and a["status_code"] is None for a in refused)
    assert [a["attempt"] for a in log] == list(range(1, len(log) + 1))
    assert delivered["attempt"] == final.attempt


async def test_a_server_killed_in_the_middle_of_an_attempt_leaves_it_to_the_next(
    tmp_path, redis_url
):
    """Server A's attempt 1 is held open by the receiver and A is SIGKILLed then: nothing was
    recorded, and once A's lease ends server B makes attempt 2, which is delivered."""
    receiver = await WebhookReceiver(statuses=[None]).start()
    key = await new_key(redis_url, "acme")
    lease = {"ASSISTANT_WEBHOOKS__LEASE_S": "6", "ASSISTANT_WEBHOOKS__TIMEOUT_S": "5"}
    first = await started(env(tmp_path, redis_url, **lease))
    try:
        async with client(first, key) as http:
            hook = await subscribe(http, receiver.url)
            delivery_id = await ping(http, hook["id"])
            await receiver.wait(lambda r: r.requests)
            kill(first)
    finally:
        first.stop()
    second = await started(env(tmp_path, redis_url, **lease))
    try:
        await receiver.wait(lambda r: r.delivered)
        async with client(second, key) as http:
            log = await wait_log(http, hook["id"], lambda log: len(log) == 1, "attempt 2 logged")
    finally:
        second.stop()
        await receiver.stop()
    assert [(r.delivery, r.attempt, r.status) for r in receiver.requests] == [
        (delivery_id, 1, None), (delivery_id, 2, 200),
    ]  # fmt: skip
    assert [(a["attempt"], a["outcome"]) for a in log] == [(2, "delivered")]


async def test_two_servers_send_each_attempt_once(tmp_path, redis_url):
    """40 deliveries, the first 40 requests answered 500: with two servers claiming from one
    queue, no (delivery, attempt) reaches the receiver twice and each delivery lands once."""
    count = 40
    receiver = await WebhookReceiver(statuses=[500] * count).start()
    key = await new_key(redis_url, "acme")
    servers = [await started(env(tmp_path, redis_url)) for _ in range(2)]
    try:
        async with client(servers[0], key) as a, client(servers[1], key) as b:
            hook = await subscribe(a, receiver.url)
            sent = [await ping((a, b)[n % 2], hook["id"]) for n in range(count)]
            await receiver.wait(lambda r: len(r.delivered) >= count)
    finally:
        for server in servers:
            server.stop()
        await receiver.stop()
    attempts = [(r.delivery, r.attempt) for r in receiver.requests]
    assert len(attempts) == len(set(attempts)) == 2 * count
    assert sorted(r.delivery for r in receiver.delivered) == sorted(sent)


async def test_every_webhook_route_keeps_to_the_callers_tenant_and_needs_admin(tmp_path, redis_url):
    acme = await new_key(redis_url, "acme")
    globex = await new_key(redis_url, "globex")
    acme_agent = await new_key(redis_url, "acme", "agent", "client")
    server = await started(env(tmp_path, redis_url))
    routes = [("GET", "/v1/webhooks"), ("POST", "/v1/webhooks"), ("DELETE", "/v1/webhooks/{}"),
              ("GET", "/v1/webhooks/{}/deliveries"), ("POST", "/v1/webhooks/{}/test")]  # fmt: skip
    body = {"url": "http://127.0.0.1:9/hook", "events": ["conversation.handoff"]}
    try:
        async with client(server, acme) as mine, client(server, globex) as theirs:
            hook = await subscribe(mine, "http://127.0.0.1:9/hook")
            assert (await theirs.get("/v1/webhooks")).json()["data"] == []
            for method, path in routes[2:]:
                answer = await theirs.request(method, path.format(hook["id"]))
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["error"]["code"] == "webhook_not_found"
            async with client(server, acme_agent) as agent:
                for method, path in routes:
                    kw = {"json": body} if method == "POST" and path == "/v1/webhooks" else {}
                    answer = await agent.request(method, path.format(hook["id"]), **kw)
                    assert answer.status_code == 403, (method, path, answer.text)
                    assert answer.json()["error"]["code"] == "insufficient_scope"
            async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
                assert (await anonymous.get("/v1/webhooks")).status_code == 401
            assert [h["id"] for h in (await mine.get("/v1/webhooks")).json()["data"]] == [
                hook["id"]
            ]
            for url in ("ftp://example.com/x", "not a url", "http://user:pw@127.0.0.1/x"):
                answer = await mine.post("/v1/webhooks", json={**body, "url": url})
                assert answer.status_code == 400, (url, answer.text)
                assert answer.json()["error"]["code"] == "invalid_webhook_url"
            unknown = await mine.post("/v1/webhooks", json={**body, "events": ["nope"]})
            assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "events[0]"
            gone = await mine.delete(f"/v1/webhooks/{hook['id']}")
            assert gone.status_code == 200 and gone.json()["id"] == hook["id"]
            again = await mine.delete(f"/v1/webhooks/{hook['id']}")
            assert again.json()["error"]["code"] == "webhook_not_found"
    finally:
        server.stop()


async def test_a_loopback_webhook_is_refused_by_default(tmp_path, redis_url):
    key = await new_key(redis_url, "acme")
    server = await started(
        env(tmp_path, redis_url, ASSISTANT_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES="false")
    )
    try:
        async with client(server, key) as http:
            for url in ("http://127.0.0.1:9/hook", "http://[::1]:9/", "http://169.254.169.254/x"):
                answer = await http.post(
                    "/v1/webhooks", json={"url": url, "events": ["message.created"]}
                )
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["code"] == "webhook_url_not_allowed"
            assert (await http.get("/v1/webhooks")).json()["data"] == []
    finally:
        server.stop()
