"""Credentials -> a ``Principal``, or an ``AuthenticationError`` with a stable code.

What a request may carry (as ``Authorization: Bearer``; a browser's WebSocket puts a client
secret in a subprotocol instead, the server reads it from there):

    sk_...   a stored secret key: its tenant and scopes
    pk_...   a stored publishable key: only from a page of one of its origins, and only to mint
             client secrets
    cs_...   a client secret: the tenant (and session, user, origins) it was minted for
    other    a static key (``ASSISTANT_API_KEYS``): client scope in its tenant
    nothing  open mode only (tenant ``default``, every scope), from no page or a loopback page
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from assistant import heap
from assistant.auth.keys import StoredKey, digest_matches, key_digest, parse_key
from assistant.auth.principal import SCOPES, Principal
from assistant.auth.tokens import PREFIX as CLIENT_SECRET_PREFIX
from assistant.auth.tokens import ClientSecrets
from assistant.config import AuthSettings
from assistant.errors import AuthenticationError, OriginNotAllowedError
from assistant.ports.keys import KeyStore

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_CACHE_MAX = 10_000


def is_loopback_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and (parts.hostname or "") in _LOOPBACK_HOSTS


def parse_static_keys(text: str) -> dict[str, str]:
    """``tenant:key,tenant2:key2`` (or one per line; ``#`` comments) -> {key: tenant}."""
    keys: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        tenant, sep, key = entry.partition(":")
        if not sep or not tenant.strip() or len(key.strip()) < 16:
            raise ValueError("a static key is 'tenant:key' with a key of 16 characters or more")
        keys[key.strip()] = tenant.strip()
    return keys


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        keys: KeyStore,
        secret: bytes,
        *,
        open_mode: bool,
        static_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.pepper = secret
        self.open_mode = open_mode
        self.client_secrets = ClientSecrets(secret)
        # Static keys by their digest: the keys themselves are not kept.
        self._static = {key_digest(k, secret): t for k, t in (static_keys or {}).items()}
        self._cache: dict[str, tuple[StoredKey | None, float]] = {}
        heap.track("verified_keys", self, _CACHE_MAX, lambda auth: len(auth._cache))
        self._origins: tuple[frozenset[str], float] | None = None  # publishable keys' origins

    async def authenticate(self, credential: str | None, *, origin: str | None) -> Principal:
        if not credential:
            return self._anonymous(origin)
        if credential.startswith(CLIENT_SECRET_PREFIX):
            principal = self.client_secrets.verify(credential)
            if principal.origins is not None and origin is not None:
                self._check_origin(origin, principal.origins)
            return principal
        parsed = parse_key(credential)
        if parsed is not None:
            return await self._stored(credential, parsed[1], origin)
        digest = key_digest(credential, self.pepper)
        tenant = self._static.get(digest)
        if tenant is None:
            raise AuthenticationError("the API key is not valid", code="invalid_api_key")
        name = f"static:{digest[:12]}"
        return Principal(tenant, frozenset({"client"}), "static_key", key_id=name)

    async def stored_key(self, key_id: str) -> StoredKey | None:
        """The stored key, from a cache of at most ``key_cache_s`` seconds."""
        hit = self._cache.get(key_id)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self.settings.key_cache_s:
            return hit[0]
        key = await self.keys.get(key_id)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key_id] = (key, now)
        return key

    async def page_allowed(self, origin: str) -> bool:
        """Some credentials may be used from a page of ``origin`` (CORS preflights, which carry
        no credentials: the request itself is then checked against its own key)."""
        if origin in self.settings.allowed_origins:
            return True
        if self.open_mode and is_loopback_origin(origin):
            return True
        now = time.monotonic()
        if self._origins is None or now - self._origins[1] >= self.settings.key_cache_s:
            keys = await self.keys.list()
            found = {o for k in keys if k.kind == "publishable" and k.active for o in k.origins}
            self._origins = (frozenset(found), now)
        return origin in self._origins[0]

    def check_origin(self, origin: str | None, principal: Principal) -> None:
        """A page may use these credentials (``origin_not_allowed``); no Origin: not a page."""
        if origin is None:
            return
        if principal.kind == "open":
            if not (is_loopback_origin(origin) or origin in self.settings.allowed_origins):
                raise OriginNotAllowedError(f"pages from {origin} may not use this server")
        elif principal.origins is not None:
            self._check_origin(origin, principal.origins)

    # -- the kinds of credentials ------------------------------------------------------------------

    def _anonymous(self, origin: str | None) -> Principal:
        if not self.open_mode:
            raise AuthenticationError(
                "this server needs credentials: Authorization: Bearer <key or client secret>",
                code="missing_credentials",
            )
        principal = Principal("default", frozenset(SCOPES), "open")
        self.check_origin(origin, principal)
        return principal

    async def _stored(self, credential: str, key_id: str, origin: str | None) -> Principal:
        key = await self.stored_key(key_id)
        if key is None or not key.active or not digest_matches(credential, self.pepper, key.digest):
            raise AuthenticationError("the API key is not valid", code="invalid_api_key")
        if key.kind == "publishable":
            if origin is None:
                raise OriginNotAllowedError("a publishable key is used from a web page only")
            self._check_origin(origin, key.origins)
            return Principal(key.tenant, frozenset(), "publishable_key", key.id, origins=key.origins)
        return Principal(key.tenant, frozenset(key.scopes), "secret_key", key.id)

    @staticmethod
    def _check_origin(origin: str, allowed: tuple[str, ...]) -> None:
        if origin not in allowed:
            raise OriginNotAllowedError(f"pages from {origin} may not use these credentials")
