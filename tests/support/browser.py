"""Real Chromium for the widget's tests: Debian's ``chromium`` (``/usr/bin/chromium``, installed by
the set-up) driven by Playwright for Python through ``executable_path`` (Playwright's own browser
download is not reachable here). Each launch gets a fresh profile; a test takes a new context.

``PageRecord`` keeps what a page did (every request, console errors, uncaught errors, dialogs
such as an ``alert()``, the frames its WebSockets sent); ``HostPage`` serves HTML pages from
another origin on loopback (a customer's site embedding the widget); ``shot`` saves a screenshot
under ``test-artifacts/browser/`` (not committed).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"

#: Set before the widget loads: when `assistant:ready` fired (ms since navigation started), and the
#: window's own property names then, to tell any global the widget adds.
READY_PROBE = """
window.__probe = {globals: Object.getOwnPropertyNames(window), readyAt: null, events: []};
["ready", "opened", "closed", "message", "error"].forEach(function (name) {
  window.addEventListener("assistant:" + name, function (event) {
    if (name === "ready") window.__probe.readyAt = performance.now();
    window.__probe.events.push({name: name, detail: event.detail});
  });
});
"""


def require_chromium() -> None:
    """Chromium and Playwright are part of the set-up: their absence fails a test, not skips it."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing; the set-up installs it (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed; the set-up installs it (requirements.lock)")


@contextlib.contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """A launched Chromium (Playwright ``Browser``), closed on every way out."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


class PageRecord:
    """What a page did, recorded from the moment it is attached."""

    def __init__(self, page: Any) -> None:
        self.requests: list[Any] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.frames_sent: list[str] = []
        self.sockets: list[str] = []  # the URLs of the WebSockets it opened
        page.on("request", lambda request: self.requests.append(request))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.on("dialog", self._dialog)
        page.on("websocket", self._websocket)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _websocket(self, socket: Any) -> None:
        self.sockets.append(socket.url)
        socket.on("framesent", lambda payload: self.frames_sent.append(payload))

    def urls(self) -> list[str]:
        """Every URL the page asked for: its requests, and its WebSockets' as http(s)."""
        sockets = [url.replace("ws", "http", 1) for url in self.sockets]
        return [request.url for request in self.requests] + sockets

    def events_sent(self, kind: str) -> list[dict[str, Any]]:
        """The JSON events of ``kind`` the page's sockets sent (binary frames are skipped)."""
        events = []
        for frame in self.frames_sent:
            if isinstance(frame, str):
                event = json.loads(frame)
                if event.get("type") == kind:
                    events.append(event)
        return events


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


class HostPage:
    """HTML pages served from ``http://127.0.0.1:<port>`` (another origin than the assistant's
    server): ``pages`` maps a path to its HTML. A context manager; the thread ends on exit."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = pages
        served = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = served.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write((body or "not found").encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.origin + path

    def __enter__(self) -> HostPage:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


#: Watches the widget's thread from the page: whether the typing indicator came before the first
#: token, each distinct text of the streaming reply (one per frame it was drawn in), and each
#: text of a live transcript.
WATCH_THREAD = """() => {
  const thread = document.querySelector("assistant-widget").shadowRoot.querySelector(".thread");
  const seen = window.__watch = {typingBeforeText: null, texts: [], partials: []};
  const last = (list) => list[list.length - 1];
  new MutationObserver(() => {
    if (thread.querySelector(".typing") && seen.texts.length === 0) seen.typingBeforeText = true;
    const streaming = thread.querySelector(".msg.streaming .body");
    if (streaming && streaming.textContent && last(seen.texts) !== streaming.textContent) {
      if (seen.typingBeforeText === null) seen.typingBeforeText = false;
      seen.texts.push(streaming.textContent);
    }
    const partial = thread.querySelector(".msg.partial .body");
    if (partial && last(seen.partials) !== partial.textContent) seen.partials.push(partial.textContent);
  }).observe(thread, {childList: true, subtree: true, characterData: true});
}"""


class WidgetPage:
    """The widget on a page, as a visitor uses it (Playwright's CSS selectors reach into its open
    shadow root)."""

    REPLY = ".msg.assistant[data-id]:not(.welcome):not(.streaming)"

    def __init__(self, page: Any) -> None:
        self.page = page
        self.record = PageRecord(page)
        page.add_init_script(READY_PROBE)

    def goto(self, url: str) -> WidgetPage:
        self.page.goto(url)
        self.wait("() => window.__probe && window.__probe.readyAt !== null")
        return self

    def wait(self, predicate: str, arg: Any = None, timeout_s: float = 60) -> Any:
        """Await a condition in the page (a JS function's source)."""
        return self.page.wait_for_function(
            predicate, arg=arg, timeout=timeout_s * 1000
        ).json_value()

    def status(self) -> dict[str, Any]:
        return self.page.evaluate("() => AssistantWidget.status()")

    def events(self, name: str) -> list[Any]:
        return [
            e["detail"]
            for e in self.page.evaluate("() => window.__probe.events")
            if e["name"] == name
        ]

    def open(self) -> None:
        self.page.locator(".launcher").click()
        self.page.locator(".panel").wait_for(state="visible")

    def watch(self) -> None:
        self.page.evaluate(WATCH_THREAD)

    def watched(self) -> dict[str, Any]:
        return self.page.evaluate("() => window.__watch")

    def type(self, text: str) -> None:
        box = self.page.locator("textarea")
        box.fill(text)
        box.press("Enter")

    def replies(self) -> list[str]:
        return self.page.locator(self.REPLY).all_inner_texts()

    def wait_replies(self, count: int, timeout_s: float = 60) -> list[str]:
        self.wait(
            "([selector, count]) => document.querySelector('assistant-widget').shadowRoot"
            ".querySelectorAll(selector).length >= count",
            [self.REPLY, count], timeout_s,
        )  # fmt: skip
        return self.replies()

    def bubbles(self) -> list[tuple[str, str]]:
        """(role, text) of each message in the thread, the welcome and indicators left out."""
        found = self.page.evaluate(
            """() => [...document.querySelector('assistant-widget').shadowRoot
                 .querySelectorAll('.msg:not(.welcome):not(.typing)')]
                 .map((node) => [node.classList.contains('user') ? 'user' : 'assistant',
                                 node.querySelector('.body').textContent])"""
        )
        return [(role, text.strip()) for role, text in found]

    def foreign_requests(self, server: str, host: str | None = None) -> list[str]:
        """Requests to any origin but ``server`` (and the host page's own ``host``), other than
        data: and blob: URLs."""
        allowed = {server.rstrip("/"), (host or server).rstrip("/")}
        foreign = []
        for url in self.record.urls():
            if url.startswith(("data:", "blob:")):
                continue
            if "/".join(url.split("/")[:3]) not in allowed:
                foreign.append(url)
        return foreign
