"""The widget on the demo page (``GET /``) in real Chromium against ``python -m assistant serve``
with the scripted model ("You said: <the message>", a word per token): typed messages stream
back rendered, stop, reload, markup kept as text, errors in words, the unread badge and events."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.browser import ARTIFACTS, shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IN_SHADOW = "document.querySelector('assistant-widget').shadowRoot"


def history(server, session_id):
    answer = httpx.get(server.url(f"/v1/sessions/{session_id}/messages"), timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]


def test_a_typed_message_streams_back_rendered_from_the_demo_page(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    page = widget.page
    ready_ms = page.evaluate("() => window.__probe.readyAt")
    added = page.evaluate(
        "() => Object.getOwnPropertyNames(window).filter((n) => !window.__probe.globals.includes(n))"
    )
    assert set(added) - {"__probe", "AssistantWidgetSettings"} == {"AssistantWidget"}
    assert widget.events("ready")[0]["version"] == page.evaluate("() => AssistantWidget.version")

    widget.open()
    widget.watch()
    widget.type("Please show `code` and **bold** words")
    [reply] = widget.wait_replies(1)

    assert reply == "You said: Please show code and bold words"
    assert page.locator(".msg.assistant code").inner_text() == "code"
    assert page.locator(".msg.assistant strong").inner_text() == "bold"
    seen = widget.watched()
    assert seen["typingBeforeText"] is True  # the indicator stood between send and first token
    assert len(seen["texts"]) >= 2, seen  # drawn over several frames as the tokens came
    assert all(reply.startswith(text.strip()) for text in seen["texts"]), seen
    [message] = widget.events("message")
    assert message["text"] == "You said: Please show `code` and **bold** words"
    assert message["status"] == "completed"
    assert page.locator(".typing").count() == 0
    assert widget.foreign_requests(scripted_server.base_url) == []
    assert widget.record.errors == [] and widget.record.dialogs == []
    shot(page, "chat-streamed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ready.json").write_text(json.dumps({"page_load_to_ready_ms": ready_ms}))
    print(f"\npage load -> assistant:ready: {ready_ms:.0f} ms")


def test_stop_mid_reply_is_stored_interrupted(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    words = " ".join(f"word{i}" for i in range(80))
    widget.type(words)
    widget.wait(f"() => ({IN_SHADOW}.querySelector('.msg.streaming .body') || {{}}).textContent"
                "?.includes('word3')")  # fmt: skip
    widget.page.locator(".stop").click()
    [reply] = widget.wait_replies(1)

    note = widget.page.locator(".msg.assistant .note").inner_text()
    assert note == "stopped"
    shown = reply.removesuffix(note).strip()
    assert shown.startswith("You said: word0") and len(shown) < len("You said: " + words)
    assert len(widget.record.events_sent("response.cancel")) == 1
    stored = history(scripted_server, widget.status()["sessionId"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[-1]["status"] == "interrupted"
    assert stored[-1]["content"][0]["text"] == shown
    assert widget.page.locator(".send").is_visible()  # the stop button is gone again


def test_a_reload_draws_the_thread_again(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    widget.type("first message")
    widget.wait_replies(1)
    widget.type("second message")
    widget.wait_replies(2)
    before = widget.bubbles()
    session_id = widget.status()["sessionId"]

    widget.page.reload()
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    widget.wait_replies(2)
    assert widget.bubbles() == before
    assert widget.status()["sessionId"] == session_id
    assert [role for role, _ in before] == ["user", "assistant", "user", "assistant"]


EVIL = (
    "<img src=x onerror=alert(1)> <script>alert(2)</script> [click](javascript:alert(3)) "
    '<a href="javascript:alert(4)">four</a> ![pic](https://example.com/p.png) [ok](https://example.com/x)'
)
MARKDOWN = "Items:\n\n- one\n- two\n\nRun `ls` then see https://example.com/docs"

DANGER = f"""() => {{
  const root = {IN_SHADOW};
  const everywhere = [...document.querySelectorAll('*'), ...root.querySelectorAll('*')];
  return {{
    images: root.querySelectorAll('img').length + document.querySelectorAll('img').length,
    scripts: root.querySelectorAll('script').length,
    handlers: everywhere.filter((n) => [...n.attributes].some((a) => a.name.startsWith('on'))).length,
    jsLinks: root.querySelectorAll('a[href^="javascript" i]').length,
    links: [...root.querySelectorAll('.msg a')].map((a) => [a.getAttribute('href'), a.target, a.rel]),
  }};
}}"""


def check_markup_is_text(widget):
    danger = widget.page.evaluate(DANGER)
    assert danger["images"] == danger["scripts"] == danger["handlers"] == danger["jsLinks"] == 0
    assert ["https://example.com/x", "_blank", "noopener noreferrer"] in danger["links"]
    bubbles = dict(widget.bubbles()[:2])
    for text in (bubbles["user"], bubbles["assistant"]):
        for piece in ("<img src=x onerror=alert(1)>", "<script>alert(2)</script>",
                      "[click](javascript:alert(3))", "![pic](https://example.com/p.png)"):  # fmt: skip
            assert piece in text, (piece, text)
    assert widget.page.locator(".msg.assistant li").all_inner_texts()[-2:] == ["one", "two"]
    assert widget.page.locator(".msg.assistant code").last.inner_text() == "ls"
    assert widget.record.dialogs == []


def test_markup_in_a_reply_and_in_stored_messages_renders_as_text(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    widget.type(EVIL)
    widget.wait_replies(1)
    widget.page.evaluate("(text) => AssistantWidget.send(text)", MARKDOWN)
    widget.wait_replies(2)
    check_markup_is_text(widget)  # as the reply streamed in

    widget.page.reload()
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    widget.wait_replies(2)
    widget.open()
    check_markup_is_text(widget)  # as stored, drawn from GET /v1/sessions/{id}/messages
    assert widget.foreign_requests(scripted_server.base_url) == []
    shot(widget.page, "markup-as-text")


def test_server_errors_are_shown_in_words(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    for n in range(4):  # 8 messages: the session is full (ASSISTANT_LIMITS__SESSION_TURNS)
        widget.type(f"message {n}")
        widget.wait_replies(n + 1)
    widget.type("one too many")
    alert = widget.page.locator(".alert")
    alert.wait_for(state="visible")

    words = "This conversation is full. Start a new one to go on."
    assert alert.inner_text() == words
    assert widget.events("error")[-1] == {"code": "session_turn_limit", "message": words}
    assert widget.page.locator(".msg.user .note").last.inner_text() == words
    assert "session_turn_limit" not in widget.page.locator(".panel").inner_text()
    shot(widget.page, "error-in-words")

    old = widget.status()["sessionId"]
    widget.page.locator(".reset").click()  # a new conversation
    widget.type("hello again")
    assert widget.wait_replies(1) == ["You said: hello again"]
    assert widget.status()["sessionId"] != old
    assert not alert.is_visible()


def test_unread_badge_events_locale_users_and_reset(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    page = widget.page
    page.evaluate("() => AssistantWidget.send('ping')")  # while the panel is closed
    widget.wait("() => window.__probe.events.some((e) => e.name === 'message')")
    badge = page.locator(".badge")
    assert badge.inner_text() == "1"
    assert page.locator(".launcher").get_attribute("aria-label") == "Open chat (1 unread)"

    widget.open()
    assert not badge.is_visible()
    page.evaluate("() => AssistantWidget.close()")
    page.evaluate("() => AssistantWidget.toggle()")
    names = [e["name"] for e in page.evaluate("() => window.__probe.events")]
    assert [n for n in names if n in ("opened", "closed")] == ["opened", "closed", "opened"]
    page.evaluate("() => AssistantWidget.setLocale('de-AT')")
    assert page.locator("textarea").get_attribute("placeholder") == "Nachricht schreiben…"
    assert page.locator(".close").get_attribute("aria-label") == "Chat schließen"

    anonymous = widget.status()["sessionId"]
    page.evaluate("() => AssistantWidget.setUser({id: 'customer-1', name: 'Ann'})")
    page.evaluate("() => AssistantWidget.send('as Ann')")
    widget.wait_replies(1)
    ann = widget.status()["sessionId"]
    assert ann not in (None, anonymous)
    assert widget.bubbles() == [("user", "as Ann"), ("assistant", "You said: as Ann")]
    page.evaluate("() => AssistantWidget.setUser(null)")  # back to the visitor's own
    widget.wait("() => document.querySelector('assistant-widget').shadowRoot"
                ".querySelector('.msg.user .body')?.textContent === 'ping'")  # fmt: skip
    assert widget.status()["sessionId"] == anonymous
    page.evaluate("() => AssistantWidget.setUser({id: 'customer-1', name: 'Ann'})")
    widget.wait("() => document.querySelector('assistant-widget').shadowRoot"
                ".querySelector('.msg.user .body')?.textContent === 'as Ann'")  # fmt: skip
    assert widget.status()["sessionId"] == ann  # her own conversation, resumed
    page.evaluate("() => { AssistantWidget.close(); AssistantWidget.reset(); }")  # logout
    assert widget.status()["sessionId"] is None and widget.bubbles() == []
    page.reload()
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    assert widget.status()["sessionId"] is None  # forgotten: nothing to resume
    page.evaluate("() => AssistantWidget.setUser({id: 'customer-1'})")  # Ann signs in again
    assert widget.status()["sessionId"] is None and widget.bubbles() == []  # a new start
