"""The session store's shared, automatically pipelined Redis connection, against a real redis-server
(and, for a server that never answers, a socket that accepts and stays silent)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.memory.embedded_redis import find_redis_server, free_port
from adapters.memory.redis_lines import ReplicaWait
from adapters.memory.redis_pipe import RedisPipe
from tests.support.redis_topology import Processes, free_ports, info
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration


@pytest.fixture
async def pipe(redis_url):
    pipe = RedisPipe.from_url(redis_url)
    yield pipe
    await pipe.aclose()


async def test_concurrent_requests_share_writes_and_get_their_own_replies(pipe):
    await pipe.call("PING")
    before = pipe.writes
    replies = await asyncio.gather(*(pipe.call("ECHO", f"value-{i}") for i in range(500)))
    assert replies == [f"value-{i}" for i in range(500)]
    assert pipe.writes - before == 1  # issued in one loop iteration: one write


async def test_an_error_reply_fails_only_its_request(pipe):
    await pipe.call("SET", "k:str", "text")
    results = await asyncio.gather(
        pipe.call("GET", "k:str"), pipe.call("LPUSH", "k:str", "x"), pipe.call("GET", "k:str"),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] == results[2] == "text"
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert await pipe.call("PING") == "PONG"


async def test_a_script_is_loaded_when_redis_does_not_know_it(pipe):
    script = "return {KEYS[1], ARGV[1], 7}"
    sha = hashlib.sha1(script.encode()).hexdigest()
    await pipe.call("SCRIPT", "FLUSH")
    assert await pipe.evalsha(sha, script, ["a"], ["b"]) == ["a", "b", 7]
    assert await pipe.call("SCRIPT", "EXISTS", sha) == [1]


async def test_transaction_returns_the_replies_of_exec(pipe):
    replies = await pipe.transaction([("DEL", "k:list"), ("RPUSH", "k:list", "a", "b"),
                                      ("LRANGE", "k:list", 0, -1)])  # fmt: skip
    assert replies[1:] == [2, ["a", "b"]]
    with pytest.raises(ResponseError):
        await pipe.transaction([("NOSUCHCOMMAND",)])
    assert await pipe.call("PING") == "PONG"


async def test_a_killed_connection_is_replaced_and_the_request_sent_again(pipe, redis_url):
    await pipe.call("CLIENT", "SETNAME", "the-pipe")
    before = pipe._protocol
    admin = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        await wait_for_async(lambda: pipe._protocol is not before,
                             what="the pipe to drop the killed connection")  # fmt: skip
        assert await pipe.call("ECHO", "after") == "after"
        assert pipe._protocol is not None and pipe._protocol is not before
    finally:
        await admin.aclose()


async def test_url_credentials_and_database_are_used(redis_url):
    admin = aioredis.from_url(redis_url, decode_responses=True)
    await admin.execute_command("ACL", "SETUSER", "piper", "on", ">s3cret", "~*", "+@all")
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
    pipe = RedisPipe.from_url(f"redis://piper:s3cret@{host_port}/3")
    try:
        await pipe.call("SET", "k:db3", "here")
        assert await pipe.call("ACL", "WHOAMI") == "piper"
        db3 = aioredis.from_url(f"redis://{host_port}/3", decode_responses=True)
        assert await db3.get("k:db3") == "here"
        await db3.delete("k:db3")
        await db3.aclose()
        wrong = RedisPipe.from_url(f"redis://piper:nope@{host_port}/0")
        with pytest.raises(ResponseError):
            await wrong.call("PING")
        await wrong.aclose()
    finally:
        await pipe.aclose()
        await admin.execute_command("ACL", "DELUSER", "piper")
        await admin.aclose()


async def test_nothing_listening_is_a_connection_error():
    pipe = RedisPipe.from_url(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=2)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await pipe.call("PING")
    await pipe.aclose()


async def test_a_server_that_never_answers_times_out_and_frees_its_waiters():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads until the client goes away, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = RedisPipe.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=1)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(pipe.call("PING"), pipe.call("PING"), return_exceptions=True), 10
        )
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
    finally:
        await pipe.aclose()
        server.close()
        await server.wait_closed()


async def test_a_replica_wait_ends_each_write_batch_and_answers_its_writes_after_it(redis_url):
    wait = ReplicaWait(1, 50, pause_s=60)  # this server has no replica: every WAIT falls short
    pipe = RedisPipe.from_url(redis_url, wait=wait)
    try:
        assert await pipe.call("GET", "nothing") is None and wait.due()  # a read: no WAIT
        started = time.monotonic()
        replies = await asyncio.gather(*[pipe.call("SET", f"k{i}", "v") for i in range(20)])
        assert replies == ["OK"] * 20 and time.monotonic() - started >= 0.05
        assert wait.shortfalls == 1 and pipe.writes == 2  # one batch, one WAIT for all 20
        assert await pipe.call("SET", "k", "v") == "OK" and wait.shortfalls == 1  # paused now
    finally:
        await pipe.aclose()


async def test_a_pipe_that_locates_its_server_leaves_one_that_became_a_replica(redis_url, tmp_path):
    """A READONLY reply (a former primary, now a replica) drops the connection; the request goes
    again to where ``locate`` says the primary is now."""
    primary = parse_url(redis_url)
    replica_port, nowhere = free_ports(2)
    processes = Processes(tmp_path)
    found = [("127.0.0.1", replica_port), (primary["host"], primary["port"])]

    async def locate() -> tuple[str, int]:
        return found.pop(0)

    args = [find_redis_server(), "--port", str(replica_port), "--save", "", "--dir", str(tmp_path),
            "--replicaof", "127.0.0.1", str(nowhere)]  # fmt: skip
    pipe = RedisPipe(locate=locate)
    try:
        processes.start("replica", args)
        await wait_for_async(lambda: info(replica_port, "server"), what="the replica up")
        assert await pipe.call("SET", "moved", "1") == "OK"
        assert found == [] and pipe.address["port"] == primary["port"]
    finally:
        await pipe.aclose()
        processes.stop()
