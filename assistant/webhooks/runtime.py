"""Webhooks in a server process: built with the app's components, the delivery worker started
with the app and stopped with it (``webhooks.enabled``)."""

from __future__ import annotations

import contextlib

from assistant.config import Settings
from assistant.ports import SessionStore
from assistant.registry import build_webhooks
from assistant.webhooks.service import Webhooks


async def start_webhooks(
    settings: Settings, store: SessionStore, stack: contextlib.AsyncExitStack
) -> Webhooks | None:
    """The process's ``Webhooks`` and its running worker; None for a store without Redis (a unit
    test's in-memory one): the webhook routes then answer ``configuration_error``."""
    if getattr(store, "client", None) is None:
        return None
    webhooks, worker = build_webhooks(settings, store)
    stack.push_async_callback(worker.sender.aclose)
    if settings.webhooks.enabled:
        worker.start()
        stack.push_async_callback(worker.stop)
        webhooks.on_enqueue = worker.wake
    return webhooks
