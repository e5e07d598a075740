"""One blocking model call off the event loop, the way every model port runs its adapter's
``_…_impl``: in a worker thread, within the port's ``timeout_s``, with its failures mapped to
stable codes (``model_timeout``; ``model_error`` for anything but an ``AssistantError``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from assistant.errors import AssistantError, ModelError, ModelTimeoutError

_T = TypeVar("_T")
log = logging.getLogger(__name__)


async def call_off_loop(
    name: str, timeout_s: float, what: str, call: Callable[..., _T], *args: Any
) -> _T:
    """``call(*args)`` in a worker thread; ``what`` names the result in the timeout message
    ("{name}: no {what} within {timeout_s} s")."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(call, *args), timeout_s)
    except TimeoutError as exc:  # asyncio.TimeoutError is this class
        raise ModelTimeoutError(f"{name}: no {what} within {timeout_s:.0f} s") from exc
    except AssistantError:
        raise
    except Exception as exc:  # the client hears what failed; the why (paths, internals) is logged
        log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
        raise ModelError(f"{name} failed ({type(exc).__name__})") from exc
