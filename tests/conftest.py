"""Shared fixtures. A real ``redis-server`` (private, on loopback) backs the store tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server for the whole test session (AOF on, data in a temp dir)."""
    from adapters.memory.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server):
    """The URL of the session's redis-server, its database emptied before the test."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return redis_server.url
