"""The request-header deadline (``ASSISTANT_SERVER__HEADER_TIMEOUT_S``) on a real ``assistant
serve`` process, one worker and two: a client that sends part of a request and stops (slowloris)
is answered 408 and disconnected once the deadline passes, one that sends nothing is disconnected,
and meanwhile a normal request on another connection is answered and a WebSocket opened before
goes on past the deadline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.processes import end, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DEADLINE_S = 1.5
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # the blank line that ends the headers never comes


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def server(request, redis_url, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env.update(ASSISTANT_REDIS_URL=redis_url, ASSISTANT_LLM__ADAPTER="scripted",
               ASSISTANT_SERVER__HEADER_TIMEOUT_S=str(DEADLINE_S))  # fmt: skip
    log = open(tmp_path / "serve.log", "w")
    command = [sys.executable, "-m", "assistant.cli", "serve", "--port", str(port),
               "--data-dir", str(tmp_path), "--workers", str(request.param)]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        try:
            return httpx.get(base + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout_s=60, poll_s=0.2, what="the server to answer /healthz")
        if request.param == 2:  # both workers up (each answers with its pid)
            pids = set()
            wait_for(lambda: pids.add(httpx.get(base + "/healthz").json()["worker"])
                     or len(pids) == 2, timeout_s=60, what="both workers")  # fmt: skip
        yield port
    finally:
        end(proc.pid)
        log.close()


def read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed (monotonic)."""
    sock.settimeout(timeout_s)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received, time.monotonic()


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a ``content-length`` body) from a keep-alive connection."""
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        body += sock.recv(4096)
    return received


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would be a surprise; b"" is a close
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def test_a_client_slow_to_send_its_headers_is_cut_off_while_others_are_served(server):
    port = server
    with connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        slow = socket.create_connection(("127.0.0.1", port))
        silent = socket.create_connection(("127.0.0.1", port))
        slow.sendall(PARTIAL)
        started = time.monotonic()
        try:
            # Meanwhile: new connections are served while the slow one is still open.
            for _ in range(3):
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                assert answer.status_code == 200
            assert still_open(slow) and time.monotonic() - started < DEADLINE_S
            received, closed_at = read_until_closed(slow, timeout_s=DEADLINE_S + 10)
            silent_received, _ = read_until_closed(silent, timeout_s=DEADLINE_S + 10)
        finally:
            slow.close()
            silent.close()
        took = closed_at - started
        assert DEADLINE_S - 0.1 <= took < DEADLINE_S + 2, took
        assert received.startswith(b"HTTP/1.1 408 ")
        assert silent_received == b""  # nothing sent, nothing answered: just closed
        # The WebSocket, open since before the slow client came, goes on past the deadline.
        ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Be brief."}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "session.updated"


def test_a_keep_alive_connections_next_request_has_the_deadline_too(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(PARTIAL)  # well within the keep-alive time (5 s)
        started = time.monotonic()
        received, closed_at = read_until_closed(sock, timeout_s=DEADLINE_S + 10)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert DEADLINE_S - 0.1 <= closed_at - started < DEADLINE_S + 2
