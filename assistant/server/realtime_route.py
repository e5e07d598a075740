"""The ``/v1/realtime`` handshake: who is connecting (credentials from the ``Authorization``
header or the client-secret subprotocol, never the URL), from which page (``Origin``), which
session (``?session_id=`` resumes one of the caller's tenant), and a connection place of the key.

A refusal accepts the socket only to close it at once with 1008 (policy violation) and the error
code as the reason, so a browser can tell why; an unknown session gets an ``error`` event and
close code 4404, as before. It is a plain ASGI route: the connection then sends and receives
with the server's own ``send`` and ``receive``.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import WebSocket
from starlette.types import Receive, Scope, Send

from assistant.auth.principal import Principal
from assistant.errors import AssistantError
from assistant.messages import SessionInfo
from assistant.protocol import ErrorEvent
from assistant.server import logs
from assistant.server.realtime import RealtimeConnection
from assistant.server.security import (
    REALTIME_PROTOCOL,
    authenticate,
    bearer,
    check_session,
    require,
    secret_from_subprotocols,
)
from assistant.server.session_feed import check_after

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_SESSION_NOT_FOUND = 4404


class RealtimeEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        offered = list(scope.get("subprotocols") or [])
        subprotocol = REALTIME_PROTOCOL if REALTIME_PROTOCOL in offered else None
        components = ws.app.state.components
        metrics = ws.app.state.metrics
        credential = bearer(ws.headers) or secret_from_subprotocols(offered)
        try:
            principal = await authenticate(
                components.auth, components.limits, credential, ws.headers.get("origin")
            )
            require(principal, "client")
        except AssistantError as exc:
            metrics.error(exc.code)
            with contextlib.suppress(Exception):  # the client may be gone already
                await ws.accept(subprotocol)
                await ws.close(CLOSE_POLICY, _reason(exc))
            return
        await ws.accept(subprotocol)
        session = await _open_session(ws, principal, components, metrics)
        if session is None:
            return
        logs.session_ref.set(logs.reference(session.id, components.auth.pepper))
        log.info("realtime: session opened (tenant %s)", principal.tenant)
        try:
            async with components.limits.connection(principal):
                connection = RealtimeConnection(
                    ws, components.orchestrator.for_tenant(principal.tenant), metrics,
                    ws.app.state.settings.server, session, speech=components.speech,
                    receive=receive, send=send, principal=principal, limits=components.limits,
                    handoff=components.handoff, events_after=ws.query_params.get("after"),
                )  # fmt: skip
                await connection.serve()
        except AssistantError as exc:  # no place left for this key
            metrics.error(exc.code)
            with contextlib.suppress(Exception):
                await ws.send_text(ErrorEvent.from_exception(exc).model_dump_json())
                await ws.close(CLOSE_POLICY, _reason(exc))


async def _open_session(
    ws: WebSocket, principal: Principal, components, metrics
) -> SessionInfo | None:
    """The session to serve (a new one, or the one asked for); None when refused (closed)."""
    session_id = ws.query_params.get("session_id") or principal.session_id
    try:
        check_after(ws.query_params.get("after"))
        if session_id is not None:
            check_session(principal, session_id)
        orchestrator = components.orchestrator.for_tenant(principal.tenant)
        return await orchestrator.open_session(session_id)
    except AssistantError as exc:
        metrics.error(exc.code)
        with contextlib.suppress(Exception):  # the client may be gone already
            await ws.send_text(ErrorEvent.from_exception(exc).model_dump_json())
            await ws.close(_close_code(exc))
        return None


def _close_code(exc: AssistantError) -> int:
    """4404 for an unknown session, 1011 when the server failed (the store), else 1008: the
    request was refused (a malformed ``after``...), so a client should not retry it as it is."""
    if exc.code == "session_not_found":
        return CLOSE_SESSION_NOT_FOUND
    return 1011 if exc.type == "server_error" else CLOSE_POLICY


def _reason(exc: AssistantError) -> str:
    """A close reason: the code, then as much of the message as the frame takes (123 bytes)."""
    return f"{exc.code}: {exc.message}".encode()[:120].decode(errors="ignore")
