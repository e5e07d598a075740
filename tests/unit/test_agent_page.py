"""``GET /agent`` and its assets, in process: the page's headers and CSP (its own origin only, no
inline code, images from blob: URLs), the script's one closure and revalidation, and the rules
the console's sources keep: stored text is set as text (no HTML sink), the key goes in a header
(no EventSource, no localStorage, nothing logged)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from assistant.config import Settings
from assistant.server import agent_page
from assistant.server.app import create_app


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(Settings()))  # no lifespan: these routes need no components


def test_the_page_is_served_under_a_strict_csp(client):
    page = client.get("/agent")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert csp.startswith("default-src 'none';")
    for directive in (
        "script-src 'self';",
        "style-src 'self';",
        "img-src 'self' blob:;",
        "connect-src 'self';",
        "form-action 'none';",
        "frame-ancestors 'none'",
    ):
        assert directive in csp, csp
    assert "unsafe" not in csp and "data:" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.findall(r"<script[^>]*>(.*?)</script>", page.text, re.S) == [""]  # no inline code
    assert "<style" not in page.text and " style=" not in page.text
    [key_input] = re.findall(r"<input[^>]*>", page.text)
    assert 'type="password"' in key_input and "name=" not in key_input  # never submitted


def test_the_script_is_one_closure_revalidated_by_its_version(client):
    console = agent_page.build_console()
    script = client.get(f"/agent/console.js?v={console.version}")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    assert script.headers["etag"] == f'"{console.version}"'
    assert script.text.startswith('/*! assistant agent console */\n(function () {\n"use strict";')
    assert script.text.rstrip().endswith("})();")
    assert f"/agent/console.js?v={console.version}" in client.get("/agent").text
    again = client.get("/agent/console.js", headers={"If-None-Match": f'"{console.version}"'})
    assert again.status_code == 304
    styles = client.get("/agent/console.css")
    assert styles.headers["content-type"] == "text/css; charset=utf-8" and ".entry" in styles.text
    assert client.get("/agent/icon.svg").headers["content-type"] == "image/svg+xml"


def test_the_sources_set_text_only_and_keep_the_key_in_headers():
    script = agent_page.build_console().script.decode()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "EventSource",
        "localStorage",
        "console.",
        "location.search",
    ):
        assert sink not in script, sink
    assert '"Authorization"] = "Bearer " + key' in script
    assert "sessionStorage" in script
