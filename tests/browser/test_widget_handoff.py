"""The widget's side of the human handoff, in real Chromium, against one real ``assistant serve``
(the scripted model, keys on, its own redis-server): the customer asks for a person with "Talk to
a person", an agent (httpx on the REST routes) claims the conversation, replies and hands it
back. A person's replies show live, marked as a person's, as text (markup in them is never
parsed); the bot stays silent while held and answers again after the handback; a reload while
held and a dropped socket draw every message once; another tab's messages show too; the control
can be turned off."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import expect

from assistant.server import web
from tests.support.browser import HostPage, WidgetPage, shot
from tests.support.server import ServerProcess, serve_env

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SECRET = "test-server-secret-widget-handoff-0123456789"
PAGE = (
    "<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>{embed}</body></html>"
)
HELD_REPLY = "A person from our team will answer you here shortly."  # the profile's default
XSS = '<img src=x onerror="window.__x=1"> and <b>bold</b>'
PERSON = ".msg.assistant.from-person"
#: Events a session's stream keeps (about: Redis trims whole nodes of 100 entries): the least.
STREAM_MAXLEN = 100


async def _make_keys(redis_url: str, origin: str) -> tuple[str, str]:
    """A publishable key for the shop's origin and an agent key, both of tenant acme."""
    import redis.asyncio as aioredis

    from adapters.memory.redis_keys import RedisKeyStore
    from assistant.server.auth_routes import make_key

    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        keys = RedisKeyStore(client)
        _, publishable = await make_key(keys, SECRET.encode(), "acme", "publishable", (),
                                        (origin,), "shop")  # fmt: skip
        _, agent = await make_key(keys, SECRET.encode(), "acme", "secret", ("agent",), (), "")
    finally:
        await client.aclose()
    return publishable, agent


class Served:
    def __init__(self, server: ServerProcess, shop: HostPage, agent_key: str) -> None:
        self.server = server
        self.shop = shop
        self.agent = httpx.Client(base_url=server.base_url, timeout=30,
                                  headers={"Authorization": f"Bearer {agent_key}"})  # fmt: skip

    def act(self, session_id: str, action: str, **body: str) -> dict:
        answer = self.agent.post(f"/v1/conversations/{session_id}/{action}", json=body or None)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    def say(self, session_id: str, text: str) -> dict:
        return self.act(session_id, "messages", text=text)

    def last_seq(self, session_id: str) -> str:
        answer = self.agent.get(f"/v1/conversations/{session_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()["last_seq"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A keyed server on its own redis-server (the handoff needs one), the shop's pages (the
    widget with a publishable key; and with data-handoff="off") and an agent's REST client."""
    from adapters.memory.embedded_redis import EmbeddedRedis

    redis = EmbeddedRedis(tmp_path_factory.mktemp("handoff-redis"))
    redis.start()
    pages: dict[str, str] = {}
    try:
        with HostPage(pages) as shop:
            publishable, agent_key = asyncio.run(_make_keys(redis.url, shop.origin))
            env = serve_env(
                tmp_path_factory.mktemp("widget-handoff"), ASSISTANT_LLM__ADAPTER="scripted",
                ASSISTANT_LLM__TOKEN_DELAY_S="0.02", ASSISTANT_REDIS_URL=redis.url,
                ASSISTANT_AUTH__OPEN="false", ASSISTANT_AUTH__SECRET=SECRET,
                ASSISTANT_HANDOFF__STREAM_MAXLEN=str(STREAM_MAXLEN),
            )  # fmt: skip
            with ServerProcess(env) as server:
                embed = web.snippet(server.base_url).replace(
                    " async>", f' data-key="{publishable}" async>'
                )
                pages["/shop"] = PAGE.format(embed=embed)
                pages["/no-handoff"] = PAGE.format(
                    embed=embed.replace(" async>", ' data-handoff="off" async>')
                )
                served = Served(server, shop, agent_key)
                try:
                    yield served
                finally:
                    served.agent.close()
    finally:
        redis.stop()


def start(served: Served, widget: WidgetPage, path: str = "/shop") -> str:
    """The shop page, the panel open, one turn answered by the bot: the session's id."""
    widget.goto(served.shop.url(path))
    widget.open()
    widget.type("hello there")
    assert widget.wait_replies(1) == ["You said: hello there"]
    return widget.status()["sessionId"]


def talk_to_a_person(served: Served, widget: WidgetPage, session_id: str) -> None:
    """The customer presses "Talk to a person"; an agent claims the conversation."""
    button = widget.page.get_by_role("button", name="Talk to a person")
    expect(button).to_be_visible()
    button.click()
    expect(widget.page.locator(".notice[data-status='waiting_human']")).to_have_text(
        "A person will reply here shortly"
    )
    expect(button).to_be_hidden()
    assert served.act(session_id, "claim")["status"] == "human"
    expect(widget.page.locator(".notice[data-status='human']")).to_have_text(
        "Support agent joined the conversation"
    )


def persons(widget: WidgetPage) -> list[str]:
    return widget.page.locator(f"{PERSON} .body").all_text_contents()


def wait_persons(widget: WidgetPage, count: int) -> list[str]:
    expect(widget.page.locator(PERSON)).to_have_count(count)
    return persons(widget)


def after_of(url: str) -> str | None:
    return parse_qs(urlparse(url).query).get("after", [None])[0]


def test_a_person_takes_over_and_hands_back(served, widget):
    session_id = start(served, widget)
    shot(widget.page, "handoff-offered")
    talk_to_a_person(served, widget, session_id)
    assert len(widget.record.events_sent("conversation.handoff.request")) == 1
    assert widget.status()["handoff"]["status"] == "human"

    served.say(session_id, "Hello, this is Dana")
    assert wait_persons(widget, 1) == ["Hello, this is Dana"]
    reply = widget.page.locator(PERSON)
    assert reply.locator(".author").inner_text() == "Support agent"
    assert re.fullmatch(r"agent:\S+", reply.get_attribute("data-author"))
    assert reply.get_attribute("data-id").startswith("msg_")
    message = widget.events("message")[-1]
    assert message["text"] == "Hello, this is Dana" and message["author"].startswith("agent:")

    served.say(session_id, XSS)
    assert wait_persons(widget, 2)[-1] == XSS  # the markup as its text
    assert widget.page.locator(".thread img, .thread b").count() == 0
    assert widget.page.evaluate("() => window.__x") is None

    widget.type("where is my parcel?")  # held: the bot does not answer it
    widget.wait("() => window.__probe.events.filter((e) => e.name === 'message').length >= 4")
    assert widget.events("message")[-1]["text"] == HELD_REPLY
    shot(widget.page, "handoff-held")

    assert served.act(session_id, "handback")["status"] == "bot"
    expect(widget.page.locator(".notice[data-status='bot']")).to_have_text(
        "You are talking to the assistant again"
    )
    expect(widget.page.get_by_role("button", name="Talk to a person")).to_be_visible()
    widget.type("back to the bot")
    # the bot answers again (the scripted model echoes the customer's words since its last reply:
    # the held notice is not stored, so the message it got while held too)
    answered = "You said: where is my parcel?back to the bot"  # two lines: a <br> between
    expect(widget.page.locator(".msg.assistant[data-id]:not(.streaming) .body").last).to_have_text(
        answered
    )
    bubbles = widget.bubbles()
    assert bubbles == [
        ("user", "hello there"), ("assistant", "You said: hello there"),
        ("assistant", "Hello, this is Dana"), ("assistant", XSS),
        ("user", "where is my parcel?"), ("assistant", HELD_REPLY),
        ("user", "back to the bot"), ("assistant", answered),
    ]  # fmt: skip
    notices = widget.page.locator(".notice").evaluate_all("(ns) => ns.map((n) => n.dataset.status)")
    assert notices == ["waiting_human", "human", "bot"]
    failed = [r.url for r in widget.record.requests if r.response() and r.response().status >= 400]
    assert failed == [], failed


def test_a_reload_while_held_draws_the_persons_messages_once(served, widget):
    session_id = start(served, widget)
    talk_to_a_person(served, widget, session_id)
    served.say(session_id, "First from Dana")
    served.say(session_id, "Second from Dana")
    assert wait_persons(widget, 2) == ["First from Dana", "Second from Dana"]
    last_seen = served.last_seq(session_id)  # the agent's second message: the last event
    widget.page.wait_for_function(
        "(seq) => AssistantWidget.status().handoff.seq === seq", arg=last_seen
    )

    widget.page.reload()
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    widget.open()
    assert wait_persons(widget, 2) == ["First from Dana", "Second from Dana"]
    expect(widget.page.locator(".notice")).to_have_count(1)  # the status as it is, once
    expect(widget.page.locator(".notice")).to_have_text("Support agent joined the conversation")
    expect(widget.page.get_by_role("button", name="Talk to a person")).to_be_hidden()
    assert after_of(widget.record.sockets[-1]) == last_seen  # the events since, asked for

    served.say(session_id, "Third, after the reload")
    assert wait_persons(widget, 3)[-1] == "Third, after the reload"
    assert widget.bubbles() == [
        ("user", "hello there"), ("assistant", "You said: hello there"),
        ("assistant", "First from Dana"), ("assistant", "Second from Dana"),
        ("assistant", "Third, after the reload"),
    ]  # fmt: skip
    assert widget.page.locator(f"{PERSON} .author").all_inner_texts() == ["Support agent"] * 3


def test_what_the_person_sent_while_the_socket_was_down_shows_once(served, context, widget):
    session_id = start(served, widget)
    talk_to_a_person(served, widget, session_id)
    served.say(session_id, "Before the drop")
    assert wait_persons(widget, 1) == ["Before the drop"]
    sockets = len(widget.record.sockets)

    context.set_offline(True)  # the widget closes its socket (a dead line may not close itself)
    expect(widget.page.locator(".status")).to_have_text("Offline: reconnecting…")
    for n in (1, 2, 3):
        served.say(session_id, f"While you were away {n}")
    assert persons(widget) == ["Before the drop"]
    context.set_offline(False)

    assert wait_persons(widget, 4) == ["Before the drop"] + [
        f"While you were away {n}" for n in (1, 2, 3)
    ]  # fmt: skip
    expect(widget.page.locator(".status")).to_have_text("")
    assert len(widget.record.sockets) > sockets and after_of(widget.record.sockets[-1])
    served.say(session_id, "And live again")
    assert wait_persons(widget, 5)[-1] == "And live again"
    texts = [text for _, text in widget.bubbles()]
    assert len(texts) == len(set(texts)) == 7  # every message once
    expect(widget.page.locator(".notice[data-status='human']")).to_have_count(1)


def test_a_resume_from_before_the_kept_events_draws_the_whole_thread_silently(
    served, context, widget
):
    session_id = start(served, widget)
    talk_to_a_person(served, widget, session_id)
    served.say(session_id, "Before the drop")
    wait_persons(widget, 1)
    context.set_offline(True)
    expect(widget.page.locator(".status")).to_have_text("Offline: reconnecting…")
    errors = []  # the error events the next socket gets

    def follow(socket) -> None:
        socket.on(
            "framereceived", lambda frame: errors.append(frame) if '"error"' in frame else None
        )

    widget.page.on("websocket", follow)
    away = [f"Away {n}" for n in range(3 * STREAM_MAXLEN)]  # the seq it saw: trimmed away
    for text in away:
        served.say(session_id, text)
    context.set_offline(False)

    assert wait_persons(widget, 1 + len(away)) == ["Before the drop", *away]  # from the history
    assert any('"events_lost"' in frame for frame in errors), errors
    expect(widget.page.locator(".alert")).to_be_hidden()  # nothing to tell the visitor
    assert widget.events("error") == []
    served.say(session_id, "And live again")
    assert wait_persons(widget, 2 + len(away))[-1] == "And live again"


def test_another_tab_of_the_same_conversation(served, context, widget):
    session_id = start(served, widget)
    other = WidgetPage(context.new_page())  # the same storage: the same session
    other.goto(served.shop.url("/shop"))
    other.open()
    other.wait_replies(1)
    assert other.status()["sessionId"] == session_id
    widget.type("sent from the first tab")
    expect(other.page.locator(".msg.user .body").last).to_have_text("sent from the first tab")
    expect(other.page.locator(".msg.assistant[data-id] .body").last).to_have_text(
        "You said: sent from the first tab"
    )
    talk_to_a_person(served, other, session_id)  # the first tab sees the status change too
    expect(widget.page.locator(".notice[data-status='human']")).to_have_count(1)
    served.say(session_id, "Hi both tabs")
    for page in (widget, other):
        assert wait_persons(page, 1) == ["Hi both tabs"]
        texts = [text for _, text in page.bubbles()]
        assert len(texts) == len(set(texts)) == 5


def test_the_control_can_be_turned_off(served, widget):
    session_id = start(served, widget, "/no-handoff")
    assert widget.status()["handoff"]["offered"] is False
    assert widget.page.locator("button.handoff").is_hidden()
    served.act(session_id, "handoff", reason="agent")  # a person may still take it over
    expect(widget.page.locator(".notice[data-status='waiting_human']")).to_be_visible()
    served.act(session_id, "claim")
    served.say(session_id, "Dana here")
    assert wait_persons(widget, 1) == ["Dana here"]
    widget.page.evaluate("() => AssistantWidget.setLocale('de')")
    assert widget.page.locator("button.handoff").text_content() == "Mit einem Menschen sprechen"
