"""The widget with a publishable key on a server that is not open: a customer's page on another
origin embeds it with ``data-key="pk_..."``; the widget mints client secrets (Origin-checked),
renews them before they expire, binds them to the session, and never puts one in a URL. A page
from an origin the key does not allow gets no chat, and says so in words."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from assistant.server import web
from tests.support.browser import HostPage
from tests.support.server import ServerProcess, serve_env

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGE = (
    "<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>{embed}</body></html>"
)
SECRETS = "/v1/realtime/client_secrets"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server that needs keys, a shop page allowed by a publishable key, and a page from an
    origin the key does not name: (server, shop, other)."""
    data_dir = tmp_path_factory.mktemp("widget-keys")
    env = serve_env(data_dir, ASSISTANT_LLM__ADAPTER="scripted", ASSISTANT_AUTH__OPEN="false",
                    ASSISTANT_LLM__TOKEN_DELAY_S="0.04")  # fmt: skip
    pages: dict[str, str] = {}
    with HostPage(pages) as shop, HostPage(pages) as other:
        # Made before the server starts: `assistant keys` beside a running server does not find
        # its redis-server (its process title hides the --port it was started with).
        made = subprocess.run(
            [sys.executable, "-m", "assistant", "keys", "create", "--tenant", "default",
             "--publishable", "--origin", shop.origin],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        key = made.stdout.strip()
        assert made.returncode == 0 and key.startswith("pk_"), made.stderr
        with ServerProcess(env) as server:
            embed = web.snippet(server.base_url).replace(
                " async>", f' data-key="{key}" data-client-secret-ttl="5" async>'
            )
            pages["/shop"] = PAGE.format(embed=embed)
            yield server, shop, other, key


def secret_requests(widget):
    return [r for r in widget.record.requests if r.url.endswith(SECRETS) and r.method == "POST"]


def test_a_publishable_key_from_the_shop_page(keyed, widget):
    server, shop, _, key = keyed
    widget.goto(shop.url("/shop"))
    widget.open()
    widget.type("hello with a key")
    assert widget.wait_replies(1) == ["You said: hello with a key"]
    session_id = widget.status()["sessionId"]

    first = secret_requests(widget)[0]
    assert first.all_headers()["authorization"] == f"Bearer {key}"
    assert json.loads(first.post_data)["expires_after"] == {"seconds": 5}
    # A secret of 5 s is renewed before it runs out, bound to the session by then.
    widget.wait(f"() => performance.getEntriesByType('resource')"
                f".filter((e) => e.name.endsWith('{SECRETS}')).length >= 2")  # fmt: skip
    renewed = secret_requests(widget)[1]
    assert json.loads(renewed.post_data)["session_id"] == session_id
    secret = renewed.response().json()["value"]
    assert secret.startswith("cs_")

    widget.page.reload()  # the history is read with a client secret as bearer
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    widget.wait_replies(1)
    [read] = [
        r for r in widget.record.requests if r.url.endswith(f"/sessions/{session_id}/messages")
    ]
    assert read.all_headers()["authorization"].startswith("Bearer cs_")
    urls = widget.record.urls()
    assert not [u for u in urls if "cs_" in u or "pk_" in u]  # never a secret or key in a URL
    assert widget.foreign_requests(server.base_url, shop.origin) == []
    first_socket, *resumed = widget.record.sockets  # a new session, then that session resumed
    assert first_socket.endswith("/v1/realtime") and resumed
    resumed_at = f"/v1/realtime?session_id={session_id}"  # and &after=, the last event seen
    assert all(s.endswith(resumed_at) or f"{resumed_at}&after=" in s for s in resumed)


def test_a_page_the_key_does_not_allow_gets_words_not_a_chat(keyed, widget):
    _, _, other, _ = keyed
    widget.goto(other.url("/shop"))  # the same page and key, from another origin
    widget.open()
    widget.type("hello?")
    alert = widget.page.locator(".alert")
    expect(alert).to_be_visible()
    assert alert.inner_text() == "The chat is not available on this page."  # words, not a code
    assert widget.events("error")[-1]["code"] == "origin_not_allowed"
    assert widget.status()["connected"] is False
    assert widget.replies() == []
