"""What EmbeddedRedis decides without starting a server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from adapters.memory import embedded_redis
from adapters.memory.embedded_redis import EmbeddedRedis, EmbeddedRedisError, live_redis_pid


def test_missing_binary_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    with pytest.raises(EmbeddedRedisError, match="apt-get install redis-server") as caught:
        embedded_redis.find_redis_server((str(tmp_path),))
    assert "ASSISTANT_REDIS_URL" in str(caught.value)
    monkeypatch.setattr(embedded_redis, "_SEARCH_DIRS", (str(tmp_path),))
    with pytest.raises(EmbeddedRedisError, match="redis-server not found"):
        EmbeddedRedis(tmp_path / "data").start()  # fails before creating anything
    assert not (tmp_path / "data").exists()


def test_binary_found_in_fallback_dirs(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert embedded_redis.find_redis_server(("/nonexistent", str(tmp_path))) == str(binary)


def test_stale_pidfiles_are_not_live(tmp_path):
    pidfile = tmp_path / "redis.pid"
    assert live_redis_pid(pidfile) is None  # absent
    pidfile.write_text("garbage")
    assert live_redis_pid(pidfile) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(str(dead.pid))
    assert live_redis_pid(pidfile) is None  # the process is gone
    pidfile.write_text(str(os.getpid()))
    if os.path.exists(f"/proc/{os.getpid()}/cmdline"):
        assert live_redis_pid(pidfile) is None  # alive, but not a redis-server


def test_url_before_start_fails(tmp_path):
    server = EmbeddedRedis(tmp_path)
    assert server.pid is None and not server.running
    with pytest.raises(EmbeddedRedisError):
        server.url
    server.stop()  # stopping what never started is a no-op


def test_restart_backoff_doubles_up_to_the_cap_and_stays_there_after_error_after(tmp_path):
    from adapters.memory.redis_supervisor import RedisSupervisor

    supervisor = RedisSupervisor(EmbeddedRedis(tmp_path), first_backoff_s=0.1, max_backoff_s=1.0,
                                 error_after=6)  # fmt: skip
    waits = [supervisor.backoff_s(failures) for failures in range(9)]
    assert waits == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert RedisSupervisor(EmbeddedRedis(tmp_path), error_after=3).backoff_s(3) == 5.0


def test_appendfsync_is_checked(tmp_path):
    assert EmbeddedRedis(tmp_path).appendfsync == "always"  # acknowledged = on disk
    with pytest.raises(EmbeddedRedisError, match="appendfsync"):
        EmbeddedRedis(tmp_path, appendfsync="no")
