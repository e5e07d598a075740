"""``assistant serve`` and its private redis-server over their lifetime, as real processes: a
redis-server killed with SIGKILL comes back by itself and the conversation goes on with nothing
acknowledged lost; SIGTERM and SIGINT stop the server, its workers and its redis-server; a
SIGKILLed server leaves nothing behind and the next one on the same data directory starts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from adapters.memory.embedded_redis import PIDFILE, free_port
from assistant.server.workers import balanced_workers_supported
from tests.support import processes
from tests.support.waiting import wait_for, wait_for_async

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not balanced_workers_supported(), reason="Linux: /proc, SO_REUSEPORT"),
]
ROOT = Path(__file__).resolve().parents[2]


class Serve:
    """One ``assistant serve`` (scripted model: no weights load) on a free port."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env["ASSISTANT_LLM__ADAPTER"] = "scripted"
        self.data_dir, self.workers, self.port = data_dir, workers, free_port()
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self.seen: set[int] = set()  # every redis-server and worker pid seen, ended at close()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "assistant", "serve", "--port", str(self.port),
                 "--data-dir", str(data_dir), "--workers", str(workers)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log_text()[-4000:]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log_tail()
        try:
            return self.get("/healthz")["status"] == "ok"
        except OSError:  # not listening yet, or 503 while Redis is away
            return False

    def redis_pid(self) -> int | None:
        pid = processes.pid_in(self.data_dir / "redis" / PIDFILE)
        if pid is not None:
            self.seen.add(pid)
        return pid

    def worker_pids(self) -> list[int]:
        pids = [pid for pid in processes.children(self.proc.pid)
                if "multiprocessing.spawn" in processes.cmdline(pid)]  # fmt: skip
        self.seen.update(pids)
        return pids

    def wait_up(self) -> Serve:
        """Healthy, its redis-server's pid known, and every worker started."""
        wait_for(lambda: self.healthy() and self.redis_pid()
                 and len(self.worker_pids()) == (self.workers if self.workers > 1 else 0),
                 what=lambda: "the server to be up:\n" + self.log_tail())  # fmt: skip
        return self

    def close(self) -> None:
        """Stop it (gracefully, else SIGKILL) and end every process it was seen to start."""
        if self.proc.poll() is None:
            self.seen.update(processes.children(self.proc.pid))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.seen:
            processes.end(pid)


@pytest.fixture
def serve(tmp_path):
    """``serve(workers=1)`` starts one and waits until it is up; all are stopped afterwards."""
    started: list[Serve] = []

    def start(workers: int = 1) -> Serve:
        started.append(Serve(tmp_path / "data", workers))
        return started[-1].wait_up()

    try:
        yield start
    finally:
        for server in started:
            server.close()


async def turn(ws, text: str) -> list[dict]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    events = []
    while not events or events[-1]["type"] != "response.done":
        events.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    errors = [event for event in events if event["type"] == "error"]
    assert not errors, errors
    return events


def acknowledged(events: list[dict]) -> list[str]:
    """The ids of the items the server said it stored: the user's, then the reply."""
    done = events[-1]["response"]
    assert done["status"] == "completed", done
    created = [e["item"]["id"] for e in events if e["type"] == "conversation.item.created"]
    return created[:1] + [item["id"] for item in done["output"]]


async def test_a_killed_redis_comes_back_and_the_conversation_goes_on(serve):
    server = serve()
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/realtime") as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
        before = acknowledged(await turn(ws, "first words"))
        killed = server.redis_pid()
        os.kill(killed, signal.SIGKILL)
        await wait_for_async(lambda: "redis-server is back" in server.log_text(),
                             what=lambda: "the redis-server to be back:\n" + server.log_tail())  # fmt: skip
        assert server.redis_pid() not in (None, killed)
        assert "exited with code -9" in server.log_text()
        await wait_for_async(server.healthy, what="the store to answer again")
        after = acknowledged(await turn(ws, "second words"))  # the same connection goes on
    assert not processes.alive(killed)
    stored = server.get(f"/v1/sessions/{session_id}/messages")["data"]
    assert [m["id"] for m in stored] == before + after
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["content"][0]["text"] == "first words"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_serve_its_workers_and_its_redis(serve, signum, workers):
    server = serve(workers)
    redis_pid, worker_pids = server.redis_pid(), server.worker_pids()
    sent = time.monotonic()
    server.proc.send_signal(signum)
    assert server.proc.wait(30) == 0, server.log_tail()
    took_s = time.monotonic() - sent
    assert not processes.alive(redis_pid), f"redis-server {redis_pid} left behind"
    assert not [pid for pid in worker_pids if processes.alive(pid)], "a worker left behind"
    assert took_s < 15, took_s


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_sigkilled_serve_leaves_nothing_and_the_next_one_starts(serve, workers):
    first = serve(workers)
    async with websockets.connect(f"ws://127.0.0.1:{first.port}/v1/realtime") as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
        kept = acknowledged(await turn(ws, "kept"))
    left = [first.redis_pid(), *first.worker_pids()]
    first.proc.kill()
    first.proc.wait()
    # Linux tells them their parent died (PR_SET_PDEATHSIG): they stop by themselves.
    await wait_for_async(lambda: not [pid for pid in left if processes.alive(pid)],
                         what=f"the redis-server and workers {left} to end")  # fmt: skip
    second = serve(workers)  # the same data directory
    stored = second.get(f"/v1/sessions/{session_id}/messages")["data"]
    assert [m["id"] for m in stored] == kept
