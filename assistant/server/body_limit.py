"""Request bodies are limited while they stream in, before anything is buffered: a body that
declares (``Content-Length``) or sends (chunked) more than its route takes is refused with 413
``request_too_large`` as soon as the limit is passed, whatever the route does with its body."""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.errors import InvalidRequestError
from assistant.server.rest import error_response

#: Anything but an upload is a small JSON body.
DEFAULT_LIMIT = 1024 * 1024
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the other fields of an upload form


def upload_body_limit(max_upload_bytes: int) -> int:
    """The body a multipart upload of a file of at most ``max_upload_bytes`` may take."""
    return max_upload_bytes + _FORM_OVERHEAD


class _TooLarge(BaseException):  # not an Exception: no handler on the way turns it into a 400
    pass


class BodyLimit:
    def __init__(
        self, app: ASGIApp, route_limits: Mapping[str | re.Pattern[str], int] | None = None
    ) -> None:
        """``route_limits``: paths with a limit of their own (an upload, a chat completion's
        images), each exact or a compiled pattern the whole path matches (a route with a path
        parameter); every other path takes ``DEFAULT_LIMIT``."""
        self.app = app
        table = dict(route_limits or {})
        self._exact = {k: v for k, v in table.items() if isinstance(k, str)}
        self._patterns = [(k, v) for k, v in table.items() if not isinstance(k, str)]

    def limit(self, path: str) -> int:
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        return next((v for k, v in self._patterns if k.fullmatch(path)), DEFAULT_LIMIT)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, limit)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except BaseException as exc:  # _TooLarge, or a task group's exception group holding it
            if not _too_large(exc):
                raise
            if not started:
                await _refuse(scope, receive, send, limit)


def _too_large(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_too_large(inner) for inner in exc.exceptions)
    return isinstance(exc, _TooLarge)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    error = InvalidRequestError(
        f"the request body passes {limit} bytes, as much as this route takes",
        code="request_too_large",
    )
    response = error_response(error)
    response.status_code = 413
    await response(scope, receive, send)
