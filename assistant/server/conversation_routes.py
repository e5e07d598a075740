"""The agents' REST (an ``agent`` key; another tenant's conversation is not found on any route):

GET  /v1/conversations?status=waiting_human   the tenant's handed-off conversations, newest first
GET  /v1/conversations/{id}                   its state, summary and whole history (messages with
                                              image refs, transcripts, ``author`` of an agent's)
                                              and ``last_seq``, the stream position it reflects
POST /v1/conversations/{id}/handoff           hand it to a person (``reason``: ``agent`` / ``api``)
POST /v1/conversations/{id}/claim             take it (of two agents at once, one wins: 409)
POST /v1/conversations/{id}/messages          the claimer's reply, live on the customer's connection
POST /v1/conversations/{id}/handback          the bot answers again
POST /v1/conversations/{id}/resolve           done
GET  /v1/conversations/{id}/events?after=     its events live (server-sent events), from a seq
GET  /v1/conversations/{id}/images/{sha256}   an image of its history (the bytes)
GET  /v1/queue/events?after=                  every status change of the tenant's conversations,
                                              live (server-sent events): an agent console's queue

The agent is named by its key: ``agent:<key id>``. The state machine: ``assistant.handoff``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from assistant.auth.principal import Principal
from assistant.errors import ConfigurationError, ImageNotFoundError
from assistant.handoff.hub import Subscription
from assistant.handoff.runtime import HandoffRuntime
from assistant.handoff.service import Handoff
from assistant.handoff.status import ConversationState
from assistant.messages import ImagePart
from assistant.ports.conversations import QUEUE
from assistant.protocol.items import wire_item_dict
from assistant.server.rest_schema import AUTH_ERRORS, errors
from assistant.server.security import requires
from assistant.server.session_feed import check_after, lost

router = APIRouter(tags=["conversations"])
Agent = Annotated[Principal, Depends(requires("agent"))]
ConversationId = Annotated[str, Path(min_length=1, max_length=128)]
Status = Literal["bot", "waiting_human", "human", "resolved"]

#: A server-sent event stream with nothing to say sends a comment line this often.
KEEPALIVE_S = 15.0
_READ = errors(400, *AUTH_ERRORS, 404, 500, 503)
_CHANGE = errors(400, *AUTH_ERRORS, 404, 409, 500, 503)


class Conversation(BaseModel):
    object: Literal["conversation"] = "conversation"
    id: str
    status: Status
    agent: str | None = None
    reason: str | None = None
    summary: str = ""
    since: int
    handoff_at: int | None = None


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Conversation]
    #: The tenant's queue stream position when listed: ``/v1/queue/events?after=`` it, and no
    #: change since is missed.
    last_seq: str


class ConversationDetail(Conversation):
    #: The session's messages as the realtime protocol's items (``realtime.item``).
    messages: list[dict[str, Any]]
    last_seq: str


class AgentMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, max_length=8_000)


class HandoffBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Literal["agent", "api"] = "agent"


class AddedMessage(BaseModel):
    object: Literal["conversation.message"] = "conversation.message"
    item: dict[str, Any]


def _runtime(request: Request) -> HandoffRuntime:
    runtime = request.app.state.components.handoff
    if runtime is None:
        raise ConfigurationError("the handoff needs a session store (ASSISTANT_REDIS_URL)")
    return runtime


def _handoff(request: Request) -> Handoff:
    return _runtime(request).handoff


def agent_name(principal: Principal) -> str:
    return f"agent:{principal.key_id or principal.user or 'open'}"


def _conversation(session_id: str, state: ConversationState) -> dict[str, Any]:
    return {"object": "conversation", "id": session_id, **state.model_dump(mode="json")}


@router.get("/v1/conversations", response_model=ConversationList, responses=_READ)
async def list_conversations(
    request: Request, principal: Agent, status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:  # fmt: skip
    """The tenant's conversations that were handed off (``status``: only those), newest first;
    ``last_seq``: where to follow the queue from (``/v1/queue/events``)."""
    handoff = _handoff(request)
    last_seq = await handoff.conversations.for_tenant(principal.tenant).last_seq(QUEUE)
    found = await handoff.listed(principal.tenant, status, limit)
    data = [_conversation(x.session_id, x.state) for x in found]
    return {"object": "list", "data": data, "last_seq": last_seq}


@router.get("/v1/conversations/{conversation_id}", response_model=ConversationDetail,
            responses=_READ)  # fmt: skip
async def get_conversation(
    conversation_id: ConversationId, request: Request, principal: Agent
) -> Any:
    """The conversation's state and its whole history; ``last_seq``: the session's event stream
    position when it was read (follow on from it: nothing missed)."""
    handoff = _handoff(request)
    tenant = principal.tenant
    state = await handoff.state(tenant, conversation_id)
    last_seq = await handoff.conversations.for_tenant(tenant).last_seq(conversation_id)
    snapshot = await handoff.history(tenant, conversation_id)
    messages = [wire_item_dict(m) for m in snapshot.messages]
    return {**_conversation(conversation_id, state), "messages": messages, "last_seq": last_seq}


@router.post("/v1/conversations/{conversation_id}/handoff", response_model=Conversation,
             responses=_CHANGE)  # fmt: skip
async def handoff_conversation(
    conversation_id: ConversationId, request: Request, principal: Agent,
    body: HandoffBody | None = None,
) -> Any:  # fmt: skip
    """Hand the conversation to a person (from ``bot``; else it stays as it is)."""
    reason = body.reason if body is not None else "agent"
    state = await _handoff(request).request(principal.tenant, conversation_id, reason)
    return _conversation(conversation_id, state)


@router.post("/v1/conversations/{conversation_id}/claim", response_model=Conversation,
             responses=_CHANGE)  # fmt: skip
async def claim(conversation_id: ConversationId, request: Request, principal: Agent) -> Any:
    """Take a waiting conversation: of agents claiming it at once one wins, the others get 409
    ``conversation_status_conflict``."""
    handoff = _handoff(request)
    state = await handoff.claim(principal.tenant, conversation_id, agent_name(principal))
    return _conversation(conversation_id, state)


@router.post("/v1/conversations/{conversation_id}/messages", response_model=AddedMessage,
             status_code=201, responses=_CHANGE)  # fmt: skip
async def reply(
    conversation_id: ConversationId, body: AgentMessage, request: Request, principal: Agent
) -> Any:
    """The claimer's reply: stored as an assistant message with ``author``, sent live to the
    customer's connection (``conversation.item.added``)."""
    handoff = _handoff(request)
    message = await handoff.reply(
        principal.tenant, conversation_id, agent_name(principal), body.text
    )
    return {"object": "conversation.message", "item": wire_item_dict(message)}


@router.post("/v1/conversations/{conversation_id}/handback", response_model=Conversation,
             responses=_CHANGE)  # fmt: skip
async def handback(conversation_id: ConversationId, request: Request, principal: Agent) -> Any:
    """Back to the bot (a held conversation by its holder only)."""
    state = await _handoff(request).handback(
        principal.tenant, conversation_id, agent_name(principal)
    )
    return _conversation(conversation_id, state)


@router.post("/v1/conversations/{conversation_id}/resolve", response_model=Conversation,
             responses=_CHANGE)  # fmt: skip
async def resolve(conversation_id: ConversationId, request: Request, principal: Agent) -> Any:
    """Done (a held conversation by its holder only); the customer writing again reopens it."""
    state = await _handoff(request).resolve(
        principal.tenant, conversation_id, agent_name(principal)
    )
    return _conversation(conversation_id, state)


_After = Annotated[str, Query(max_length=41, description="the last seq seen; 0: all kept")]


@router.get("/v1/conversations/{conversation_id}/events", response_class=StreamingResponse,
            responses=_READ)  # fmt: skip
async def follow(
    conversation_id: ConversationId, request: Request, principal: Agent, after: _After = "0"
) -> StreamingResponse:
    """The session's events as server-sent events, from after ``after`` (``last_seq`` of ``GET
    .../{id}``: nothing missed) and live: ``id:`` the seq, ``event:`` the type, ``data:`` the
    event as JSON (``conversation.item.added`` / ``conversation.status.updated``); a comment
    line (``: keep-alive``) every ``KEEPALIVE_S`` with nothing else to send."""
    runtime = _runtime(request)
    check_after(after)
    await runtime.handoff.state(principal.tenant, conversation_id)  # not found before streaming
    sub = await runtime.hub.subscribe(principal.tenant, conversation_id, after)
    return _event_stream(runtime, sub, after)


@router.get("/v1/queue/events", response_class=StreamingResponse, responses=_READ)
async def follow_queue(
    request: Request, principal: Agent, after: _After = "0"
) -> StreamingResponse:
    """Every status change of the tenant's conversations as server-sent events, from after
    ``after`` (``last_seq`` of ``GET /v1/conversations``) and live: ``event:
    conversation.status.updated``, ``data:`` its ``conversation`` (the id), ``status``, ``agent``,
    ``reason``, ``summary``, ``since``, ``handoff_at``. A queue of waiting conversations kept
    from this stays right without listing again (a claim-timeout is applied when the
    conversation is next read, and shows here then)."""
    runtime = _runtime(request)
    check_after(after)
    sub = await runtime.hub.subscribe(principal.tenant, QUEUE, after)
    return _event_stream(runtime, sub, after)


def _event_stream(runtime: HandoffRuntime, sub: Subscription, after: str) -> StreamingResponse:
    """The subscription as server-sent events; one from a seq trimmed away: 404 ``events_lost``
    (read the conversation, or the list, again and follow from its ``last_seq``)."""
    if sub.lost:
        runtime.hub.unsubscribe(sub)
        raise lost(after)

    async def lines() -> AsyncIterator[str]:
        try:
            while True:
                try:
                    got = await sub.next(KEEPALIVE_S)
                except StopAsyncIteration:
                    return
                if got is None:  # a comment line: proxies keep the stream, a dead peer shows
                    yield ": keep-alive\n\n"
                    continue
                seq, event = got
                body = {k: v for k, v in event.items() if k != "origin"}
                yield f"id: {seq}\nevent: {body.get('type')}\ndata: {json.dumps(body)}\n\n"
        finally:
            runtime.hub.unsubscribe(sub)

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})  # fmt: skip


@router.get("/v1/conversations/{conversation_id}/images/{sha256}", response_class=Response,
            responses=_READ)  # fmt: skip
async def image(
    conversation_id: ConversationId, request: Request, principal: Agent,
    sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
) -> Response:  # fmt: skip
    """An image of the conversation's history, by the ``image_sha256`` of its item: the bytes,
    as the customer sent them (only an image this conversation holds)."""
    handoff = _handoff(request)
    snapshot = await handoff.history(principal.tenant, conversation_id)
    part = next((p for m in snapshot.messages for p in m.content
                 if isinstance(p, ImagePart) and p.sha256 == sha256), None)  # fmt: skip
    data = None
    if part is not None:
        data = await handoff.sessions.for_tenant(principal.tenant).get_blob(sha256)
    if part is None or data is None:
        raise ImageNotFoundError(f"no image {sha256[:12]}... in this conversation")
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'"}  # fmt: skip
    return Response(data, media_type=part.mime_type, headers=headers)
