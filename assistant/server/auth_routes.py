"""Auth routes: client secrets for browsers (``POST /v1/realtime/client_secrets``, shaped like
OpenAI Realtime's) and the admin API of a tenant's keys (``/v1/admin/keys``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from assistant.auth.keys import StoredKey, key_digest, new_identity_secret, new_key
from assistant.auth.principal import Principal, Scope
from assistant.auth.tokens import verify_user
from assistant.errors import AuthenticationError, InvalidRequestError, NotFoundError
from assistant.messages import now_ms
from assistant.ports import check_tenant
from assistant.server.security import caller, check_session, requires

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpiresAfter(_Body):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=1, le=86_400)


class SignedUser(_Body):
    id: str = Field(min_length=1, max_length=256)
    #: Hex HMAC-SHA256 of ``id`` with the publishable key's identity secret (the site computes
    #: it on its server); not needed when a secret key asks.
    signature: str | None = Field(None, max_length=128)


class ClientSecretRequest(_Body):
    expires_after: ExpiresAfter | None = None
    #: Bind the secret to this session of the tenant (it can open no other).
    session_id: str | None = Field(None, max_length=128)
    user: SignedUser | None = None


@router.post("/v1/realtime/client_secrets")
async def client_secrets(
    body: ClientSecretRequest, request: Request, principal: Principal = Depends(caller)
) -> dict[str, object]:
    """A short-lived client secret for a browser: with a publishable key from one of its pages,
    or with a secret key (client scope) from the site's own server."""
    components = request.app.state.components
    settings = request.app.state.settings.auth
    if principal.kind not in ("publishable_key", "secret_key", "open") or (
        principal.kind == "secret_key" and not principal.has("client")
    ):
        raise AuthenticationError(
            "client secrets are minted with a publishable key or a client key",
            code="invalid_credentials",
        )
    if principal.kind == "publishable_key":
        await components.limits.client_secret(principal)
    ttl = body.expires_after.seconds if body.expires_after else settings.client_secret_ttl_s
    ttl = min(ttl, settings.client_secret_max_ttl_s)
    user = await _checked_user(body.user, principal, components)
    if body.session_id is not None:
        check_session(principal, body.session_id)
        orchestrator = components.orchestrator.for_tenant(principal.tenant)
        await orchestrator.open_session(body.session_id)  # another tenant's: not found
    secret = components.auth.client_secrets.issue(
        principal, ttl, session_id=body.session_id, user=user, origins=principal.origins
    )
    return {"value": secret.value, "expires_at": secret.expires_at, "session_id": body.session_id}


async def _checked_user(user: SignedUser | None, principal: Principal, components) -> str | None:
    if user is None:
        return None
    if principal.kind != "publishable_key":
        return user.id  # the site's own server vouches for its user
    key = await components.auth.stored_key(principal.key_id)
    secret = key.identity_secret if key is not None else None
    if not secret or not user.signature or not verify_user(user.id, user.signature, secret):
        raise AuthenticationError(
            "the user's signature does not match (HMAC-SHA256 of the id with the key's "
            "identity secret, hex)",
            code="invalid_user_signature",
        )
    return user.id


# -- the admin API: a tenant's keys ----------------------------------------------------------------


class KeyRequest(_Body):
    kind: Literal["secret", "publishable"] = "secret"
    scopes: list[Scope] = Field(default_factory=lambda: ["client"], max_length=3)
    origins: list[str] = Field(default_factory=list, max_length=64)
    name: str = Field("", max_length=200)


@router.get("/v1/admin/keys")
async def list_keys(request: Request, principal: Principal = Depends(requires("admin"))) -> dict:
    keys = await request.app.state.components.keys.list(principal.tenant)
    return {"object": "list", "data": [k.public() for k in keys]}


@router.post("/v1/admin/keys", status_code=201)
async def create_key(
    body: KeyRequest, request: Request, principal: Principal = Depends(requires("admin"))
) -> dict:
    """A new key of the caller's tenant; the key itself is in this answer only."""
    created, key = await make_key(
        request.app.state.components.keys, request.app.state.components.auth.pepper,
        principal.tenant, body.kind, tuple(body.scopes), tuple(body.origins), body.name,
    )  # fmt: skip
    return {**created.public(), "key": key, "identity_secret": created.identity_secret}


@router.delete("/v1/admin/keys/{key_id}")
async def revoke_key(
    key_id: str, request: Request, principal: Principal = Depends(requires("admin"))
) -> dict:
    keys = request.app.state.components.keys
    stored = await keys.get(key_id)
    if stored is None or stored.tenant != principal.tenant:
        raise NotFoundError(f"no key {key_id!r}", code="not_found")
    revoked = await keys.revoke(key_id, now_ms())
    return revoked.public() if revoked is not None else {}


async def make_key(
    keys, pepper: bytes, tenant: str, kind: str, scopes: tuple[str, ...],
    origins: tuple[str, ...], name: str,
) -> tuple[StoredKey, str]:  # fmt: skip
    """Create and store a key: (the record, the key to hand over once)."""
    if kind == "publishable":
        if scopes and set(scopes) != {"client"}:
            raise InvalidRequestError("a publishable key has no scopes", code="invalid_request")
        if not origins:
            raise InvalidRequestError(
                "a publishable key needs the origins of its pages", code="invalid_request"
            )
        scopes = ()
    for origin in origins:
        if not origin.startswith(("https://", "http://")) or origin.count("/") != 2:
            raise InvalidRequestError(
                f"an origin is scheme://host[:port], got {origin!r}", code="invalid_request"
            )
    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), code="invalid_request") from None
    key_id, key = new_key(kind)  # type: ignore[arg-type]
    record = StoredKey(
        id=key_id, tenant=tenant, kind=kind, scopes=scopes, origins=origins, name=name,
        digest=key_digest(key, pepper),
        identity_secret=new_identity_secret() if kind == "publishable" else None,
    )  # fmt: skip
    await keys.put(record)
    return record, key
