"""A support bot's sources in the widget, on a real server (the scripted model, whose every reply
cites "[1]"; the real all-MiniLM-L6-v2; the test corpus and a page with markup in its words
uploaded through ``POST /v1/knowledge/help/documents``; ``ASSISTANT_BOT__KNOWLEDGE_BASE=help``):
a grounded reply's sources are numbered footnotes under it (title, heading, page, quote), its
``[1]`` links to its footnote, a document's markup is shown as text and never run, an
out-of-scope question gets the fallback marked unanswered, and a reload shows all of it again
from the stored history."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.browser import shot
from tests.support.server import ServerProcess, serve_env

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"
REPLY = "Refunds take 5 business days [1]."
#: A page whose title, heading and text hold markup: the footnote must show it as text.
HOSTILE = (
    b"# Gift wrap <img src=x onerror=\"alert('title')\">\n\n"
    b"## Wrapping <b>paper</b> <script>alert('heading')</script>\n\n"
    b"Gift wrapping GW-4417 costs 3 GBP per parcel <img src=y onerror=\"alert('quote')\">.\n"
)
FOOTNOTES = ".msg.assistant:not(.welcome) .sources li"


@pytest.fixture(scope="module")
def bot_server(tmp_path_factory):
    env = serve_env(
        tmp_path_factory.mktemp("widget-bot"), ASSISTANT_LLM__ADAPTER="scripted",
        ASSISTANT_LLM__MODEL=REPLY, ASSISTANT_BOT__KNOWLEDGE_BASE="help", HF_HUB_OFFLINE="1",
    )  # fmt: skip
    with ServerProcess(env) as server:
        files = [("file", (p.name, p.read_bytes())) for p in sorted(CORPUS.glob("*.*"))
                 if p.suffix != ".jsonl"]  # fmt: skip
        for batch in (files, [("file", ("giftwrap.md", HOSTILE))]):  # 5 files a request at most
            answer = httpx.post(
                server.url("/v1/knowledge/help/documents"), files=batch, timeout=300
            )
            assert answer.status_code == 200, answer.text
        yield server


def footnotes(widget) -> list[dict[str, str]]:
    return widget.page.evaluate(
        """(selector) => [...document.querySelector('assistant-widget').shadowRoot
             .querySelectorAll(selector)].map((li) => ({
               number: li.value, text: li.textContent,
               title: li.querySelector('.source-title').textContent,
               where: (li.querySelector('.source-where') || {}).textContent || '',
               quote: (li.querySelector('.source-quote') || {}).textContent || '',
               elements: [...li.querySelectorAll('*')].map((n) => n.tagName.toLowerCase()),
             }))""",
        FOOTNOTES,
    )


def test_sources_as_footnotes_the_fallback_unanswered_and_both_again_on_resume(bot_server, widget):
    widget.goto(bot_server.url("/"))
    widget.open()
    widget.type("How long until my refund arrives?")
    widget.wait_replies(1)
    reply = widget.page.locator(widget.REPLY).first
    expect(reply.locator(".body")).to_have_text(REPLY)
    [note] = footnotes(widget)
    assert note["number"] == 1 and note["title"] == "Returns and refunds"
    assert note["where"] == "Refund times"  # the heading path without the title
    assert "5 business days" in note["quote"]
    assert note["elements"] == ["span", "span", "q"]
    marker = reply.locator(".body a.cite")
    expect(marker).to_have_text("[1]")
    marker.click()
    focused = widget.page.evaluate(
        "() => document.querySelector('assistant-widget').shadowRoot.activeElement.id"
    )
    assert focused == marker.get_attribute("data-target")
    assert widget.page.url == bot_server.url("/")  # the page's own URL is not changed

    widget.type("How much is gift wrapping GW-4417?")
    widget.wait_replies(2)
    hostile = footnotes(widget)[-1]
    assert hostile["title"] == "Gift wrap <img src=x onerror=\"alert('title')\">"
    assert hostile["where"] == "Wrapping <b>paper</b> <script>alert('heading')</script>"
    assert "<img src=y" in hostile["quote"]
    assert hostile["elements"] == ["span", "span", "q"]  # text only: no img, b or script

    widget.type("What is the capital of France?")
    widget.wait_replies(3)
    fallback = widget.page.locator(widget.REPLY).nth(2)
    expect(fallback).to_have_class(re.compile(r"\bunanswered\b"))
    expect(fallback).to_have_attribute("data-status", "unanswered")
    assert fallback.locator(".sources").count() == 0
    assert fallback.locator(".body").inner_text().startswith("I can't find that in our help pages")
    shot(widget.page, "citations")
    events = widget.events("message")
    assert [e["status"] for e in events] == ["completed", "completed", "unanswered"]
    assert events[0]["annotations"][0]["filename"] == "returns.md"

    widget.page.reload()
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    widget.open()
    widget.wait_replies(3)
    again = footnotes(widget)
    assert [(n["title"], n["quote"]) for n in again] == [
        ("Returns and refunds", note["quote"]), (hostile["title"], hostile["quote"])
    ]  # fmt: skip
    assert widget.page.locator(".msg.assistant.unanswered").count() == 1
    assert widget.page.locator(".msg.assistant .body a.cite").count() == 2
    assert widget.record.dialogs == [] and widget.record.errors == []
