"""``ASSISTANT_REDIS_URL`` forms: one node, Sentinel, Cluster; what is refused and how it is said;
the parts of the store that need no server (which line a URL gets, the replica wait)."""

from __future__ import annotations

import time

import pytest

from adapters.memory.embedded_redis import free_port
from adapters.memory.redis import RedisSessionStore
from adapters.memory.redis_lines import ReplicaWait, open_lines
from adapters.memory.redis_pipe import is_write
from adapters.memory.redis_topology import parse_redis_url, redact
from assistant.errors import ConfigurationError, StoreError
from assistant.messages import SessionInfo


def test_a_single_node_url_is_kept_for_redis_py():
    for url, db in [("redis://localhost:6379/0", 0), ("rediss://:pw@cache.example:6380/3", 3),
                    ("unix:///run/redis.sock?db=2", 2), ("redis://localhost", 0)]:  # fmt: skip
        topology = parse_redis_url(url)
        assert (topology.kind, topology.url, topology.db) == ("single", url, db)


def test_sentinel_hosts_service_database_and_credentials():
    topology = parse_redis_url(
        "redis+sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
        "?sentinel_password=watch"
    )
    assert topology.kind == "sentinel"
    assert topology.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (topology.service_name, topology.db) == ("mymaster", 2)
    assert (topology.username, topology.password) == ("app", "s3cret")
    assert (topology.sentinel_username, topology.sentinel_password) == (None, "watch")
    assert not topology.tls and parse_redis_url("rediss+sentinel://h/m").tls
    assert parse_redis_url("redis+sentinel://h:26379/m").db == 0


def test_a_cluster_is_a_seed_list():
    topology = parse_redis_url("redis+cluster://:pw@127.0.0.1:7000, 127.0.0.1:7001")
    assert topology.kind == "cluster" and topology.password == "pw"
    assert topology.nodes == (("127.0.0.1", 7000), ("127.0.0.1", 7001))
    assert parse_redis_url("redis+cluster://node/").nodes == (("node", 6379),)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "unknown scheme (none)"),
        ("localhost:6379", "unknown scheme (none)"),
        ("memcached://h:11211", "unknown scheme memcached://"),
        ("redis://h:port", "Port could not be cast"),
        ("redis://h/zero", "the database 'zero' is not a number"),
        ("redis+sentinel://h1:26379,h2:26379", "no service name"),
        ("redis+sentinel://h/m/x", "the database 'x' is not a number"),
        ("redis+sentinel://h/m/1/2", "/service_name or /service_name/db"),
        ("redis+sentinel://h1,,h2/m", "an empty host"),
        ("redis+sentinel://h:99999/m", "bad host:port"),
        ("redis+sentinel://h/m?socket_timeout=1", "unknown option 'socket_timeout'"),
        ("redis+cluster://h:7000/0", "a cluster has no databases"),
        ("redis+cluster://h:7000?sentinel_password=x", "unknown option 'sentinel_password'"),
        ("redis+cluster://h:7000#x", "fragment"),
    ],
)
def test_bad_urls_say_what_is_wrong_and_the_forms(url, why):
    with pytest.raises(ConfigurationError, match="the forms are redis://") as caught:
        parse_redis_url(url)
    assert why in str(caught.value)
    assert caught.value.code == "configuration_error"


def test_passwords_never_reach_an_error_message():
    with pytest.raises(ConfigurationError) as caught:
        parse_redis_url("redis+sentinel://app:hunter2@h/m?sentinel_password=hunter3&bad=1")
    assert "hunter" not in str(caught.value) and ":***@" in str(caught.value)
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("redis://user@h") == "redis://user@h"


def test_only_sentinel_takes_a_replica_wait():
    assert open_lines(parse_redis_url("redis://h")) is None  # the store's own pipe and pool
    for url in ("redis://h", "redis+cluster://h:7000"):
        with pytest.raises(ConfigurationError, match="wait_replicas"):
            open_lines(parse_redis_url(url), wait_replicas=1)
    lines = open_lines(parse_redis_url("redis+sentinel://h/m"))  # nothing connects yet
    assert lines is not None and lines.wait is not None and lines.wait.replicas == 1
    assert open_lines(parse_redis_url("redis+sentinel://h/m"), wait_replicas=0).wait is None


def test_a_replica_shortfall_pauses_the_wait_for_a_while():
    wait = ReplicaWait(1, 100, pause_s=60)
    assert wait.due() and wait.command() == ("WAIT", 1, 100)
    wait.check(1)
    assert wait.due() and wait.shortfalls == 0
    wait.check(0)
    assert not wait.due() and wait.shortfalls == 1


def test_what_counts_as_a_write():
    assert is_write([("EVALSHA", "sha", 1, "k")]) and is_write([("SET", "k", "v")])
    assert is_write([("DEL", "a"), ("HSET", "a", "f", "v"), ("PEXPIRE", "a", 1)])
    assert not is_write([("HGETALL", "a"), ("LRANGE", "b", 0, -1), ("PEXPIRE", "a", 1)])
    assert not is_write([("GETEX", "k", "PX", 1)]) and not is_write([("PING",)])


@pytest.mark.parametrize("scheme", ["redis+sentinel", "redis+cluster"])
async def test_nothing_listening_is_store_unavailable_once_the_retry_time_is_up(scheme):
    url = f"{scheme}://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    store = RedisSessionStore.from_url(url + ("/mymaster" if "sentinel" in scheme else ""),
                                       retry_s=0.3)  # fmt: skip
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            await store.create(SessionInfo(id="s1"))
        assert caught.value.code == "store_unavailable"
        assert time.monotonic() - started < 3  # one try per dead Sentinel, not redis-py's retries
        assert await store.ping() is False
        assert store.for_tenant("acme").pipe is store.pipe  # views share the lines
    finally:
        await store.aclose()
