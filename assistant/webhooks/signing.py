"""Webhook signatures, Stripe's scheme: HMAC-SHA256 with the subscription's secret over
``<unix seconds>.<body>``, sent as ``X-Assistant-Signature: t=<unix seconds>,v1=<hex>``.

A receiver checks a request with ``verify(secret, header, body)``: the body exactly as received
(bytes, before any JSON parsing), the timestamp within ``tolerance_s`` of its clock (a replayed
old request fails). Only ``v1`` signatures count; there may be several (while a secret rotates).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-Assistant-Signature"
EVENT_HEADER = "X-Assistant-Event"
DELIVERY_HEADER = "X-Assistant-Delivery"
ATTEMPT_HEADER = "X-Assistant-Attempt"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A subscription's signing secret (shown once, when the subscription is created)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Assistant-Signature`` header's value for ``body``, now (or at ``timestamp``)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={signature(secret, at, body)}"


def verify(
    secret: str, header: str | None, body: bytes, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """True when ``header`` (``t=...,v1=...``) signs ``body`` with ``secret`` and its timestamp is
    within ``tolerance_s`` of ``now`` (the clock). Constant-time comparison."""
    if not header:
        return False
    timestamp, candidates = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
