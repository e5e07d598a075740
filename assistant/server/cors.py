"""CORS for the REST routes a browser page calls (client secrets, a session's history, audio
uploads), answered for the origins some credentials allow only: a publishable key's origins,
``ASSISTANT_AUTH__ALLOWED_ORIGINS``, and loopback pages in open mode. A preflight carries no
credentials, so it is answered for any such origin; the request itself is then checked against
its own key. Starlette's ``CORSMiddleware`` writes the headers; this decides who gets them."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

BROWSER_ROUTES = ("/v1/realtime/client_secrets", "/v1/sessions/", "/v1/audio/transcriptions")


class KeyOriginsCORS:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type"], max_age=600,
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(BROWSER_ROUTES):
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        auth = scope["app"].state.components.auth
        if await auth.page_allowed(origin):
            await self.cors(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            response = PlainTextResponse("origin not allowed", status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)  # no CORS headers: the page cannot read the answer
