"""The image's server without Docker (no engine here): the Dockerfile's CMD run as a real process
with the compose file's environment for the ``assistant`` service (its ``${...}`` filled as
docker/.env would), on a real redis-server; the Dockerfile's HEALTHCHECK command run against it;
keys required on its 0.0.0.0 bind, the static key from the environment let in, an admin key made
with ``assistant keys create`` as the README says (``docker compose exec assistant ...``), and the
protocol's AsyncAPI document served to it.

What differs from the container, and only that: the port (a free one), the data directory (a
temporary one), the scripted model (the image prepares SmolLM2 at build time) and a key prefix
of its own in the test session's Redis."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import websockets
import yaml

from tests.support import compose_file as cf
from tests.support import docker_files as df
from tests.support.processes import end, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DOCKERFILE = (df.ROOT / "docker" / "Dockerfile").read_text()
STATIC_KEY = "docker-test-client-key-0123456789"
#: What docker/.env would hold.
VARIABLES = {
    "ASSISTANT_AUTH__SECRET": "a-secret-for-the-test",
    "ASSISTANT_API_KEYS": f"acme:{STATIC_KEY}",
}


def final_stage(keyword: str) -> list[df.Instruction]:
    steps = df.instructions(DOCKERFILE)
    last = max(s.stage for s in steps)
    return [s for s in steps if s.stage == last and s.keyword == keyword]


def image_env(tmp_path, redis_url: str) -> dict[str, str]:
    """The container's environment: the image's ENV, then compose's, then the test's few."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    for step in final_stage("ENV"):
        env.update({k: v for k, v in df.env_of(step).items() if k != "PATH"})
    compose = yaml.safe_load((df.ROOT / "docker" / "compose.yaml").read_text())
    env.update(cf.environment(compose["services"]["assistant"], VARIABLES))
    assert env["ASSISTANT_API_KEYS"] == VARIABLES["ASSISTANT_API_KEYS"]
    env.update({
        "ASSISTANT_REDIS_URL": redis_url, "ASSISTANT_DATA_DIR": str(tmp_path),
        "ASSISTANT_LLM__ADAPTER": "scripted", "ASSISTANT_MEMORY__KEY_PREFIX": "docker-test",
    })  # fmt: skip
    return env


def health_probe(port: int) -> list[str]:
    """The HEALTHCHECK's command, on ``port``."""
    probe = df.exec_form(final_stage("HEALTHCHECK")[-1].args.split(" CMD ", 1)[-1])
    assert probe[0] == "python" and ":8000/" in probe[-1], probe
    return [sys.executable, *probe[1:-1], probe[-1].replace(":8000/", f":{port}/")]


@pytest.fixture(scope="module")
def served(redis_server, tmp_path_factory):
    """(port, environment) of the image's CMD, up: its own HEALTHCHECK passes."""
    tmp_path = tmp_path_factory.mktemp("image")
    env = image_env(tmp_path, redis_server.url)
    argv = df.exec_form(final_stage("CMD")[-1].args)
    assert argv[:2] == ["assistant", "serve"] and "0.0.0.0" in argv
    port = free_port()
    argv = [str(port) if word == "8000" else word for word in argv]
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", *argv[1:]], env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:

            def healthy() -> bool:
                assert proc.poll() is None, log_path.read_text()
                return subprocess.run(health_probe(port), capture_output=True).returncode == 0

            wait_for(
                healthy, timeout_s=90, what=lambda: f"the health check: {log_path.read_text()}"
            )
            yield port, env
        finally:
            end(proc.pid)


def test_the_health_check_passes_on_the_server_and_fails_where_none_listens(served):
    port, _ = served
    assert subprocess.run(health_probe(port), capture_output=True).returncode == 0
    assert subprocess.run(health_probe(free_port()), capture_output=True).returncode != 0
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"


async def test_keys_are_required_and_the_static_key_holds_a_conversation(served):
    port, _ = served
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    with pytest.raises(websockets.ConnectionClosed) as refused:
        async with websockets.connect(url) as ws:
            await ws.recv()
    assert refused.value.rcvd.code == 1008
    assert refused.value.rcvd.reason.startswith("missing_credentials")
    headers = {"Authorization": f"Bearer {STATIC_KEY}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        while (event := json.loads(await ws.recv()))["type"] != "response.done":
            assert event["type"] != "error", event
    assert event["response"]["status"] == "completed"


def test_an_admin_key_made_beside_it_reads_the_protocol_document(served):
    port, env = served
    made = subprocess.run(
        [sys.executable, "-m", "assistant", "keys", "create", "--tenant", "acme", "--scope", "admin"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    assert admin.startswith("sk_")
    address = f"http://127.0.0.1:{port}/v1/realtime/asyncapi.json"
    with contextlib.closing(httpx.Client()) as client:
        answer = client.get(address, headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 200
        assert answer.content == (df.ROOT / "docs" / "asyncapi.json").read_bytes()
        client_key = client.get(address, headers={"Authorization": f"Bearer {STATIC_KEY}"})
    assert client_key.status_code == 403
    assert client_key.json()["error"]["code"] == "insufficient_scope"
