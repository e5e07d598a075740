"""What a client hears of a failure names the part that failed, not its internals: no Redis
host:port, no adapter exception text (that goes to the log, and stays on ``__cause__``)."""

from __future__ import annotations

import logging

import pytest

from assistant.errors import StoreError
from tests.support.processes import free_port


async def test_an_unreachable_redis_is_named_without_its_address(caplog):
    from adapters.memory.redis import RedisSessionStore

    port = free_port()  # nothing listens there
    store = RedisSessionStore.from_url(f"redis://127.0.0.1:{port}/0", pool_timeout_s=1)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as failed:
            await store.load("sess_x")
    finally:
        await store.aclose()
    assert failed.value.code == "store_unavailable"
    assert str(port) not in failed.value.message and "127.0.0.1" not in failed.value.message
    assert str(port) in caplog.text  # the operator still learns where
