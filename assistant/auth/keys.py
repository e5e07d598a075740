"""API keys: their format, how they are stored (hashed, never in clear), and the stored record.

    sk_<id>_<secret>   a secret key: server to server, scopes ``admin`` / ``agent`` / ``client``
    pk_<id>_<secret>   a publishable key: safe in a web page, bound to an Origin allow-list; it can
                       only mint short-lived client secrets (``POST /v1/realtime/client_secrets``)

``<id>`` (16 hex digits) names the stored record; the whole key is stored as an HMAC-SHA256 digest
peppered with the server's secret, compared in constant time. The secret part has 192 bits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.auth.principal import Scope
from assistant.messages import now_ms

KeyKind = Literal["secret", "publishable"]
_PREFIX: dict[KeyKind, str] = {"secret": "sk", "publishable": "pk"}
_KEY = re.compile(r"(sk|pk)_([0-9a-f]{16})_([A-Za-z0-9_-]{32})")


class StoredKey(BaseModel):
    """A key as stored: everything but the key itself."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    tenant: str
    kind: KeyKind
    scopes: tuple[Scope, ...] = ()
    #: Publishable keys: the page origins (``https://shop.example``) allowed to use it.
    origins: tuple[str, ...] = ()
    #: Publishable keys: the site's secret for signing user ids (HMAC-SHA256 of the id, hex).
    identity_secret: str | None = None
    name: str = ""
    created_at: int = Field(default_factory=now_ms)
    revoked_at: int | None = None
    digest: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """What the admin API shows of a key (no digest, no identity secret)."""
        return self.model_dump(mode="json", exclude={"digest", "identity_secret"})


def new_key(kind: KeyKind) -> tuple[str, str]:
    """A fresh key: (its id, the whole key to hand to the user once)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{_PREFIX[kind]}_{key_id}_{secrets.token_urlsafe(24)}"


def parse_key(text: str) -> tuple[KeyKind, str] | None:
    """(kind, id) of a well-formed key; None for anything else (a client secret, a static key)."""
    match = _KEY.fullmatch(text)
    if match is None:
        return None
    return ("secret" if match[1] == "sk" else "publishable"), match[2]


def key_digest(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def digest_matches(key: str, pepper: bytes, digest: str) -> bool:
    return hmac.compare_digest(key_digest(key, pepper), digest)


def new_identity_secret() -> str:
    return f"ids_{secrets.token_urlsafe(24)}"
