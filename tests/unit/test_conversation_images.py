"""``GET /v1/conversations/{id}/images/{sha256}`` on the app in process (the in-memory store,
auth open): the bytes of an image the conversation holds, with its content type and headers that
keep a browser from running it; an image of another conversation, an unknown sha256 or a
malformed one is not served. The agent key's tenant and scope are the real server tests'
(test_handoff_server: every route)."""

from __future__ import annotations

import hashlib

from assistant.messages import ImagePart, Message, TextPart
from tests.support.openai_app import AppClients

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def _with_image(http, data: bytes) -> tuple[str, str]:
    components = http.app.state.components
    session = http.portal.call(components.orchestrator.open_session)
    sha = hashlib.sha256(data).hexdigest()
    http.portal.call(http.store.put_blob, sha, data)
    message = Message(role="user", content=(TextPart(text="look"), ImagePart(sha256=sha)))
    http.portal.call(http.store.append, session.id, message)
    return session.id, sha


def test_an_image_of_the_conversation_is_served_and_only_that(tmp_path):
    with AppClients(tmp_path) as make:
        http = make()
        session_id, sha = _with_image(http, PNG)
        other_id, other_sha = _with_image(http, PNG + b"other")
        got = http.get(f"/v1/conversations/{session_id}/images/{sha}")
        assert got.status_code == 200, got.text
        assert got.content == PNG and got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == "default-src 'none'"
        # another conversation's image is not this one's
        crossed = http.get(f"/v1/conversations/{session_id}/images/{other_sha}")
        assert crossed.status_code == 404
        assert crossed.json()["error"]["code"] == "image_not_found"
        unknown = http.get(f"/v1/conversations/{session_id}/images/{'0' * 64}")
        assert unknown.json()["error"]["code"] == "image_not_found"
        malformed = http.get(f"/v1/conversations/{session_id}/images/../../x")
        assert malformed.status_code == 404
        bad = http.get(f"/v1/conversations/{session_id}/images/{'Z' * 64}")
        assert bad.status_code == 400 and bad.json()["error"]["code"]
        missing = http.get(f"/v1/conversations/nope/images/{sha}")
        assert missing.json()["error"]["code"] == "session_not_found"


def test_the_list_says_where_to_follow_the_queue_from(tmp_path):
    with AppClients(tmp_path) as make:
        http = make()
        before = http.get("/v1/conversations").json()
        assert before["data"] == [] and before["last_seq"] == "0"
        session_id, _ = _with_image(http, PNG)
        handed = http.post(f"/v1/conversations/{session_id}/handoff", json={"reason": "api"})
        assert handed.json()["status"] == "waiting_human"
        after = http.get("/v1/conversations", params={"status": "waiting_human"}).json()
        assert [c["id"] for c in after["data"]] == [session_id]
        assert after["last_seq"] != "0"
        with http.stream("GET", "/v1/queue/events", params={"after": before["last_seq"]}) as sse:
            lines = sse.iter_lines()
            block = [next(lines) for _ in range(3)]
        assert block[0] == f"id: {after['last_seq']}"
        assert block[1] == "event: conversation.status.updated"
        assert f'"conversation": "{session_id}"' in block[2] and '"reason": "api"' in block[2]
        bad = http.get("/v1/queue/events", params={"after": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"


def test_a_quiet_event_stream_sends_keep_alive_comments(tmp_path, monkeypatch):
    from assistant.server import conversation_routes

    monkeypatch.setattr(conversation_routes, "KEEPALIVE_S", 0.05)
    with AppClients(tmp_path) as make:
        http = make()
        session_id, _ = _with_image(http, PNG)
        with http.stream("GET", f"/v1/conversations/{session_id}/events") as sse:
            lines = sse.iter_lines()
            assert next(lines) == ": keep-alive"  # nothing happened: a comment, not an event
