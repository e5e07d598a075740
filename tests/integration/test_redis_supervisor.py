"""The supervised private redis-server: killed, it comes back on its port with every write that
was acknowledged; restarts that fail back off, are logged (errors after ``error_after``) and go
on; ``stop()`` ends it at once, even in the middle of a backoff, and nothing is restarted."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import redis

from adapters.memory.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from adapters.memory.redis_supervisor import RedisSupervisor
from tests.support import processes
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
LOGGER = "adapters.memory.redis_supervisor"


@pytest.fixture
def supervised(tmp_path):
    """``supervised(**options)``: a started RedisSupervisor, stopped (and its pids ended) after."""
    started: list[tuple[RedisSupervisor, set[int]]] = []

    def start(**options: float) -> RedisSupervisor:
        supervisor = RedisSupervisor(EmbeddedRedis(tmp_path / "redis"), **options)
        started.append((supervisor, set()))
        supervisor.start()
        started[-1][1].add(supervisor.pid)
        return supervisor

    try:
        yield start
    finally:
        for supervisor, pids in started:
            pids.add(supervisor.pid)
            supervisor.stop()
            for pid in pids - {None}:
                processes.end(pid)


def test_a_killed_server_comes_back_on_its_port_with_every_acknowledged_write(supervised):
    supervisor = supervised()
    port, killed = supervisor.server.port, supervisor.pid
    client = redis.Redis(port=port)
    pipe = client.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(f"k{i}", i)
    assert all(pipe.execute())  # every one acknowledged
    os.kill(killed, signal.SIGKILL)  # at once: appendfsync always had them on disk already
    wait_for(lambda: supervisor.restarts == 1, what="the server to be started again")
    assert supervisor.server.port == port and supervisor.pid != killed
    assert not processes.alive(killed)
    values = redis.Redis(port=port).mget([f"k{i}" for i in range(5000)])
    assert values == [str(i).encode() for i in range(5000)]
    client.close()


def test_failed_restarts_back_off_are_logged_and_go_on(supervised, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    supervisor = supervised(first_backoff_s=0.02, max_backoff_s=0.1, error_after=3)
    server, tries = supervisor.server, []
    real_restart = server.restart

    def restart() -> EmbeddedRedis:
        tries.append(time.monotonic())
        if len(tries) <= 4:
            raise EmbeddedRedisError("cannot start (test)")
        return real_restart()

    monkeypatch.setattr(server, "restart", restart)
    os.kill(supervisor.pid, signal.SIGKILL)
    wait_for(lambda: supervisor.restarts == 1, what="the fifth try to bring it back")
    wait_for(lambda: "is back" in caplog.text, what="the log line of its return")
    levels = [r.levelname for r in caplog.records if r.name == LOGGER]
    # died; tries 1 and 2 failed (warnings), 3 and 4 failed (errors); back
    assert levels == ["WARNING", "WARNING", "WARNING", "ERROR", "ERROR", "WARNING"], caplog.text
    gaps = [later - earlier for earlier, later in zip(tries, tries[1:])]
    assert [round(supervisor.backoff_s(n), 2) for n in range(1, 5)] == [0.02, 0.04, 0.1, 0.1]
    assert all(gap >= supervisor.backoff_s(n) * 0.9 for n, gap in enumerate(gaps, 1)), gaps
    assert redis.Redis(port=server.port).ping()


def test_stop_in_the_middle_of_a_backoff_ends_at_once(supervised, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    supervisor = supervised(first_backoff_s=60, max_backoff_s=60)

    def restart() -> EmbeddedRedis:
        raise EmbeddedRedisError("cannot start (test)")

    monkeypatch.setattr(supervisor.server, "restart", restart)
    os.kill(supervisor.pid, signal.SIGKILL)
    wait_for(lambda: "try 1" in caplog.text, what="the first failed try")
    thread = supervisor._thread
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 2 and thread is not None and not thread.is_alive()


def test_stop_stops_it_for_good(supervised):
    supervisor = supervised()
    pid, thread = supervisor.pid, supervisor._thread
    supervisor.stop()
    assert not processes.alive(pid) and thread is not None and not thread.is_alive()
    assert supervisor.restarts == 0 and not supervisor.server.running
    with pytest.raises(EmbeddedRedisError, match="stopped"):
        supervisor.server.restart()
