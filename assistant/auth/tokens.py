"""Client secrets: short-lived tokens a browser holds instead of a key, as OpenAI Realtime's
``POST /v1/realtime/client_secrets`` hands out. Each is a JWT (HS256, PyJWT) signed with the
server's secret, naming the tenant, the key that minted it, and optionally one session, one user
and the page origins it may be used from. Nothing is stored: any worker verifies any secret.

User identities: a site proves which of its users a page belongs to by the HMAC-SHA256 of the
user id with the publishable key's identity secret (hex), computed on the site's own server, as
chat widgets do (``user: {id, signature}``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

from assistant.auth.principal import Principal
from assistant.errors import AuthenticationError

PREFIX = "cs_"  # what a client secret starts with, so it is told from a key at a glance
_ISSUER = "assistant"
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int  # unix seconds


class ClientSecrets:
    def __init__(self, signing_key: bytes) -> None:
        self._key = hashlib.sha256(b"client-secrets\0" + signing_key).digest()

    def issue(
        self,
        principal: Principal,
        ttl_s: int,
        *,
        session_id: str | None = None,
        user: str | None = None,
        origins: tuple[str, ...] | None = None,
    ) -> ClientSecret:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": _ISSUER, "iat": now, "exp": now + ttl_s, "jti": secrets.token_hex(8),
            "ten": principal.tenant, "kid": principal.key_id,
        }  # fmt: skip
        if session_id is not None:
            claims["ses"] = session_id
        if user is not None:
            claims["usr"] = user
        if origins is not None:
            claims["ori"] = list(origins)
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        return ClientSecret(PREFIX + token, now + ttl_s)

    def verify(self, value: str) -> Principal:
        """The caller a client secret stands for; ``token_expired`` or ``invalid_token``."""
        if not value.startswith(PREFIX):
            raise AuthenticationError("not a client secret", code="invalid_token")
        try:
            claims = jwt.decode(
                value[len(PREFIX) :], self._key, algorithms=[_ALGORITHM], issuer=_ISSUER,
                options={"require": ["exp", "iat", "iss", "ten"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the client secret has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the client secret is not valid", code="invalid_token") from None
        origins = claims.get("ori")
        return Principal(
            tenant=str(claims["ten"]),
            scopes=frozenset({"client"}),
            kind="client_secret",
            key_id=claims.get("kid"),
            session_id=claims.get("ses"),
            user=claims.get("usr"),
            origins=tuple(origins) if origins is not None else None,
        )


def sign_user(user_id: str, identity_secret: str) -> str:
    """What a site's server computes for its user: hex HMAC-SHA256 of the id."""
    return hmac.new(identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user(user_id: str, signature: str, identity_secret: str) -> bool:
    return hmac.compare_digest(sign_user(user_id, identity_secret), signature)
