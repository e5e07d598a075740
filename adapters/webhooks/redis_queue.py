"""Webhooks in plain Redis (no modules). Subscriptions per tenant; the delivery queue and the
logs under one hash tag, ``{webhooks}``, so claiming and finishing are each one Lua script, also
on a Cluster (the queue is one slot: webhooks are not the hot path). The claim script reads the
delivery hashes it finds due, keys it is not given but on its own slot, as Cluster allows:

    {prefix}:{tenant}:webhooks                      hash    subscription id -> Subscription JSON
    {prefix}:{webhooks}:due                         zset    <tenant>:d:<delivery id> -> due (ms)
    {prefix}:{webhooks}:<tenant>:d:<delivery id>    hash    data (Delivery JSON), status,
                                                            attempts, token, next_at, last_error
    {prefix}:{webhooks}:<tenant>:log:<webhook id>   list    Attempt JSON, newest first

Claiming moves a due member's score to ``now + lease`` and counts the attempt in the delivery's
hash, in one script: two workers never take the same attempt, and a claim whose worker died is
due again when its lease ends. Finishing checks the lease token first. A delivery and a log
expire ``retention_s`` after their last write; the log keeps ``log_entries`` attempts.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

try:
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the redis webhook store needs redis-py ({exc})") from exc

from assistant.ports.memory import check_tenant
from assistant.ports.webhooks import WebhookStore
from assistant.webhooks.models import Attempt, Claim, Delivery, DeliveryStatus, Subscription
from assistant.webhooks.settings import WebhookSettings

# KEYS: due. ARGV: now, limit, lease_ms, key base, token, max_attempts, now (for failures)
_CLAIM = """
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i, member in ipairs(due) do
  local key = ARGV[4] .. member
  local status = redis.call('HGET', key, 'status')
  if status ~= 'pending' then
    redis.call('ZREM', KEYS[1], member)
  elseif tonumber(redis.call('HGET', key, 'attempts') or '0') >= tonumber(ARGV[6]) then
    redis.call('HSET', key, 'status', 'failed', 'token', '',
               'last_error', 'its last attempt was cut short (the worker stopped)')
    redis.call('ZREM', KEYS[1], member)
  else
    local attempt = redis.call('HINCRBY', key, 'attempts', 1)
    local token = ARGV[5] .. '.' .. i
    redis.call('HSET', key, 'token', token)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), member)
    table.insert(out, {member, tostring(attempt), token, redis.call('HGET', key, 'data')})
  end
end
return out
"""

# KEYS: due, delivery, log. ARGV: member, token, status, next_due, attempt JSON, log entries,
# retention_s, last_error
_FINISH = """
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'token', '', 'last_error', ARGV[8],
           'next_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
if ARGV[3] == 'pending' then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS: due, delivery. ARGV: member, token, due
_RELEASE = """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'token', '')
redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[3]), ARGV[1])
return 1
"""


class RedisWebhookStore(WebhookStore):
    name = "redis_webhooks"
    backend_errors = (RedisError,)

    def __init__(
        self, client: Any, settings: WebhookSettings, *, key_prefix: str = "assistant"
    ) -> None:
        self.client = client  # redis-py asyncio (the session store's, not closed here)
        self.settings = settings
        self.prefix = key_prefix
        self.queue = f"{key_prefix}:{{webhooks}}:"
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    def _subscriptions_key(self, tenant: str) -> str:
        return f"{self.prefix}:{check_tenant(tenant)}:webhooks"

    @staticmethod
    def _member(tenant: str, delivery_id: str) -> str:
        return f"{tenant}:d:{delivery_id}"

    def _log_key(self, tenant: str, subscription_id: str) -> str:
        return f"{self.queue}{tenant}:log:{subscription_id}"

    async def _put_subscription_impl(self, subscription: Subscription) -> None:
        key = self._subscriptions_key(subscription.tenant)
        await self.client.hset(key, subscription.id, subscription.model_dump_json())

    async def _subscriptions_impl(self, tenant: str) -> list[Subscription]:
        raw = await self.client.hvals(self._subscriptions_key(tenant))
        return [Subscription.model_validate_json(value) for value in raw]

    async def _subscription_impl(self, tenant: str, subscription_id: str) -> Subscription | None:
        raw = await self.client.hget(self._subscriptions_key(tenant), subscription_id)
        return Subscription.model_validate_json(raw) if raw else None

    async def _delete_subscription_impl(self, tenant: str, subscription_id: str) -> bool:
        removed = await self.client.hdel(self._subscriptions_key(tenant), subscription_id)
        await self.client.delete(self._log_key(tenant, subscription_id))
        return bool(removed)

    async def _enqueue_impl(self, delivery: Delivery, due_ms: int) -> None:
        member = self._member(check_tenant(delivery.tenant), delivery.id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.queue + member, mapping={
                "data": delivery.model_dump_json(), "status": "pending", "attempts": 0,
                "token": "", "next_at": due_ms, "last_error": "",
            })  # fmt: skip
            pipe.expire(self.queue + member, self.settings.retention_s)
            pipe.zadd(self.queue + "due", {member: due_ms})
            await pipe.execute()

    async def _claim_impl(
        self, now_ms: int, limit: int, lease_ms: int, max_attempts: int
    ) -> list[Claim]:
        token = secrets.token_hex(8)
        args = [now_ms, limit, lease_ms, self.queue, token, max_attempts]
        rows = await self._claim(keys=[self.queue + "due"], args=args)
        return [
            Claim(
                delivery=Delivery.model_validate_json(data),
                attempt=int(attempt),
                token=_text(lease),
            )  # fmt: skip
            for _, attempt, lease, data in rows
        ]

    async def _finish_impl(
        self, claim: Claim, attempt: Attempt, status: DeliveryStatus, next_due_ms: int | None
    ) -> bool:
        delivery = claim.delivery
        member = self._member(delivery.tenant, delivery.id)
        keys = [self.queue + "due", self.queue + member,
                self._log_key(delivery.tenant, delivery.subscription_id)]  # fmt: skip
        args = [member, claim.token, status, next_due_ms or 0, attempt.model_dump_json(),
                self.settings.log_entries, self.settings.retention_s, attempt.error or ""]  # fmt: skip
        return bool(await self._finish(keys=keys, args=args))

    async def _release_impl(self, claim: Claim, due_ms: int) -> None:
        member = self._member(claim.delivery.tenant, claim.delivery.id)
        keys = [self.queue + "due", self.queue + member]
        await self._release(keys=keys, args=[member, claim.token, due_ms])

    async def _next_due_impl(self) -> int | None:
        first = await self.client.zrange(self.queue + "due", 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def _log_impl(self, tenant: str, subscription_id: str, limit: int) -> list[Attempt]:
        raw = await self.client.lrange(self._log_key(check_tenant(tenant), subscription_id),
                                       0, limit - 1)  # fmt: skip
        return [Attempt.model_validate_json(value) for value in raw]

    async def _delivery_state_impl(self, tenant: str, delivery_id: str) -> Mapping[str, str] | None:
        raw = await self.client.hgetall(
            self.queue + self._member(check_tenant(tenant), delivery_id)
        )
        if not raw:
            return None
        state = {_text(k): _text(v) for k, v in raw.items()}
        state.pop("data", None)
        state.pop("token", None)
        return state


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def build(store: Any, settings: Any) -> RedisWebhookStore:
    """Webhooks in the session store's Redis, through its client."""
    return RedisWebhookStore(store.client, settings.webhooks, key_prefix=settings.memory.key_prefix)
