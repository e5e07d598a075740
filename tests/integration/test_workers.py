"""``assistant serve --workers N``: N processes on one port, one socket each (SO_REUSEPORT), the
connections spread between them by the kernel; a dead worker is started again; SIGINT stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from adapters.memory.embedded_redis import free_port
from assistant.server.workers import balanced_workers_supported

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


def _wait_for(port: int, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            _get(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_connections_spread_over_the_workers_and_a_dead_worker_comes_back():
    port = free_port()
    code = ("from assistant.server.workers import serve_balanced; serve_balanced("
            f"'tests.integration.test_workers:pid_app', '127.0.0.1', {port}, 2, 'warning')")  # fmt: skip
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        _wait_for(port)
        time.sleep(1.0)  # both workers up
        hits = Counter(_get(port) for _ in range(80))
        assert len(hits) == 2, hits
        assert min(hits.values()) >= 15, hits  # spread, not piled on one (binomial: ~1e-8)

        victim = next(iter(hits))
        os.kill(victim, signal.SIGKILL)
        deadline, seen = time.monotonic() + 30, set()
        while time.monotonic() < deadline and len(seen - set(hits)) == 0:
            try:
                seen.add(_get(port))
            except OSError:  # a connection that landed on the dead worker's socket
                time.sleep(0.1)
        assert seen - set(hits), "no new worker answered after one was killed"
    finally:
        supervisor.send_signal(signal.SIGINT)
        supervisor.wait(timeout=40)
    assert supervisor.returncode == 0
    with pytest.raises(OSError):
        _get(port)  # nothing listens any more: the workers are gone too
