"""``assistant serve --workers N``: N processes on one port, one socket each (SO_REUSEPORT), the
connections spread between them by the kernel; a dead worker is started again; SIGINT stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from adapters.memory.embedded_redis import free_port
from assistant.server.workers import balanced_workers_supported
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not balanced_workers_supported(), reason="needs SO_REUSEPORT (Linux)"),
]
ROOT = Path(__file__).resolve().parents[2]


def pid_app():  # the app factory the workers import: answers every request with its pid
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    return app


def _get(port: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.read())


def _answer(port: int) -> int | None:
    """The pid of the worker that answered, None when the connection failed (a worker not
    listening yet, or a dead worker's socket)."""
    try:
        return _get(port)
    except OSError:
        return None


def test_connections_spread_over_the_workers_and_a_dead_worker_comes_back():
    port = free_port()
    code = ("from assistant.server.workers import serve_balanced; serve_balanced("
            f"'tests.integration.test_workers:pid_app', '127.0.0.1', {port}, 2, 'warning')")  # fmt: skip
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        up: set[int | None] = set()

        def both_up() -> bool:
            up.add(_answer(port))
            return len(up - {None}) == 2

        wait_for(both_up, timeout_s=30, poll_s=0.05, what=lambda: f"two workers to answer: {up}")
        hits = Counter(_get(port) for _ in range(80))
        assert len(hits) == 2, hits
        assert min(hits.values()) >= 15, hits  # spread, not piled on one (binomial: ~1e-8)

        victim = next(iter(hits))
        os.kill(victim, signal.SIGKILL)
        seen: set[int | None] = set()

        def a_new_worker_answers() -> bool:
            seen.add(_answer(port))
            return bool(seen - set(hits) - {None})

        wait_for(a_new_worker_answers, timeout_s=30, poll_s=0.05,
                 what="a new worker to answer after one was killed")  # fmt: skip
    finally:
        supervisor.send_signal(signal.SIGINT)
        supervisor.wait(timeout=40)
    assert supervisor.returncode == 0
    with pytest.raises(OSError):
        _get(port)  # nothing listens any more: the workers are gone too
