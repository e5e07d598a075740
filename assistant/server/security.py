"""The server's side of auth: credentials read off a request or a WebSocket handshake, the caller
(``Principal``) checked against what the route needs, and the per-key request limit counted.

REST: ``Authorization: Bearer <key or client secret>``. WebSocket: the same header (servers), or
the client secret in a subprotocol (browsers cannot set headers on a WebSocket), offered beside
``realtime``, which the server then accepts:

    new WebSocket(url, ["realtime", "assistant-secret." + clientSecret])

A secret is never read from the URL. Route dependencies: ``Depends(caller)`` for any caller,
``Depends(requires("admin"))`` for a scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from fastapi import Request

from assistant.auth.authenticator import Authenticator
from assistant.auth.principal import Principal, Scope
from assistant.errors import PermissionDeniedError, SessionNotFoundError, shown
from assistant.server.limits import KeyLimits

#: The subprotocol a browser offers its client secret in.
SECRET_PROTOCOL = "assistant-secret."
REALTIME_PROTOCOL = "realtime"


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def secret_from_subprotocols(offered: Iterable[str]) -> str | None:
    for protocol in offered:
        if protocol.startswith(SECRET_PROTOCOL):
            return protocol[len(SECRET_PROTOCOL) :]
    return None


async def authenticate(
    auth: Authenticator, limits: KeyLimits, credential: str | None, origin: str | None
) -> Principal:
    """The caller, its origin allowed, one request counted against its key."""
    principal = await auth.authenticate(credential, origin=origin)
    auth.check_origin(origin, principal)
    await limits.request(principal)
    return principal


async def caller(request: Request) -> Principal:
    """Route dependency: the authenticated caller of a REST request (kept on ``request.state``)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    components = request.app.state.components
    principal = await authenticate(
        components.auth, components.limits, bearer(request.headers), request.headers.get("origin")
    )
    request.state.principal = principal
    return principal


def requires(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """Route dependency: a caller with ``scope`` (``insufficient_scope`` otherwise)."""

    async def dependency(request: Request) -> Principal:
        principal = await caller(request)
        require(principal, scope)
        return principal

    return dependency


def require(principal: Principal, scope: Scope) -> None:
    if not principal.has(scope):
        raise PermissionDeniedError(f"this needs a key with the {scope!r} scope")


def check_session(principal: Principal, session_id: str) -> None:
    """A client secret bound to one session opens that one only; another is not found (404:
    nothing confirms that it exists)."""
    if principal.session_id is not None and principal.session_id != session_id:
        raise SessionNotFoundError(f"no session {shown(session_id)} (it may have expired)")
