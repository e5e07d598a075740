"""``GET /widget.js``, ``GET /`` and the licences, in process: the widget's caching and version,
its bundle's one closure, the demo page's CSP, and the README's embed snippet being the page's."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assistant.config import Settings
from assistant.server import web
from assistant.server.app import create_app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(Settings()))  # no lifespan: these routes need no components


def test_widget_js_is_versioned_and_cacheable(client):
    first = client.get("/widget.js", headers={"Accept-Encoding": "identity"})
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    version = first.headers["etag"].strip('"')
    assert re.fullmatch(r"[0-9a-f]{16}", version)
    assert f'var VERSION = "{version}"' in first.text
    assert first.headers["cache-control"] == "public, max-age=300"
    assert first.headers["access-control-allow-origin"] == "*"

    again = client.get("/widget.js", headers={"If-None-Match": f'"{version}"'})
    assert again.status_code == 304 and again.content == b""
    pinned = client.get(f"/widget.js?v={version}")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = client.get("/widget.js?v=0000000000000000")
    assert stale.headers["cache-control"] == "public, max-age=300"

    raw = client.get("/widget.js", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.content == first.content  # httpx decoded it: the same file


def test_the_bundle_is_one_closure_with_this_servers_limits():
    settings = Settings(vision={"max_image_bytes": 123_456}, server={"max_event_bytes": 654_321})
    widget = web.build_widget(web.widget_limits(settings))
    text = widget.body.decode()
    assert text.startswith("/*! assistant chat widget ")
    assert text.rstrip().endswith("})();")
    assert '"maxImageBytes":123456' in text and '"maxEventBytes":654321' in text
    assert "sourceMappingURL" not in text  # no request for a map, even from devtools
    assert gzip.decompress(widget.gzipped) == widget.body
    other = web.build_widget(web.widget_limits(Settings()))
    assert other.version != widget.version  # the limits are part of what it holds


def test_the_demo_page_embeds_the_widget_with_one_tag_under_a_strict_csp(client):
    page = client.get("/", headers={"Host": "chat.example:8443"})
    assert page.status_code == 200
    assert '<script src="http://chat.example:8443/widget.js" async></script>' in page.text
    assert page.text.count("<script src=") == 1
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert csp.count("'sha256-") == 2  # the settings script and the page's own style
    assert "{{" not in page.text


def test_the_readme_shows_the_demo_pages_snippet():
    assert web.snippet("http://127.0.0.1:8000") in README


def test_the_licences_of_the_vendored_libraries_are_served(client):
    text = client.get("/widget.licenses.txt").text
    assert "marked 18.2.1 (MIT)" in text and "DOMPurify 3.5.0" in text
    assert "Mozilla Public License Version 2.0" in text and "Apache License" in text
