"""One store call, the way every store port makes it: its failures to reach the backend mapped to
``store_unavailable``, named by the store and what it holds, never by its address (where and why
go to the log). An adapter whose client raises errors of its own (redis-py's do not derive from
the builtin ones) names them in its port's ``backend_errors``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from assistant.errors import AssistantError, StoreError

_T = TypeVar("_T")
log = logging.getLogger(__name__)


async def store_call(
    name: str,
    what: str,
    awaitable: Awaitable[_T],
    backend_errors: tuple[type[Exception], ...] = (),
) -> _T:
    try:
        return await awaitable
    except AssistantError:
        raise
    except (ConnectionError, OSError, TimeoutError, *backend_errors) as exc:
        log.warning("%s: %s: %s", name, type(exc).__name__, exc)
        raise StoreError(f"{name}: the {what} is unavailable") from exc
