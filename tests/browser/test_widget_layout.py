"""The widget on other people's pages: a customer's page on another origin (one with aggressive
global CSS looks the same, by the size of every part), a 390 x 844 phone, and the keyboard."""

from __future__ import annotations

import pytest

from assistant.server import web
from tests.support.browser import HostPage, WidgetPage, shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]

AGGRESSIVE = "<style>* { all: unset !important; font-size: 40px !important; }</style>"
PAGE = "<!doctype html><html><head><title>Shop</title>{style}</head><body><h1>Shop</h1>{embed}</body></html>"

#: The size and place of each part of the open widget, and its text's size.
MEASURE = """() => {
  const root = document.querySelector('assistant-widget').shadowRoot;
  const box = (selector) => {
    const r = root.querySelector(selector).getBoundingClientRect();
    return [r.x, r.y, r.width, r.height].map((v) => Math.round(v * 2) / 2);
  };
  const font = (selector) => getComputedStyle(root.querySelector(selector)).font;
  return {
    launcher: box('.launcher'), panel: box('.panel'), head: box('.head'), textarea: box('textarea'),
    send: box('.send'), user: box('.msg.user'), reply: box('.msg.assistant[data-id]:not(.welcome)'),
    fonts: [font('.title'), font('textarea'), font('.msg.user .body'), font('.msg.assistant .body')],
  };
}"""


@pytest.fixture(scope="module")
def host_pages(scripted_server):
    embed = web.snippet(scripted_server.base_url)
    pages = {
        "/plain": PAGE.format(style="", embed=embed),
        "/aggressive": PAGE.format(style=AGGRESSIVE, embed=embed),
    }
    with HostPage(pages) as host:
        yield host


def test_aggressive_host_css_changes_nothing_in_the_widget(scripted_server, browser, host_pages):
    measured = {}
    for name in ("plain", "aggressive"):
        context = browser.new_context(viewport={"width": 1280, "height": 800})  # its own storage
        try:
            widget = WidgetPage(context.new_page())
            widget.goto(host_pages.url(f"/{name}"))
            widget.open()
            widget.type("Hello from a shop")
            assert widget.wait_replies(1) == ["You said: Hello from a shop"]
            measured[name] = widget.page.evaluate(MEASURE)
            shot(widget.page, f"host-{name}")
            assert widget.foreign_requests(scripted_server.base_url, host_pages.origin) == []
        finally:
            context.close()
    assert measured["aggressive"] == measured["plain"]
    assert measured["plain"]["panel"][2:] == [380, 600]
    assert "40px" not in " ".join(measured["aggressive"]["fonts"])


def test_a_phone_gets_a_full_screen_panel_with_16_px_inputs(scripted_server, browser):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
        has_touch=True,
    )  # fmt: skip
    try:
        widget = WidgetPage(context.new_page())
        widget.goto(scripted_server.url("/"))
        widget.page.locator(".launcher").tap()
        panel = widget.page.locator(".panel")
        panel.wait_for(state="visible")
        assert panel.bounding_box() == {"x": 0, "y": 0, "width": 390, "height": 844}
        size = widget.page.locator("textarea").evaluate("(node) => getComputedStyle(node).fontSize")
        assert float(size.removesuffix("px")) >= 16  # no zoom on focus in mobile browsers
        widget.page.locator("textarea").fill("Hi from a phone")
        widget.page.locator(".send").tap()
        assert widget.wait_replies(1) == ["You said: Hi from a phone"]
        shot(widget.page, "phone-open")
        widget.page.locator(".close").tap()
        panel.wait_for(state="hidden")
    finally:
        context.close()


ACTIVE = """() => {
  const root = document.querySelector('assistant-widget').shadowRoot;
  const node = root.activeElement;
  return node ? {cls: node.className, tag: node.tagName, inPanel: root.querySelector('.panel').contains(node)}
              : null;
}"""


def test_keyboard_and_screen_reader_use(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    page = widget.page
    for _ in range(5):  # past the page's own focusable parts (its scrolling code block)
        page.keyboard.press("Tab")
        if (page.evaluate(ACTIVE) or {}).get("cls") == "launcher":
            break
    assert page.evaluate(ACTIVE)["cls"] == "launcher"
    page.keyboard.press("Enter")
    widget.page.locator(".panel").wait_for(state="visible")
    assert page.evaluate(ACTIVE)["tag"] == "TEXTAREA"
    assert page.locator(".launcher").get_attribute("aria-expanded") == "true"
    panel = page.locator(".panel")
    assert panel.get_attribute("role") == "dialog" and panel.get_attribute("aria-modal") == "true"
    assert page.locator(".thread").get_attribute("role") == "log"
    assert page.locator(".title").get_attribute("id") == panel.get_attribute("aria-labelledby")

    seen = set()
    for key in ["Tab"] * 8 + ["Shift+Tab"] * 8:  # round the panel both ways: focus stays in it
        page.keyboard.press(key)
        active = page.evaluate(ACTIVE)
        assert active is not None and active["inPanel"], (key, active)
        seen.add(active["cls"] or active["tag"])
    assert {"reset", "close", "thread", "attach", "TEXTAREA", "mic", "send"} <= seen

    page.keyboard.press("Escape")
    panel.wait_for(state="hidden")
    assert page.evaluate(ACTIVE)["cls"] == "launcher"
    assert page.locator(".launcher").get_attribute("aria-expanded") == "false"
