"""The agent console's routes: ``GET /agent`` (the page), ``GET /agent/console.js`` and
``GET /agent/console.css`` (its code and look) and ``/agent/icon.svg``, for support agents with
an ``agent`` key.

The page works the agents' REST (``server.conversation_routes``) from the browser: the queue
(``GET /v1/conversations``, then ``GET /v1/queue/events`` live), a conversation's history and
events, claim, reply, hand back, resolve. console.js is put together once, on its first request,
from ``assistant/web/agent/``: the sources in order, inside one closure (no build step, no
framework, no global). Everything is same-origin, under a strict CSP: scripts and styles from
this server only (an inline one by its hash), ``connect-src 'self'``, ``img-src 'self' blob:``
(the history's images, fetched with the key and shown from ``blob:`` URLs). The key is sent in
``Authorization`` headers only (kept in the tab's ``sessionStorage``), never in a URL; the page
sends no referrer. ``Cache-Control: no-cache``: a browser asks again (304 while unchanged)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from assistant.server.web import inline_hashes, read_asset, strip_comments

router = APIRouter()

#: The console's sources, in the order they are joined (each one a concern; see its header).
SOURCES = ("view.js", "api.js", "feed.js", "signin.js", "queue.js", "history.js",
           "conversation.js", "main.js")  # fmt: skip

#: The page's icon (a browser asks for one; without it, a 404 on every load).
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<circle cx="8" cy="8" r="7" fill="#2563eb"/></svg>'
)
_HEADERS = {
    "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "Cross-Origin-Resource-Policy": "same-origin",
}  # fmt: skip


@dataclass(frozen=True)
class Console:
    page: str
    csp: str
    script: bytes
    styles: bytes
    version: str


def build_console() -> Console:
    sources = "".join(
        f"// ---- {name}\n{strip_comments(read_asset('agent/' + name))}\n" for name in SOURCES
    )
    script = f'/*! assistant agent console */\n(function () {{\n"use strict";\n{sources}}})();\n'
    styles = read_asset("agent/styles.css")
    version = hashlib.sha256((script + styles).encode()).hexdigest()[:16]
    page = read_asset("agent/index.html").replace("{{version}}", version)
    return Console(page, console_csp(page), script.encode(), styles.encode(), version)


def console_csp(page: str) -> str:
    """The page's CSP: its own origin only (any inline script or style by its hash)."""
    scripts, styles = (" ".join(filter(None, ("'self'", inline_hashes(page, tag))))
                       for tag in ("script", "style"))  # fmt: skip
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; img-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


async def _console(request: Request) -> Console:
    state = request.app.state
    console = getattr(state, "agent_console", None)
    if console is None:
        console = await asyncio.to_thread(build_console)
        state.agent_console = console
    return console


@router.get("/agent", include_in_schema=False)
async def agent_page(request: Request) -> Response:
    console = await _console(request)
    headers = {**_HEADERS, "Content-Security-Policy": console.csp, "X-Frame-Options": "DENY"}
    return Response(console.page, media_type="text/html; charset=utf-8", headers=headers)


def _asset(request: Request, console: Console, body: bytes, media_type: str) -> Response:
    etag = f'"{console.version}"'
    headers = {**_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/agent/console.js", include_in_schema=False)
async def agent_script(request: Request) -> Response:
    console = await _console(request)
    return _asset(request, console, console.script, "text/javascript; charset=utf-8")


@router.get("/agent/icon.svg", include_in_schema=False)
async def agent_icon() -> Response:
    return Response(ICON, media_type="image/svg+xml", headers=_HEADERS)


@router.get("/agent/console.css", include_in_schema=False)
async def agent_styles(request: Request) -> Response:
    console = await _console(request)
    return _asset(request, console, console.styles, "text/css; charset=utf-8")
