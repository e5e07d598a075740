"""The private redis-server: an orphan left by a killed server is taken over, data intact; a live
owner's server is never touched."""

import subprocess

import pytest
import redis

from adapters.memory.embedded_redis import OWNERFILE, EmbeddedRedis, EmbeddedRedisError

pytestmark = pytest.mark.integration


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_orphan_of_a_dead_owner_is_stopped_and_its_data_kept(tmp_path):
    first = EmbeddedRedis(tmp_path).start()
    try:
        redis.Redis.from_url(first.url).set("kept", "yes")
        (tmp_path / OWNERFILE).write_text(str(dead_pid()))  # as if its server had been SIGKILLed
        second = EmbeddedRedis(tmp_path).start()
        try:
            assert first._proc.wait(timeout=15) == 0  # the orphan shut down cleanly
            assert redis.Redis.from_url(second.url).get("kept") == b"yes"
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_server_whose_owner_lives_is_not_touched(tmp_path):
    first = EmbeddedRedis(tmp_path).start()
    owner = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / OWNERFILE).write_text(str(owner.pid))
        with pytest.raises(EmbeddedRedisError, match="already runs"):
            EmbeddedRedis(tmp_path).start()
        assert redis.Redis.from_url(first.url).ping()
    finally:
        owner.kill()
        first.stop()
