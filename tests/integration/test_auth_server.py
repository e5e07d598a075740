"""Auth on real server processes (``assistant serve --workers 2``) over a real Redis: another
tenant's session is refused on every route, and each per-key limit is answered with its code
whichever worker a request reaches (the counts are in Redis)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import websockets

from adapters.memory.redis_keys import RedisKeyStore
from assistant.server.auth_routes import make_key
from tests.support.processes import end, free_port
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

SECRET = "test-server-secret-0123456789abcdef"
SHOP = "https://shop.example"


@contextlib.contextmanager
def serve(tmp_path, redis_url: str, **env_extra: str):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env.update({
        "ASSISTANT_LLM__ADAPTER": "scripted", "ASSISTANT_LLM__MODEL": "a short scripted reply",
        "ASSISTANT_REDIS_URL": redis_url, "ASSISTANT_AUTH__OPEN": "false",
        "ASSISTANT_AUTH__SECRET": SECRET, **env_extra,
    })  # fmt: skip
    log = open(tmp_path / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "serve", "--port", str(port), "--workers", "2",
         "--data-dir", str(tmp_path), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        pids: set[int] = set()

        def both_workers_up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                with httpx.Client() as client:  # a fresh connection: the kernel picks a worker
                    pids.add(client.get(f"{base}/healthz").json()["worker"])
            return len(pids) == 2

        wait_for(both_workers_up, timeout_s=60, what="both workers to answer")
        yield port
    finally:
        end(proc.pid)
        log.close()


async def new_key(redis_url: str, tenant: str, **kw) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        kind = kw.pop("kind", "secret")
        _, key = await make_key(
            RedisKeyStore(client), SECRET.encode(), tenant, kind,
            tuple(kw.pop("scopes", ("client",))), tuple(kw.pop("origins", ())), "",
        )  # fmt: skip
    finally:
        await client.aclose()
    return key


async def ws_session(port: int, key: str, query: str = "") -> tuple[str, dict]:
    """Open the realtime socket with ``key``; (session id or "", the first event)."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/v1/realtime{query}",
        additional_headers={"Authorization": f"Bearer {key}"},
    ) as ws:
        first = json.loads(await ws.recv())
        if first["type"] == "session.created":
            await ws.send('{"type": "conversation.item.create", "item": {"type": "message", '
                          '"role": "user", "content": [{"type": "input_text", "text": "hi"}]}}')
            await ws.recv()
            return first["session"]["id"], first
        return "", first


async def test_another_tenants_session_is_refused_on_every_route(tmp_path, redis_url):
    acme = await new_key(redis_url, "acme")
    globex = await new_key(redis_url, "globex", scopes=("admin", "agent", "client"))
    with serve(tmp_path, redis_url) as port:
        session_id, _ = await ws_session(port, acme)
        assert session_id
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            mine = await http.get(f"/v1/sessions/{session_id}/messages",
                                  headers={"Authorization": f"Bearer {acme}"})  # fmt: skip
            assert mine.status_code == 200 and len(mine.json()["data"]) == 1
            theirs = await http.get(f"/v1/sessions/{session_id}/messages",
                                    headers={"Authorization": f"Bearer {globex}"})  # fmt: skip
            assert theirs.status_code == 404
            assert theirs.json()["error"]["code"] == "session_not_found"
            minted = await http.post("/v1/realtime/client_secrets", json={"session_id": session_id},
                                     headers={"Authorization": f"Bearer {globex}"})  # fmt: skip
            assert minted.status_code == 404
            none = await http.get(f"/v1/sessions/{session_id}/messages")
            assert none.status_code == 401
        _, refused = await ws_session(port, globex, f"?session_id={session_id}")
        assert refused["type"] == "error" and refused["error"]["code"] == "session_not_found"


async def test_each_limit_is_answered_with_its_code_across_two_workers(tmp_path, redis_url):
    key = await new_key(redis_url, "acme")
    limits = {"ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "8", "ASSISTANT_LIMITS__CONNECTIONS": "2"}
    with serve(tmp_path, redis_url, **limits) as port:
        # two connections (requests 1-2) hold the key's two places; a third is refused, on
        # whichever worker it lands
        sockets = [
            await websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                     additional_headers={"Authorization": f"Bearer {key}"})
            for _ in range(2)
        ]  # fmt: skip
        try:
            for ws in sockets:
                assert '"session.created"' in await ws.recv()
            _, third = await ws_session(port, key)  # request 3
            assert third["error"]["code"] == "too_many_connections"
        finally:
            for ws in sockets:
                await ws.close()
        # requests 4..: each on a fresh connection, so the kernel spreads them over both workers;
        # were the counts per worker, 2 x 8 would pass
        answers = []
        for _ in range(12):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                answers.append(await http.get("/v1/sessions/sess_nope/messages",
                                              headers={"Authorization": f"Bearer {key}"}))  # fmt: skip
        codes = [a.json()["error"]["code"] for a in answers]
        assert codes.count("session_not_found") == 5, codes  # 8 in the minute, 3 used above
        limited = [a for a in answers if a.status_code == 429]
        assert len(limited) == 7 and all(a.json()["error"]["code"] == "rate_limited" for a in limited)
        assert all(int(a.headers["retry-after"]) >= 1 for a in limited)


async def test_a_publishable_key_only_mints_secrets_for_its_pages(tmp_path, redis_url):
    publishable = await new_key(redis_url, "acme", kind="publishable", scopes=(), origins=(SHOP,))
    with serve(tmp_path, redis_url) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            auth = {"Authorization": f"Bearer {publishable}"}
            admin = await http.get("/v1/admin/keys", headers={**auth, "Origin": SHOP})
            assert admin.status_code == 403
            evil = await http.post("/v1/realtime/client_secrets", json={},
                                   headers={**auth, "Origin": "https://evil.example"})  # fmt: skip
            assert evil.json()["error"]["code"] == "origin_not_allowed"
            minted = await http.post("/v1/realtime/client_secrets", headers={**auth, "Origin": SHOP},
                                     json={"expires_after": {"seconds": 2}})  # fmt: skip
            secret = minted.json()["value"]
        protocols = ["realtime", f"assistant-secret.{secret}"]
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                      subprotocols=protocols, origin=SHOP) as ws:  # fmt: skip
            assert ws.subprotocol == "realtime" and '"session.created"' in await ws.recv()
        with pytest.raises(websockets.ConnectionClosed) as bad:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                          subprotocols=protocols, origin="https://evil.example") as ws:
                await ws.recv()
        assert bad.value.rcvd.code == 1008 and bad.value.rcvd.reason.startswith("origin_not_allowed")

        async def refusal() -> str | None:
            try:
                async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                              subprotocols=protocols, origin=SHOP) as ws:
                    await ws.recv()
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.reason if closed.rcvd else "no close frame"
            return None

        await wait_for_async(refusal, timeout_s=10, what="the 2 s client secret to expire")
        assert (await refusal()).startswith("token_expired")


async def turn_events(ws, text: str) -> list[dict]:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send('{"type": "response.create"}')
    events = []
    while True:
        events.append(json.loads(await ws.recv()))
        if events[-1]["type"] in ("response.done",) or (
            events[-1]["type"] == "error" and events[-1]["error"]["type"] == "rate_limit_error"
        ):
            return events


async def test_generation_token_secret_and_session_limits_across_two_workers(tmp_path, redis_url):
    key = await new_key(redis_url, "acme")
    publishable = await new_key(redis_url, "acme", kind="publishable", scopes=(), origins=(SHOP,))
    limits = {
        "ASSISTANT_LIMITS__GENERATIONS": "1", "ASSISTANT_LIMITS__TOKENS_PER_MINUTE": "12",
        "ASSISTANT_LIMITS__CLIENT_SECRETS_PER_MINUTE": "2", "ASSISTANT_LIMITS__SESSION_TURNS": "7",
        "ASSISTANT_LLM__MODEL": "one two three four five six seven eight",
        "ASSISTANT_LLM__TOKEN_DELAY_S": "0.2",
    }  # fmt: skip
    url_headers = {"additional_headers": {"Authorization": f"Bearer {key}"}}
    with serve(tmp_path, redis_url, **limits) as port:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        async with websockets.connect(url, **url_headers) as a, websockets.connect(url, **url_headers) as b:
            await a.recv(), await b.recv()
            await a.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}}))
            await a.send('{"type": "response.create"}')
            while json.loads(await a.recv())["type"] != "response.output_text.delta":
                pass  # a's reply is generating now (8 tokens, 0.2 s each)
            refused = await turn_events(b, "me too")
            assert refused[-1]["error"]["code"] == "too_many_generations"
            while json.loads(await a.recv())["type"] != "response.done":
                pass
            # 12 tokens a minute: the first reply spent 8 (and each start probes with 1); within
            # two more turns the minute's tokens are gone, whichever worker counted them
            outcomes = [await turn_events(b, f"again {n}") for n in range(3)]
            last = [events[-1] for events in outcomes]
            limited = [e for e in last if e["type"] == "error"]
            assert limited and limited[0]["error"]["code"] == "token_rate_limited", last
            assert limited[0]["error"]["retry_after_s"] > 0
            assert last.index(limited[0]) <= 1  # at the latest the second turn after a's reply
            # the session holds 7 messages at most: a's has 2; 5 more user items, the 6th refused
            codes = []
            for n in range(6):
                await a.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": f"n{n}"}]}}))  # fmt: skip
                codes.append(json.loads(await a.recv()).get("error", {}).get("code"))
            assert codes == [None] * 5 + ["session_turn_limit"], codes
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            auth = {"Authorization": f"Bearer {publishable}", "Origin": SHOP}
            minted = [await http.post("/v1/realtime/client_secrets", json={}, headers=auth)
                      for _ in range(3)]  # fmt: skip
        assert [m.status_code for m in minted] == [200, 200, 429]
        assert minted[2].json()["error"]["code"] == "rate_limited"
