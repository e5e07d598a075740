"""The agent console (``/agent``) in real Chromium, against two real ``assistant serve`` workers on
one real redis-server (the scripted model, keys required). A customer in the widget on worker A
(a shop page on another origin, with a publishable key) sends a picture, then asks for a human;
an agent in the console on worker B (another browser context, signed in with an agent key) sees
the conversation in the queue within a second of the customer's message being acknowledged,
opens it (the picture shows, fetched with the key), claims it and replies; the reply shows in the
widget; the customer's markup shows as text in the console and the bot stays silent while the
agent holds it; handed back, the bot answers the next message. The key is in no URL the page
asked for, and in sessionStorage only. Two consoles claiming one conversation: one wins, the
other says another agent took it."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from adapters.memory.redis_keys import RedisKeyStore
from assistant.server import web
from assistant.server.auth_routes import make_key
from tests.support.browser import ARTIFACTS, HostPage, PageRecord, WidgetPage, shot
from tests.support.server import ServerProcess, link_prepared_models, serve_env
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SECRET = "test-server-secret-agent-console-0123456789"
PAGE = (
    "<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>{embed}</body></html>"
)
MARKUP = '<img src=x onerror="window.__x=1">'
HELD_NOTICE = "A person from our team will answer you here shortly."

#: Set in the widget's page: when the customer's message with this text was acknowledged (its
#: bubble got the stored item's id), on the wall clock both pages share.
ACK_PROBE = """(text) => {
  const thread = document.querySelector("assistant-widget").shadowRoot.querySelector(".thread");
  window.__ackAt = null;
  const check = () => {
    if (window.__ackAt !== null) return;
    for (const node of thread.querySelectorAll(".msg.user[data-id]")) {
      if (node.querySelector(".body").textContent === text) window.__ackAt = Date.now();
    }
  };
  new MutationObserver(check).observe(thread, {childList: true, subtree: true, attributes: true});
}"""
#: Set in the console's page: when each conversation first showed in the queue.
QUEUE_PROBE = """() => {
  window.__seenAt = {};
  const list = document.getElementById("queue-list");
  new MutationObserver(() => {
    for (const node of list.querySelectorAll(".entry[data-id]")) {
      const id = node.getAttribute("data-id");
      if (!(id in window.__seenAt)) window.__seenAt[id] = Date.now();
    }
  }).observe(list, {childList: true, subtree: true});
}"""


def _keys(redis_url: str) -> dict[str, str]:
    import redis.asyncio as aioredis

    async def make() -> dict[str, str]:
        client = aioredis.from_url(redis_url, decode_responses=True)
        try:
            await client.flushdb()
            store, pepper = RedisKeyStore(client), SECRET.encode()
            made = {}
            for name, scopes in (("agent", ("agent",)), ("agent2", ("agent",)),
                                 ("client", ("client",))):  # fmt: skip
                _, made[name] = await make_key(store, pepper, "acme", "secret", scopes, (), name)
            return made
        finally:
            await client.aclose()

    return asyncio.run(make())


async def _publishable(redis_url: str, origin: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        store = RedisKeyStore(client)
        _, key = await make_key(store, SECRET.encode(), "acme", "publishable", (), (origin,), "")
    finally:
        await client.aclose()
    return key


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, redis_server):
    """Workers A (the customer's) and B (the agents') on one Redis, a shop page embedding the
    widget from A with a publishable key, and the agents' keys."""
    keys = _keys(redis_server.url)
    base = {"ASSISTANT_REDIS_URL": redis_server.url, "ASSISTANT_LLM__ADAPTER": "scripted",
            "ASSISTANT_LLM__TOKEN_DELAY_S": "0.01", "ASSISTANT_AUTH__OPEN": "false",
            "ASSISTANT_AUTH__SECRET": SECRET}  # fmt: skip
    a_dir, b_dir = tmp_path_factory.mktemp("worker-a"), tmp_path_factory.mktemp("worker-b")
    link_prepared_models(a_dir)  # the image labeller the scripted model reads pictures by
    pages: dict[str, str] = {}
    with HostPage(pages) as shop, ThreadPoolExecutor(2) as pool:
        keys["publishable"] = asyncio.run(_publishable(redis_server.url, shop.origin))
        a, b = ServerProcess(serve_env(a_dir, **base)), ServerProcess(serve_env(b_dir, **base))
        try:
            list(pool.map(lambda server: server.start(), (a, b)))
            embed = web.snippet(a.base_url).replace(
                " async>", f' data-key="{keys["publishable"]}" async>'
            )
            pages["/shop"] = PAGE.format(embed=embed)
            yield {"a": a, "b": b, "shop": shop, "keys": keys}
        finally:
            list(pool.map(lambda server: server.stop(), (a, b)))


class Console:
    """The agent console in a browser context, as an agent uses it."""

    def __init__(self, context, server: ServerProcess) -> None:
        self.page = context.new_page()
        self.record = PageRecord(self.page)
        self.server = server

    def sign_in(self, key: str) -> Console:
        self.page.goto(self.server.url("/agent"))
        self.page.get_by_label("Agent key").fill(key)
        self.page.get_by_label("Agent key").press("Enter")
        expect(self.page.locator("#queue-feed")).to_have_text("Live", timeout=30_000)
        return self

    def entry(self, session_id: str):
        return self.page.locator(f'#queue-list .entry[data-id="{session_id}"]')

    def history(self, text: str):
        return self.page.locator("#history .msg", has_text=text)

    def state(self):
        return self.page.locator("#conversation-state")


def picture() -> bytes:
    pixels = np.zeros((240, 320, 3), np.uint8)
    pixels[:, :160] = (220, 40, 40)
    pixels[:, 160:] = (40, 40, 220)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def customer_turn_done(widget: WidgetPage, text: str) -> None:
    """The customer's message was acknowledged and the response to it (if any) is over."""
    widget.wait(
        """(text) => {
          const root = document.querySelector("assistant-widget").shadowRoot;
          const sent = [...root.querySelectorAll(".msg.user[data-id] .body")]
            .some((node) => node.textContent === text);
          const status = AssistantWidget.status();
          return sent && !status.streaming && status.pending === 0;
        }""",
        text,
    )


def test_a_customer_on_a_and_an_agent_in_the_console_on_b(deployment, browser, tmp_path):
    a, b, shop, keys = (deployment[k] for k in ("a", "b", "shop", "keys"))
    customer_context = browser.new_context(viewport={"width": 1280, "height": 800})
    agent_context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        console = Console(agent_context, b).sign_in(keys["agent"])
        console.page.evaluate(QUEUE_PROBE)
        widget = WidgetPage(customer_context.new_page())
        widget.goto(shop.url("/shop"))
        widget.open()

        # a picture first, answered by the bot (the scripted model reads its label)
        image = tmp_path / "screenshot.png"
        image.write_bytes(picture())
        widget.page.locator("input[type=file]").set_input_files(str(image))
        expect(widget.page.locator(".attachment img")).to_have_count(1)
        widget.type("Here is my screenshot")
        [first] = widget.wait_replies(1)
        assert first.startswith("You said: [Image 1:") and first.endswith("Here is my screenshot")
        session_id = widget.status()["sessionId"]

        # the customer asks for a human on A; the console on B has it within a second
        asked = "I want to talk to a human"
        widget.page.evaluate(ACK_PROBE, asked)
        widget.type(asked)
        acked_at = widget.wait("() => window.__ackAt")
        remaining_ms = max(1.0, 1000 - (time.time() * 1000 - acked_at))
        expect(console.entry(session_id)).to_be_visible(timeout=remaining_ms)
        seen_at = console.page.evaluate("(id) => window.__seenAt[id]", session_id)
        within_s = (seen_at - acked_at) / 1000
        _note("queue_within_s", within_s)
        assert within_s < 1.0, within_s
        assert "Asked for a person" in console.entry(session_id).inner_text()
        assert asked in console.entry(session_id).locator(".summary").inner_text()
        shot(console.page, "console-queue")

        # the agent opens it: the whole history, the picture fetched with the key
        console.entry(session_id).click()
        expect(console.state()).to_have_text("Waiting for a person")
        expect(console.history(asked)).to_be_visible()
        expect(console.history("Here is my screenshot")).to_have_count(2)  # and the bot's echo
        picture_shown = console.page.locator('#history img[src^="blob:"]')
        expect(picture_shown).to_have_count(1)
        console.page.wait_for_function(
            "() => document.querySelector('#history img').naturalWidth > 0"
        )
        expect(console.page.get_by_label("Reply to the customer")).to_be_disabled()

        # claims it and replies; the reply reaches the customer's widget on A
        console.page.get_by_role("button", name="Claim").click()
        expect(console.state()).to_have_text("Held by you")
        reply_box = console.page.get_by_label("Reply to the customer")
        expect(reply_box).to_be_focused()
        reply_box.fill("Hello, this is Dana")
        reply_box.press("Enter")
        expect(console.history("Hello, this is Dana")).to_have_count(1)
        dana = widget.page.locator(".thread .msg", has_text="Hello, this is Dana")
        expect(dana).to_have_count(1, timeout=10_000)

        # the customer writes markup while held: text in the console, and no bot reply
        widget.type(MARKUP)
        expect(console.history(MARKUP)).to_have_count(1)
        customer_turn_done(widget, MARKUP)
        assert console.page.evaluate("() => window.__x") is None
        assert console.page.locator("#history img").count() == 1  # only the picture
        assert console.history(MARKUP).locator(".text").inner_text() == MARKUP
        replies = widget.page.locator(".thread .msg.assistant").all_inner_texts()
        assert not [r for r in replies if "You said:" in r and "onerror" in r], replies
        assert console.history("You said:").count() == 1  # the first picture's reply only
        shot(console.page, "console-held")

        # handed back: the bot answers the next message (in the widget, and live in the console)
        console.page.get_by_role("button", name="Hand back to the bot").click()
        expect(console.state()).to_have_text("With the bot")
        expect(console.entry(session_id)).to_have_count(0)
        widget.type("Are you back?")
        # the scripted model answers every message since its last reply: the held one's too
        bot = widget.page.locator(".thread .msg.assistant", has_text="Are you back?")
        bot = bot.filter(has_text="You said:")
        expect(bot).to_have_count(1, timeout=30_000)
        expect(console.history("Are you back?").filter(has_text="You said:")).to_have_count(1)

        # the key: in no URL, in sessionStorage only, sent as a bearer header
        key = keys["agent"]
        urls = console.record.urls()
        assert not [u for u in urls if key in u or "sk_" in u], urls
        api = [r for r in console.record.requests if "/v1/" in r.url]
        assert api and all(r.all_headers().get("authorization") == f"Bearer {key}" for r in api)
        assert {r.url.split("/")[2] for r in console.record.requests} == {b.base_url.split("/")[2]}
        assert console.page.evaluate("() => localStorage.length") == 0
        stored = console.page.evaluate("() => JSON.stringify(sessionStorage)")
        assert key in stored
        assert console.record.errors == []
        assert not [u for u in widget.record.urls() if "pk_" in u or "cs_" in u]

        console.page.get_by_role("button", name="Sign out").click()
        expect(console.page.get_by_label("Agent key")).to_be_visible()
        assert key not in console.page.evaluate("() => JSON.stringify(sessionStorage)")
    finally:
        customer_context.close()
        agent_context.close()


def _customer_asks(server: ServerProcess, key: str) -> str:
    """A customer session on ``server`` over the realtime socket that asks for a human."""
    from websockets.sync.client import connect

    with connect(f"{server.ws_url}/v1/realtime",
                 additional_headers={"Authorization": f"Bearer {key}"}) as ws:  # fmt: skip
        session_id = json.loads(ws.recv(timeout=30))["session"]["id"]
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "Can I talk to a human please"}]}  # fmt: skip
        ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        ws.send(json.dumps({"type": "response.create"}))
        while json.loads(ws.recv(timeout=30))["type"] != "response.done":
            pass
    return session_id


def test_two_consoles_claim_one_conversation_one_wins(deployment, browser):
    a, b, keys = deployment["a"], deployment["b"], deployment["keys"]
    wide = browser.new_context(viewport={"width": 1280, "height": 800})
    narrow = browser.new_context(viewport={"width": 400, "height": 800})
    try:
        first = Console(wide, b).sign_in(keys["agent"])
        second = Console(narrow, a).sign_in(keys["agent2"])  # the other worker, a phone's width
        session_id = _customer_asks(a, keys["client"])
        for console in (first, second):
            expect(console.entry(session_id)).to_be_visible(timeout=10_000)
            console.entry(session_id).click()
            expect(console.state()).to_have_text("Waiting for a person")
        assert second.page.locator("#queue").is_hidden()  # narrow: the conversation in its place
        overflow = second.page.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= 400, overflow
        shot(second.page, "console-narrow")

        claims = [c.page.get_by_role("button", name="Claim") for c in (first, second)]
        for claim in claims:  # both pressed before either answer is read
            claim.dispatch_event("click")
        states = [c.state() for c in (first, second)]
        for state in states:
            expect(state).to_have_text(re.compile(r"^Held by "), timeout=10_000)
        held = [c for c in (first, second) if c.state().inner_text() == "Held by you"]
        lost = [c for c in (first, second) if c.state().inner_text() != "Held by you"]
        assert len(held) == 1 and len(lost) == 1, [s.inner_text() for s in states]
        winner, loser = held[0], lost[0]
        expect(loser.page.locator("#error")).to_contain_text("Another agent took it")
        assert "conversation_status_conflict" in loser.page.locator("#error").inner_text()
        expect(loser.page.get_by_label("Reply to the customer")).to_be_disabled()
        expect(winner.page.get_by_label("Reply to the customer")).to_be_enabled()
        expect(loser.entry(session_id)).to_have_count(0)  # held by another: out of its queue
        shot(loser.page, "console-lost-claim")
        loser.page.keyboard.press("Escape")  # closes the conversation: back to the queue
        expect(loser.page.locator("#queue")).to_be_visible()
        expect(loser.page.locator("#queue-title")).to_be_focused()
    finally:
        wide.close()
        narrow.close()


def _note(name: str, value: float) -> None:
    """A measured figure, kept beside the screenshots (``test-artifacts/browser/``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "agent-console.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures.setdefault(name, []).append(round(value, 4))
    path.write_text(json.dumps(figures, indent=1))


def test_a_refused_key_is_said_and_the_form_comes_back(deployment, context):
    b, keys = deployment["b"], deployment["keys"]
    page = context.new_page()
    page.goto(b.url("/agent"))
    box = page.get_by_label("Agent key")
    for key, words in (
        ("sk_0123456789abcdef_not-a-key", "The key was refused: the API key is not valid (inv"),
        (keys["client"], "needs the agent scope"),
    ):
        box.fill(key)
        box.press("Enter")
        expect(page.locator("#error")).to_contain_text(words)
        expect(box).to_be_visible()
        expect(box).to_be_focused()
        assert page.evaluate("() => sessionStorage.length") == 0  # a refused key is forgotten
    expect(page.locator("#console")).to_be_hidden()


def test_dropped_feeds_resume_from_their_last_seq(deployment, context):
    """The queue's feed and the open conversation's, cut by a network drop: each opens again from
    the last seq it had, and what happened meanwhile shows (a new conversation, another agent's
    claim)."""
    a, b, keys = deployment["a"], deployment["b"], deployment["keys"]
    other = httpx.Client(base_url=b.base_url, headers={"Authorization": f"Bearer {keys['agent2']}"})
    with TcpProxy(b.port) as proxy, other:
        console = Console(context, proxy).sign_in(keys["agent"])
        first = _customer_asks(a, keys["client"])
        expect(console.entry(first)).to_be_visible(timeout=10_000)
        console.entry(first).click()
        expect(console.state()).to_have_text("Waiting for a person")
        expect(console.page.locator("#conversation-feed")).to_have_text("Live")
        last = other.get("/v1/conversations", params={"status": "waiting_human"}).json()["last_seq"]

        proxy.down()  # the network drops under the console's open streams
        expect(console.page.locator("#queue-feed")).to_have_text("Reconnecting…")
        expect(console.page.locator("#conversation-feed")).to_have_text("Reconnecting…")
        second = _customer_asks(a, keys["client"])  # meanwhile: a new one waits,
        assert other.post(f"/v1/conversations/{first}/claim").status_code == 200  # one is taken
        proxy.up()
        expect(console.entry(second)).to_be_visible(timeout=20_000)
        expect(console.state()).to_have_text(re.compile(r"^Held by agent:"), timeout=20_000)
        expect(console.entry(first)).to_have_count(0)  # another's now: out of this queue
        expect(console.page.locator("#queue-feed")).to_have_text("Live")

    queue = [r.url for r in console.record.requests if "/v1/queue/events" in r.url]
    assert len(queue) >= 2 and queue[0] != queue[-1]
    assert all(url.endswith(f"/v1/queue/events?after={last}") for url in queue[1:]), queue
    followed = [r.url for r in console.record.requests if f"/{first}/events" in r.url]
    assert len(followed) >= 2 and len(set(followed)) == 1  # nothing came before the drop
