"""The caller of a request: its tenant, what it may do, and what its credentials bind it to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: ``admin``: manage the tenant's keys, read any of its sessions, metrics and docs; ``agent``:
#: support agents (read and write the tenant's conversations); ``client``: hold conversations.
Scope = Literal["admin", "agent", "client"]
SCOPES: tuple[Scope, ...] = ("admin", "agent", "client")

#: How the caller authenticated.
CredentialKind = Literal["secret_key", "publishable_key", "static_key", "client_secret", "open"]


@dataclass(frozen=True)
class Principal:
    tenant: str
    scopes: frozenset[Scope]
    kind: CredentialKind
    #: The key behind the credentials (a client secret names the key that minted it): what
    #: limits are counted against. None in open mode.
    key_id: str | None = None
    #: A client secret bound to one session may only open that session.
    session_id: str | None = None
    #: A user identity the site signed, carried by a client secret.
    user: str | None = None
    #: Browser origins the credentials may be used from; None: not bound to origins.
    origins: tuple[str, ...] | None = None

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def limit_key(self) -> str:
        """What limits are counted under: the key, or the tenant in open mode."""
        return f"key:{self.key_id}" if self.key_id else f"tenant:{self.tenant}"
