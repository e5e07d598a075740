"""The webhook routes, an admin key's of its own tenant (another tenant's webhook is not found):

POST   /v1/webhooks                  subscribe a URL to events; the answer holds its secret,
                                     the only time it is shown
GET    /v1/webhooks                  the tenant's webhooks (no secrets)
DELETE /v1/webhooks/{id}             unsubscribe (its pending deliveries fail)
GET    /v1/webhooks/{id}/deliveries  its delivery log: every attempt, newest first
POST   /v1/webhooks/{id}/test        send it a ``ping`` delivery
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from assistant.auth.principal import Principal
from assistant.errors import ConfigurationError
from assistant.server.rest_schema import AUTH_ERRORS, errors
from assistant.server.security import requires
from assistant.webhooks.events import Event
from assistant.webhooks.models import Attempt
from assistant.webhooks.service import Webhooks
from assistant.webhooks.urls import MAX_URL_CHARS

router = APIRouter(tags=["webhooks"])
admin = requires("admin")


class WebhookRequest(BaseModel):
    #: strict: ``"enabled": 1`` or ``"url": 5`` is refused, not coerced
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    events: list[Event] = Field(min_length=1, max_length=16)
    description: str = Field("", max_length=500)
    enabled: bool = True


class Webhook(BaseModel):
    object: Literal["webhook"] = "webhook"
    id: str
    url: str
    events: list[str]
    enabled: bool
    description: str
    created_at: int


class CreatedWebhook(Webhook):
    #: The signing secret: in this answer only.
    secret: str


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Webhook]


class AttemptList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Attempt]


class TestDelivery(BaseModel):
    object: Literal["webhook.delivery"] = "webhook.delivery"
    id: str
    event: str
    webhook_id: str


def _webhooks(request: Request) -> Webhooks:
    webhooks = request.app.state.components.webhooks
    if webhooks is None:
        raise ConfigurationError("webhooks need the Redis store (ASSISTANT_REDIS_URL)")
    return webhooks


@router.post("/v1/webhooks", status_code=201, response_model=CreatedWebhook,
             responses=errors(400, *AUTH_ERRORS, 500, 503))  # fmt: skip
async def create_webhook(
    body: WebhookRequest, request: Request, principal: Principal = Depends(admin)
) -> dict:
    created = await _webhooks(request).create(
        principal.tenant, body.url, list(body.events), description=body.description,
        enabled=body.enabled,
    )  # fmt: skip
    return {**created.public(), "secret": created.secret}


@router.get("/v1/webhooks", response_model=WebhookList,
            responses=errors(*AUTH_ERRORS, 500, 503))  # fmt: skip
async def list_webhooks(request: Request, principal: Principal = Depends(admin)) -> dict:
    found = await _webhooks(request).list(principal.tenant)
    return {"object": "list", "data": [s.public() for s in found]}


@router.delete("/v1/webhooks/{webhook_id}", response_model=Webhook,
               responses=errors(*AUTH_ERRORS, 404, 500, 503))  # fmt: skip
async def delete_webhook(
    webhook_id: str, request: Request, principal: Principal = Depends(admin)
) -> dict:
    return (await _webhooks(request).delete(principal.tenant, webhook_id)).public()


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=AttemptList,
            responses=errors(400, *AUTH_ERRORS, 404, 500, 503))  # fmt: skip
async def webhook_deliveries(
    webhook_id: str, request: Request, principal: Principal = Depends(admin),
    limit: int = Query(100, ge=1, le=1000),
) -> dict:  # fmt: skip
    attempts = await _webhooks(request).deliveries(principal.tenant, webhook_id, limit)
    return {"object": "list", "data": attempts}


@router.post("/v1/webhooks/{webhook_id}/test", status_code=202, response_model=TestDelivery,
             responses=errors(*AUTH_ERRORS, 404, 500, 503))  # fmt: skip
async def test_webhook(
    webhook_id: str, request: Request, principal: Principal = Depends(admin)
) -> dict:
    delivery = await _webhooks(request).ping(principal.tenant, webhook_id)
    return {"object": "webhook.delivery", "id": delivery.id, "event": delivery.event,
            "webhook_id": webhook_id}  # fmt: skip
