"""Per-key limits, counted in the shared limiter so they hold across workers: requests per minute
(REST requests, WebSocket connections, ``response.create``), generated tokens per minute,
concurrent connections and concurrent generations. Each refusal is a ``RateLimitError`` with its
own code and, where waiting helps, ``retry_after_s``. Open mode (no key) is not limited.

Concurrent places are leases in the limiter, renewed for every place this process holds by one
timer, so the places of a worker that dies come back by themselves after ``LEASE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from assistant.auth.principal import Principal
from assistant.config import LimitsSettings
from assistant.errors import AssistantError, RateLimitError
from assistant.messages import new_id
from assistant.ports.limits import Limiter

log = logging.getLogger(__name__)

LEASE_S = 30.0  # a held place lapses this long after its holder stopped renewing it


class KeyLimits:
    def __init__(self, limiter: Limiter, settings: LimitsSettings) -> None:
        self.limiter = limiter
        self.settings = settings
        self._held: dict[tuple[str, str], set[str]] = {}  # (name, key) -> holders in this process
        self._renewer: asyncio.Task[None] | None = None

    async def request(self, principal: Principal) -> None:
        """One request (``rate_limited``)."""
        limit = self.settings.requests_per_minute
        retry = await self._rate(principal, "requests", limit)
        if retry is not None:
            raise RateLimitError(
                _refusal("requests", limit, retry), code="rate_limited", retry_after_s=retry
            )

    async def client_secret(self, principal: Principal) -> None:
        """A publishable key mints one client secret (``rate_limited``)."""
        limit = self.settings.client_secrets_per_minute
        retry = await self._rate(principal, "client_secrets", limit)
        if retry is not None:
            raise RateLimitError(
                _refusal("client secrets", limit, retry), code="rate_limited", retry_after_s=retry
            )

    async def before_generation(self, principal: Principal) -> None:
        """A response may start: the key has tokens left this minute (``token_rate_limited``);
        the probe counts as one token."""
        limit = self.settings.tokens_per_minute
        retry = await self._rate(principal, "tokens", limit)
        if retry is not None:
            raise RateLimitError(
                _refusal("tokens", limit, retry), code="token_rate_limited", retry_after_s=retry
            )

    async def count_tokens(self, principal: Principal, tokens: int) -> None:
        """Tokens a response generated; over the limit, the next response waits."""
        limit = self.settings.tokens_per_minute
        if principal.key_id is None or not limit or tokens <= 0:
            return
        with contextlib.suppress(AssistantError):  # counted best-effort: the reply is done
            await self.limiter.spend("tokens", principal.limit_key, limit, tokens)

    @contextlib.asynccontextmanager
    async def connection(self, principal: Principal) -> AsyncIterator[None]:
        """A WebSocket connection's place (``too_many_connections``)."""
        limit = self.settings.connections
        full = RateLimitError(
            f"the key has {limit} connections open already; close one first",
            code="too_many_connections",
        )
        async with self._place(principal, "connections", limit, full):
            yield

    @contextlib.asynccontextmanager
    async def generation(self, principal: Principal) -> AsyncIterator[None]:
        """A generating response's place (``too_many_generations``)."""
        limit = self.settings.generations
        full = RateLimitError(
            f"the key has {limit} responses generating already; wait for one to finish",
            code="too_many_generations",
        )
        async with self._place(principal, "generations", limit, full):
            yield

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    # -- internals ---------------------------------------------------------------------------------

    async def _rate(self, principal: Principal, name: str, limit: int) -> float | None:
        """One more of ``name`` counted; the seconds to wait when over ``limit`` per minute."""
        if principal.key_id is None or not limit:
            return None
        retry = await self.limiter.hit(name, principal.limit_key, limit, 1)
        return round(retry, 1) if retry is not None else None

    @contextlib.asynccontextmanager
    async def _place(
        self, principal: Principal, name: str, limit: int, full: RateLimitError
    ) -> AsyncIterator[None]:
        if principal.key_id is None or not limit:
            yield
            return
        key, holder = principal.limit_key, new_id("hold")
        if not await self.limiter.acquire(name, key, holder, limit, LEASE_S):
            raise full
        held = self._held.setdefault((name, key), set())
        held.add(holder)
        self._start_renewing()
        try:
            yield
        finally:
            held.discard(holder)
            if not held:
                self._held.pop((name, key), None)
            with contextlib.suppress(AssistantError):
                await self.limiter.release(name, key, holder)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(LEASE_S / 3)
            for (name, key), holders in list(self._held.items()):
                try:
                    await self.limiter.renew(name, key, list(holders), LEASE_S)
                except AssistantError as exc:
                    log.warning("limits: renewing %s places failed: %s", name, exc.code)


def _refusal(what: str, limit: int, retry_s: float) -> str:
    return f"the key's limit of {limit} {what} per minute is reached; retry in {retry_s:.0f} s"
