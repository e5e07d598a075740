"""Logs an operator can use and nobody can steal from: one line per event (JSON with
``ASSISTANT_SERVER__LOG_FORMAT=json``) carrying the request's correlation id and a reference to
the session (a keyed hash of its id: the same session always has the same reference, and the
reference does not let anyone open it). Keys, client secrets, session ids and query strings are
redacted from every record, uvicorn's own included (its access and WebSocket lines print the
path with its query). Message content is logged at debug level only.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
session_ref: contextvars.ContextVar[str] = contextvars.ContextVar("session_ref", default="-")

#: What never reaches a log line: keys, client secrets, session ids, and whole query strings.
_SECRETS = re.compile(
    r"(?:sk|pk)_[0-9a-f]{16}_[A-Za-z0-9_-]+|cs_[A-Za-z0-9_.-]+|sess_[0-9a-f]{20}"
    r"|assistant-secret\.[A-Za-z0-9_.-]+|(?i:bearer)\s+\S+|(?<=[\w/])\?[\w%.~-]+=[^\s\"']*"
)
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_LOGGERS = ("", *_UVICORN_LOGGERS, "assistant", "adapters")


def redact(text: str) -> str:
    return _SECRETS.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    found = match.group(0)
    return "?<redacted>" if found.startswith("?") else f"{found[:3]}<redacted>"


def reference(session_id: str, key: bytes) -> str:
    """A stable, non-secret reference to a session for logs."""
    return "s-" + hashlib.blake2b(session_id.encode(), key=key[:64], digest_size=6).hexdigest()


class Redacting(logging.Filter):
    """Adds the correlation ids and redacts the message (formatted with its arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.session_ref = session_ref.get()
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logged as it is, redacted
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        return True


def configure(level: str = "info", fmt: str = "text") -> None:
    """The process's logging: one handler on stderr, the redacting filter on every logger
    uvicorn and the assistant write to (set up before uvicorn, which is told to leave it)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(session_ref)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))  # fmt: skip
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(session_ref)s] %(message)s"
        ))  # fmt: skip
    handler.addFilter(Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def install_filter() -> None:
    """The redacting filter on the handlers that exist now (an app run by uvicorn as it is,
    without ``configure``): what they print is redacted too."""
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, Redacting) for f in handler.filters):
                handler.addFilter(Redacting())
