"""The chat widget's routes: ``GET /widget.js`` (the widget in one file), ``GET /`` (the demo page,
which embeds it as a customer's page would) and ``GET /widget.licenses.txt`` (the licences of the
libraries it bundles).

widget.js is put together once, on its first request, from ``assistant/web/``: the vendored
marked and DOMPurify (each run with a ``module`` of its own, so neither becomes a global), the
constants (this server's image and event limits, the CSS, the mic's AudioWorklet source) and the
widget's sources in order, all inside one closure; its only global is ``window.AssistantWidget``.
Its version is the SHA-256 of what it holds (the ``ETag``): ``/widget.js`` is cached for 5
minutes and then revalidated (304 while unchanged), ``/widget.js?v=<version>`` for a year
(immutable). Clients that accept gzip get it compressed.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from assistant.config import Settings

router = APIRouter()

#: The widget's sources, in the order they are joined (each one a concern; see its header).
SOURCES = (
    "settings.js", "i18n.js", "markdown.js", "storage.js", "auth.js", "connection.js", "audio.js",
    "images.js", "view.js", "citations.js", "thread.js", "voice.js", "handoff.js", "controller.js",
    "api.js",
)  # fmt: skip
#: (the name the widget knows it by, file, version, licence, licence files) of each vendored library.
#: Copied unchanged from the npm registry's tarballs (``npm pack marked@18.2.1 dompurify@3.5.0``:
#: lib/marked.umd.js, sha256 of the tarball d66c5213...8e34b8ca; dist/purify.min.js, faa5f2bf...58ec20).
VENDORED = (
    ("marked", "marked.umd.js", "18.2.1", "MIT", ("marked.LICENSE",)),
    ("DOMPurify", "purify.min.js", "3.5.0", "Apache-2.0 or MPL-2.0",
     ("dompurify.LICENSE", "dompurify.LICENSE-MPL")),
)  # fmt: skip
_EMBED_START, _EMBED_END = "<!-- embed -->", "<!-- /embed -->"
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "public, max-age=300"


@dataclass(frozen=True)
class Widget:
    body: bytes
    gzipped: bytes
    version: str


def read_asset(name: str) -> str:
    return resources.files("assistant.web").joinpath(name).read_text(encoding="utf-8")


def _js(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def widget_limits(settings: Settings) -> dict[str, int]:
    """What the widget must fit an image into (it downscales in the browser before sending)."""
    from assistant.vision.images import ImageLimits

    return {
        "maxImageBytes": settings.vision.max_image_bytes,
        "maxImagePixels": settings.vision.max_image_pixels,
        "maxImageSide": ImageLimits().max_side,
        "maxEventBytes": settings.server.max_event_bytes,
    }


def build_widget(limits: dict[str, int]) -> Widget:
    vendor = []
    for name, file, _, _, _ in VENDORED:
        code = "\n".join(
            line for line in read_asset(f"vendor/{file}").splitlines()
            if not line.startswith("//# sourceMappingURL=")
        )  # fmt: skip
        vendor.append(
            "(function () { var module = {exports: {}}; var exports = module.exports; var define;\n"
            f"{code}\nvendor[{_js(name)}] = module.exports; }})();\n"
        )
    constants = (
        f"var LIMITS = {_js(limits)};\nvar CSS = {_js(read_asset('widget/styles.css'))};\n"
        f"var MIC_WORKLET = {_js(read_asset('widget/mic-worklet.js'))};\n"
    )
    sources = "".join(
        f"// ---- {name}\n{strip_comments(read_asset('widget/' + name))}\n" for name in SOURCES
    )
    inner = "".join(vendor) + constants + '(function () {\n"use strict";\n' + sources + "})();\n"
    version = hashlib.sha256(inner.encode()).hexdigest()[:16]
    credits = ", ".join(f"{name} {v} ({lic})" for name, _, v, lic, _ in VENDORED)
    banner = (
        f"/*! assistant chat widget {version} (Apache-2.0); it bundles {credits}: their licences "
        "are at /widget.licenses.txt on this server */\n"
    )
    body = f"{banner}(function () {{\nvar VERSION = {_js(version)};\nvar vendor = {{}};\n{inner}}})();\n"
    data = body.encode()
    return Widget(body=data, gzipped=gzip.compress(data, 9, mtime=0), version=version)


def strip_comments(source: str) -> str:
    """A source without its whole-line comments (the files' own documentation) and blank lines."""
    return "\n".join(
        line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("//")
    )


def licences() -> str:
    parts = ["Third-party libraries bundled in widget.js\n"]
    for name, _, version, licence, files in VENDORED:
        for file in files:
            text = read_asset(f"vendor/{file}")
            parts.append(f"\n==== {name} {version} ({licence}): {file}\n\n{text}")
    return "".join(parts)


def demo_page(server: str) -> tuple[str, str]:
    """The demo page for a server at ``server`` (scheme://host:port), and its CSP header (the
    page's inline script and style by their hashes; every request to its own origin only)."""
    template = read_asset("index.html")
    embed = _embed(template)
    safe = html.escape(server, quote=True)
    page = template.replace("{{snippet}}", html.escape(embed.replace("{{server}}", safe)))
    page = page.replace("{{server}}", safe)
    hashes = {kind: inline_hashes(page, kind) for kind in ("script", "style")}
    csp = (
        f"default-src 'none'; script-src 'self' {hashes['script']} blob:; "
        f"style-src 'self' {hashes['style']}; img-src 'self' data: blob:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, csp


def snippet(server: str) -> str:
    """The embed tags the demo page uses, for a server at ``server`` (the README shows them)."""
    return _embed(read_asset("index.html")).replace("{{server}}", server)


def _embed(template: str) -> str:
    return template.split(_EMBED_START, 1)[1].split(_EMBED_END, 1)[0].strip("\n")


def inline_hashes(page: str, tag: str) -> str:
    found = []
    for chunk in page.split(f"<{tag}>")[1:]:
        content = chunk.split(f"</{tag}>", 1)[0]
        digest = base64.b64encode(hashlib.sha256(content.encode()).digest()).decode()
        found.append(f"'sha256-{digest}'")
    return " ".join(found)


async def _widget(request: Request) -> Widget:
    state = request.app.state
    widget = getattr(state, "widget", None)
    if widget is None:
        widget = await asyncio.to_thread(build_widget, widget_limits(state.settings))
        state.widget = widget
    return widget


@router.api_route("/widget.js", methods=["GET", "HEAD"], include_in_schema=False)
async def widget_js(request: Request, v: str | None = None) -> Response:
    widget = await _widget(request)
    etag = f'"{widget.version}"'
    headers = {
        "ETag": etag,
        "Cache-Control": _IMMUTABLE if v == widget.version else _REVALIDATE,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = widget.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = widget.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


@router.get("/widget.licenses.txt", include_in_schema=False)
async def widget_licences() -> Response:
    text = await asyncio.to_thread(licences)
    return Response(text, media_type="text/plain; charset=utf-8",
                    headers={"Cache-Control": _REVALIDATE})  # fmt: skip


@router.get("/", include_in_schema=False)
async def demo(request: Request) -> Response:
    server = str(request.base_url).rstrip("/")
    page, csp = await asyncio.to_thread(demo_page, server)
    headers = {
        "Content-Security-Policy": csp, "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    }  # fmt: skip
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)
