"""Keys, tenants and browser tokens on the app (in-memory store, keys and limits): every route
refuses another tenant's session with 404, credentials are checked at the WebSocket handshake
(closing with 1008 and the code), publishable keys mint client secrets for their origins only."""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from assistant.auth.tokens import sign_user
from assistant.config import AuthSettings, LimitsSettings, Settings
from assistant.server.app import create_app
from assistant.server.auth_routes import make_key
from assistant.testing.keys import MemoryKeyStore
from assistant.testing.language_models import ScriptedLM
from assistant.testing.limits import MemoryLimiter
from assistant.testing.memory import MemoryStore
from tests.support.waiting import wait_for

SHOP = "https://shop.example"


class Server:
    """An app in closed mode with two tenants' keys."""

    def __init__(self, client: TestClient, keys: MemoryKeyStore) -> None:
        self.client, self.keys = client, keys
        self.pepper = client.app.state.components.auth.pepper

    def key(self, tenant: str, kind: str = "secret", scopes=("client",), origins=()) -> str:
        record, key = self.client.portal.call(
            make_key, self.keys, self.pepper, tenant, kind, tuple(scopes), tuple(origins), ""
        )
        self.records = getattr(self, "records", {})
        self.records[key] = record
        return key

    def ws(self, key: str | None = None, query: str = "", **kw):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return self.client.websocket_connect(f"/v1/realtime{query}", headers=headers, **kw)

    def get(self, path: str, key: str | None = None, **headers):
        if key:
            headers["authorization"] = f"Bearer {key}"
        return self.client.get(path, headers=headers)

    def post(self, path: str, key: str | None = None, json=None, **headers):
        if key:
            headers["authorization"] = f"Bearer {key}"
        return self.client.post(path, headers=headers, json=json or {})


@pytest.fixture
def make_server(tmp_path):
    with contextlib.ExitStack() as stack:

        def make(**limits) -> Server:
            settings = Settings(
                data_dir=tmp_path, auth=AuthSettings(open=False),
                limits=LimitsSettings(**limits) if limits else LimitsSettings(),
            )  # fmt: skip
            keys = MemoryKeyStore()
            app = create_app(
                settings, llm=ScriptedLM("hi there"), store=MemoryStore(), keys=keys,
                limiter=MemoryLimiter(),
            )  # fmt: skip
            return Server(stack.enter_context(TestClient(app)), keys)

        yield make


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


def refused(connect) -> tuple[int, str]:
    """The close code and reason of a handshake the server refuses."""
    with pytest.raises(WebSocketDisconnect) as closed:
        with connect as ws:
            ws.receive_json()
    return closed.value.code, closed.value.reason


def new_session(server: Server, key: str) -> str:
    with server.ws(key) as ws:
        session_id = ws.receive_json()["session"]["id"]
        ws.send_json({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}})
        assert ws.receive_json()["type"] == "conversation.item.created"
    return session_id


def test_no_credentials_are_refused_on_every_route(server):
    code, reason = refused(server.ws())
    assert code == 1008 and reason.startswith("missing_credentials")
    for path in ("/v1/sessions/sess_x/messages", "/metrics", "/docs", "/openapi.json"):
        answer = server.get(path)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "missing_credentials"
    assert server.post("/v1/realtime/client_secrets").status_code == 401
    assert server.get("/healthz").status_code == 200  # liveness needs no key


def test_a_wrong_or_revoked_key_is_refused(server):
    key = server.key("acme")
    code, reason = refused(server.ws(key[:-1] + ("A" if key[-1] != "A" else "B")))
    assert (code, reason.split(":")[0]) == (1008, "invalid_api_key")
    server.client.portal.call(server.keys.revoke, server.records[key].id, 1)
    server.client.app.state.components.auth._cache.clear()  # the key cache's 5 s, skipped
    code, reason = refused(server.ws(key))
    assert reason.startswith("invalid_api_key")


def test_another_tenants_session_is_not_found_on_every_route(server):
    acme, globex = server.key("acme"), server.key("globex", scopes=("admin", "agent", "client"))
    session_id = new_session(server, acme)
    assert server.get(f"/v1/sessions/{session_id}/messages", acme).status_code == 200
    answer = server.get(f"/v1/sessions/{session_id}/messages", globex)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "session_not_found"
    with server.ws(globex, f"?session_id={session_id}") as ws:
        event = ws.receive_json()
    assert event["type"] == "error" and event["error"]["code"] == "session_not_found"
    minted = server.post(
        "/v1/realtime/client_secrets", globex, json={"session_id": session_id}
    )
    assert minted.status_code == 404
    # and what globex wrote did not land in acme's session
    data = server.get(f"/v1/sessions/{session_id}/messages", acme).json()["data"]
    assert [m["content"][0]["text"] for m in data] == ["x"]


def test_scopes_guard_the_admin_routes(server):
    client_key = server.key("acme")
    admin_key = server.key("acme", scopes=("admin",))
    publishable = server.key("acme", "publishable", (), (SHOP,))
    assert server.get("/v1/admin/keys", client_key).json()["error"]["code"] == "insufficient_scope"
    answer = server.get("/v1/admin/keys", publishable, origin=SHOP)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "insufficient_scope"
    listed = server.get("/v1/admin/keys", admin_key)
    assert listed.status_code == 200
    assert {k["kind"] for k in listed.json()["data"]} == {"secret", "publishable"}
    assert all("digest" not in k and "key" not in k for k in listed.json()["data"])
    assert server.get("/metrics", admin_key).status_code == 200
    assert server.get("/metrics", client_key).status_code == 403
    code, reason = refused(server.ws(publishable, headers={"origin": SHOP}))
    assert reason.startswith("insufficient_scope")  # a page gets a client secret first


def test_an_admin_manages_only_its_own_tenants_keys(server):
    admin = server.key("acme", scopes=("admin",))
    other = server.key("globex")
    made = server.post("/v1/admin/keys", admin, json={"scopes": ["client"], "name": "bot"})
    assert made.status_code == 201 and made.json()["key"].startswith("sk_")
    assert made.json()["tenant"] == "acme"
    with server.ws(made.json()["key"]) as ws:
        assert ws.receive_json()["type"] == "session.created"
    other_id = server.records[other].id
    assert server.client.delete(f"/v1/admin/keys/{other_id}", headers={
        "authorization": f"Bearer {admin}"}).status_code == 404
    revoked = server.client.delete(f"/v1/admin/keys/{made.json()['id']}", headers={
        "authorization": f"Bearer {admin}"})
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]


def test_a_publishable_key_mints_client_secrets_for_its_origins_only(server):
    publishable = server.key("acme", "publishable", (), (SHOP,))
    bad = server.post("/v1/realtime/client_secrets", publishable, origin="https://evil.example")
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "origin_not_allowed"
    no_page = server.post("/v1/realtime/client_secrets", publishable)
    assert no_page.json()["error"]["code"] == "origin_not_allowed"
    minted = server.post(
        "/v1/realtime/client_secrets", publishable, json={"expires_after": {"seconds": 60}},
        origin=SHOP,
    )  # fmt: skip
    assert minted.status_code == 200, minted.json()
    secret = minted.json()["value"]
    assert secret.startswith("cs_") and minted.json()["expires_at"] > 0
    # the browser's way: the secret in a subprotocol, never in the URL
    protocols = ["realtime", f"assistant-secret.{secret}"]
    with server.client.websocket_connect(
        "/v1/realtime", subprotocols=protocols, headers={"origin": SHOP}
    ) as ws:
        assert ws.accepted_subprotocol == "realtime"
        assert ws.receive_json()["type"] == "session.created"
    code, reason = refused(server.client.websocket_connect(
        "/v1/realtime", subprotocols=protocols, headers={"origin": "https://evil.example"}))
    assert (code, reason.split(":")[0]) == (1008, "origin_not_allowed")


def test_a_client_secret_expires(server):
    key = server.key("acme")
    # 3 s: long enough to be used once on a loaded machine (at 1 s the first use came too late)
    minted = server.post("/v1/realtime/client_secrets", key, json={"expires_after": {"seconds": 3}})
    secret = minted.json()["value"]
    with server.ws(secret) as ws:
        assert ws.receive_json()["type"] == "session.created"

    def expired() -> bool:
        with contextlib.suppress(WebSocketDisconnect), server.ws(secret) as ws:
            ws.receive_json()
            return False
        return True

    wait_for(expired, timeout_s=15, what="the client secret to expire")
    assert refused(server.ws(secret))[1].startswith("token_expired")


def test_a_client_secret_bound_to_a_session_opens_that_one_only(server):
    key = server.key("acme")
    session_id = new_session(server, key)
    other = new_session(server, key)
    secret = server.post(
        "/v1/realtime/client_secrets", key, json={"session_id": session_id}
    ).json()["value"]
    with server.ws(secret) as ws:  # no ?session_id=: the bound one is resumed
        assert ws.receive_json()["session"]["id"] == session_id
    with server.ws(secret, f"?session_id={other}") as ws:
        assert ws.receive_json()["error"]["code"] == "session_not_found"
    assert server.get(f"/v1/sessions/{other}/messages", secret).status_code == 404
    assert server.get(f"/v1/sessions/{session_id}/messages", secret).status_code == 200


def test_a_signed_user_identity_is_checked(server):
    publishable = server.key("acme", "publishable", (), (SHOP,))
    identity = server.records[publishable].identity_secret
    body = {"user": {"id": "customer-42", "signature": sign_user("customer-42", identity)}}
    ok = server.post("/v1/realtime/client_secrets", publishable, json=body, origin=SHOP)
    assert ok.status_code == 200
    principal = server.client.app.state.components.auth.client_secrets.verify(ok.json()["value"])
    assert principal.user == "customer-42" and principal.origins == (SHOP,)
    body["user"]["signature"] = sign_user("customer-43", identity)
    forged = server.post("/v1/realtime/client_secrets", publishable, json=body, origin=SHOP)
    assert forged.json()["error"]["code"] == "invalid_user_signature"


def test_cors_preflights_are_answered_for_allowed_origins_only(server):
    server.key("acme", "publishable", (), (SHOP,))
    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}  # fmt: skip
    allowed = server.client.options(
        "/v1/realtime/client_secrets", headers={"origin": SHOP, **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] in ("*", SHOP)
    denied = server.client.options(
        "/v1/realtime/client_secrets", headers={"origin": "https://evil.example", **preflight}
    )
    assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers


def test_static_keys_give_client_access_to_their_tenant(tmp_path):
    settings = Settings(
        data_dir=tmp_path, auth=AuthSettings(open=False),
        api_keys="acme:acme-static-key-0123456789,globex:globex-static-key-0123456789",
    )  # fmt: skip
    with TestClient(create_app(settings, llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        server = Server(client, client.app.state.components.keys)
        session_id = new_session(server, "acme-static-key-0123456789")
        assert server.get(f"/v1/sessions/{session_id}/messages",
                          "globex-static-key-0123456789").status_code == 404  # fmt: skip
        assert refused(server.ws("acme-static-key-wrong"))[1].startswith("invalid_api_key")


def test_open_mode_takes_anonymous_callers_from_loopback_pages_only(tmp_path):
    settings = Settings(data_dir=tmp_path, auth=AuthSettings(open=True))
    with TestClient(create_app(settings, llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        with client.websocket_connect("/v1/realtime") as ws:
            assert ws.receive_json()["type"] == "session.created"
        with client.websocket_connect("/v1/realtime", headers={"origin": "http://localhost:8000"}) as ws:
            assert ws.receive_json()["type"] == "session.created"
        code, reason = refused(
            client.websocket_connect("/v1/realtime", headers={"origin": "https://evil.example"})
        )
        assert (code, reason.split(":")[0]) == (1008, "origin_not_allowed")


def test_each_limit_is_answered_with_its_code(make_server):
    server = make_server(requests_per_minute=4, connections=1, generations=1)
    key = server.key("acme")
    with server.ws(key) as ws:  # request 1, and the key's one connection
        ws.receive_json()
        with server.ws(key) as second:  # request 2
            event = second.receive_json()
        assert event["error"]["code"] == "too_many_connections"
    answer = server.get("/v1/sessions/nope/messages", key)  # request 3
    assert answer.status_code == 404
    server.get("/v1/sessions/nope/messages", key)  # request 4
    limited = server.get("/v1/sessions/nope/messages", key)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["retry_after_s"] > 0


async def test_spent_tokens_count_even_past_the_limit():
    from assistant.testing.limits import MemoryLimiter

    limiter = MemoryLimiter()
    await limiter.spend("tokens", "k", 10, 8)
    await limiter.spend("tokens", "k", 10, 8)  # 8 more used: only 2 fit, and they are counted
    assert await limiter.hit("tokens", "k", 10, 1) is not None  # nothing left this minute


def test_the_limits_storage_is_built_from_the_parsed_redis_url():
    from adapters.limits.redis_limits import storage

    assert storage("redis://127.0.0.1:6379/0") == ("async+redis://127.0.0.1:6379/0", {})
    uri, options = storage("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2?sentinel_password=sp")
    assert uri == "async+redis+sentinel://h1:26379,h2:26380/mymaster"
    assert options == {"password": "pw", "service_name": "mymaster", "db": 2,
                       "sentinel_kwargs": {"password": "sp"}}  # fmt: skip
    uri, options = storage("redis+cluster://:pw@h1:7000,h2:7001")
    assert uri == "async+redis+cluster://h1:7000,h2:7001" and options == {"password": "pw"}
