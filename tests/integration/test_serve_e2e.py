"""``assistant serve`` as a user starts it: no configuration but a data directory, so the server runs
its own private redis-server and the real SmolLM2 model. Then a restart keeps the history."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import websockets

from assistant.config import Settings
from tests.support.processes import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration




@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, prepared_models_dir):
    path = tmp_path_factory.mktemp("serve-data")
    # The prepared models are shared (538 MB); the server's Redis data is private to this test.
    (path / "models").symlink_to(prepared_models_dir, target_is_directory=True)
    return path


@pytest.fixture(scope="module")
def prepared_models_dir():
    from assistant.registry import prepare_models

    settings = Settings()
    prepare_models(settings, progress=False)
    return settings.models_dir


class Server:
    def __init__(self, data_dir, port):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env["ASSISTANT_LLM__MAX_NEW_TOKENS"] = "24"
        self.port = port
        self.log = open(data_dir / f"serve-{port}-{time.time_ns()}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.wait_healthy()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path):
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return json.loads(response.read())

    def log_tail(self) -> str:
        return open(self.log.name).read()[-3000:]

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log_tail()
        try:
            return self.get("/healthz")["status"] == "ok"
        except OSError:  # not listening yet
            return False

    def wait_healthy(self, timeout=180):
        wait_for(self.healthy, timeout_s=timeout, poll_s=0.3,
                 what=lambda: "the server to become healthy:\n" + self.log_tail())  # fmt: skip

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=60) == 0, self.log_tail()
        self.log.close()


async def turn(ws, text):
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 120))
        events.append(event)
        if event["type"] == "response.done":
            return events


async def test_serve_streams_resumes_and_survives_a_restart(data_dir):
    port = free_port()
    server = Server(data_dir, port)
    try:
        ws_url = f"ws://127.0.0.1:{port}/v1/realtime"
        async with websockets.connect(ws_url) as ws:
            session_id = json.loads(await ws.recv())["session"]["id"]
            events = await turn(ws, "What is the capital of France?")
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert len(deltas) >= 2
        done = events[-1]["response"]
        assert done["status"] in ("completed", "incomplete")
        reply = done["output"][0]["content"][0]["text"]
        assert reply == "".join(deltas) and "Paris" in reply

        async with websockets.connect(f"{ws_url}?session_id={session_id}") as ws:
            assert json.loads(await ws.recv())["session"]["id"] == session_id
            events = await turn(ws, "And of Germany?")
        assert events[-1]["response"]["status"] in ("completed", "incomplete")
        before = server.get(f"/v1/sessions/{session_id}/messages")["data"]
        assert [m["role"] for m in before] == ["user", "assistant", "user", "assistant"]
    finally:
        server.stop()

    redis_port_file = data_dir / "redis"
    assert redis_port_file.is_dir()  # the private Redis kept its data under the data dir

    server = Server(data_dir, free_port())
    try:
        after = server.get(f"/v1/sessions/{session_id}/messages")["data"]
    finally:
        server.stop()
    assert [(m["role"], m["content"]) for m in after] == [(m["role"], m["content"]) for m in before]
