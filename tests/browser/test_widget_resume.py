"""The widget keeps its conversation through trouble: the server restarted under an open page (it
reconnects with ?session_id=, and a message typed meanwhile is sent once, with its client turn
id), and the browser's network dropped and back."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.browser import shot
from tests.support.processes import free_port
from tests.support.server import ServerProcess, serve_env

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def user_texts(server, session_id):
    answer = httpx.get(server.url(f"/v1/sessions/{session_id}/messages"), timeout=10).json()
    return [m["content"][0]["text"] for m in answer["data"] if m["role"] == "user"]


def sends_of(widget, text):
    """The conversation.item.create events the page sent with this text."""
    return [
        e for e in widget.record.events_sent("conversation.item.create")
        if e["item"]["content"][-1].get("text") == text
    ]  # fmt: skip


def test_a_server_restart_under_an_open_page(tmp_path, widget):
    env = serve_env(tmp_path / "data", ASSISTANT_LLM__ADAPTER="scripted",
                    ASSISTANT_LLM__TOKEN_DELAY_S="0.04")  # fmt: skip
    port = free_port()
    server = ServerProcess(env, port=port).start()
    try:
        widget.goto(server.url("/"))
        widget.open()
        widget.type("before the restart")
        widget.wait_replies(1)
        session_id = widget.status()["sessionId"]

        server.stop()
        expect(widget.page.locator(".status")).to_have_text("Offline: reconnecting…")
        widget.type("sent while offline")
        expect(widget.page.locator(".msg.user.pending .note")).to_have_text("Waiting to send…")
        shot(widget.page, "offline-pending")
        server = ServerProcess(env, port=port).start()  # same port, same data dir (Redis's AOF)

        replies = widget.wait_replies(2)
        assert replies[-1] == "You said: sent while offline"
        assert widget.status()["sessionId"] == session_id
        assert len(sends_of(widget, "sent while offline")) == 1  # sent once, when it was back
        assert widget.page.locator(".status").inner_text() == ""
        widget.type("and after it")
        assert widget.wait_replies(3)[-1] == "You said: and after it"
        assert user_texts(server, session_id) == [
            "before the restart", "sent while offline", "and after it"
        ]  # fmt: skip
        sockets = widget.record.sockets
        resumed_at = f"?session_id={session_id}"  # and &after=, the last event of the session seen
        assert len(sockets) >= 2
        assert all(s.endswith(resumed_at) or f"{resumed_at}&after=" in s for s in sockets[1:])
    finally:
        server.stop()


def test_the_network_dropping_and_coming_back(scripted_server, context, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    widget.type("online")
    widget.wait_replies(1)
    session_id = widget.status()["sessionId"]

    context.set_offline(True)
    expect(widget.page.locator(".status")).to_have_text("Offline: reconnecting…")
    widget.type("typed offline")
    expect(widget.page.locator(".msg.user.pending")).to_have_count(1)
    context.set_offline(False)

    assert widget.wait_replies(2)[-1] == "You said: typed offline"
    assert len(sends_of(widget, "typed offline")) == 1
    assert user_texts(scripted_server, session_id) == ["online", "typed offline"]
    assert widget.bubbles() == [
        ("user", "online"), ("assistant", "You said: online"),
        ("user", "typed offline"), ("assistant", "You said: typed offline"),
    ]  # fmt: skip
