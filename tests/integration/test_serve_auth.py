"""``assistant serve`` and auth as an operator meets them: open mode only on loopback (or with
``--insecure``), keys required elsewhere, and logs without session ids or query strings."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import websockets

from tests.support.processes import end, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    return {**base, "ASSISTANT_LLM__ADAPTER": "scripted", **extra}


@contextlib.contextmanager
def serving(tmp_path, *args: str, **extra: str):
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--port", str(port), "--data-dir",
             str(tmp_path), *args], env=env(**extra), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            def up() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                assert proc.poll() is None, log_path.read_text()
                return False

            wait_for(up, timeout_s=60, what="the server to answer")
            yield port, log_path
        finally:
            end(proc.pid)


def test_open_mode_on_a_non_loopback_address_refuses_to_start(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "serve", "--host", "0.0.0.0", "--port",
         str(free_port()), "--data-dir", str(tmp_path)],
        env=env(ASSISTANT_AUTH__OPEN="true"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--insecure" in done.stderr and "open mode" in done.stderr


async def test_a_non_loopback_bind_requires_keys_and_insecure_opens_it(tmp_path):
    with serving(tmp_path / "closed", "--host", "0.0.0.0") as (port, _):
        with pytest.raises(websockets.ConnectionClosed) as refused:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
                await ws.recv()
        assert refused.value.rcvd.code == 1008
        assert refused.value.rcvd.reason.startswith("missing_credentials")
    with serving(tmp_path / "open", "--host", "0.0.0.0", "--insecure") as (port, _):
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"


async def test_logs_hold_no_session_id_nor_query_string(tmp_path):
    with serving(tmp_path, "--log-level", "info",
                 ASSISTANT_SERVER__LOG_FORMAT="json") as (port, log_path):  # fmt: skip
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            session_id = json.loads(await ws.recv())["session"]["id"]
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/v1/realtime?session_id={session_id}"
        ) as ws:
            assert json.loads(await ws.recv())["session"]["id"] == session_id
        httpx.get(f"http://127.0.0.1:{port}/v1/sessions/{session_id}/messages")

        def logged() -> bool:
            return "session opened" in log_path.read_text()

        wait_for(logged, timeout_s=10, what="the server to log the sessions")
    text = log_path.read_text()
    assert session_id not in text and "session_id=" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    opened = [line for line in lines if "session opened" in line["message"]]
    assert len(opened) == 2 and opened[0]["session_ref"] == opened[1]["session_ref"] != "-"
    assert all(line["request_id"] != "-" for line in opened)


def test_keys_are_created_listed_and_revoked_from_the_command_line(tmp_path, redis_server):
    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "assistant", "keys", "--data-dir", str(tmp_path), *args],
            env=env(ASSISTANT_REDIS_URL=redis_server.url), capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    made = keys("create", "--tenant", "acme", "--scope", "admin", "--name", "ops")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("sk_") and "not shown again" in made.stderr
    page = keys("create", "--tenant", "acme", "--publishable", "--origin", "https://shop.example")
    assert page.stdout.strip().startswith("pk_") and "identity secret" in page.stderr
    bad = keys("create", "--tenant", "acme", "--publishable")
    assert bad.returncode == 2 and "origins" in bad.stderr
    listed = [json.loads(line) for line in keys("list", "--tenant", "acme", "--json").stdout.splitlines()]
    assert {k["kind"] for k in listed} == {"secret", "publishable"}
    assert key not in json.dumps(listed) and all("digest" not in k for k in listed)
    key_id = key.split("_")[1]
    assert keys("revoke", key_id).returncode == 0
    after = {k["id"]: k for k in map(json.loads, keys("list", "--json").stdout.splitlines())}
    assert after[key_id]["revoked_at"] and after[page.stdout.strip().split("_")[1]]["revoked_at"] is None
    assert keys("revoke", "0" * 16).returncode == 2
