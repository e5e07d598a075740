"""``Handoff``: the status changes and the agent's side of a conversation, for the routes
(``server.conversation_routes``), the realtime connection and the turn gate (``gate``):

    await handoff.request(tenant, session_id, "customer_request")   bot -> waiting_human
    await handoff.claim(tenant, session_id, agent)                  waiting_human -> human (one wins)
    await handoff.reply(tenant, session_id, agent, text)            the agent's message, live
    await handoff.handback(tenant, session_id, agent)               -> bot
    await handoff.resolve(tenant, session_id, agent)                -> resolved

Each change is one compare-and-set in the store that also appends a ``conversation.status.updated``
event to the session's stream, then the webhook event (``conversation.handoff``, ``.claimed``,
``.resolved``; ``message.created`` for an agent's message and for the customer's while a person
has the conversation) is published through ``Webhooks.publish``. A waiting conversation nobody
claimed within ``claim_timeout_s`` goes back to the bot when it is next read (``state``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from assistant.errors import AssistantError, ConversationStatusError, SessionNotFoundError, shown
from assistant.handoff.settings import HandoffSettings
from assistant.handoff.status import Action, ConversationState, Reason, apply, conflict, timed_out
from assistant.handoff.summary import summarize
from assistant.knowledge.answer import BotProfile
from assistant.messages import Message, SessionInfo, TextPart
from assistant.ports import SessionSnapshot, SessionStore
from assistant.ports.conversations import ConversationStore, Event, Listed, Transitioned
from assistant.protocol.items import wire_item_dict
from assistant.webhooks.service import Webhooks

log = logging.getLogger(__name__)

_WEBHOOK_EVENTS: dict[Action, str] = {
    "request": "conversation.handoff",
    "claim": "conversation.claimed",
    "resolve": "conversation.resolved",
}


def item_event(message: Message, origin: str | None = None) -> Event:
    """A stored message as the session stream's ``conversation.item.added`` event."""
    return {"type": "conversation.item.added", "item": wire_item_dict(message), "origin": origin}


def status_event(state: ConversationState, origin: str | None = None) -> Event:
    return {"type": "conversation.status.updated", "status": state.status, "reason": state.reason,
            "agent": state.agent, "origin": origin}  # fmt: skip


class Handoff:
    def __init__(
        self,
        conversations: ConversationStore,
        sessions: SessionStore,
        settings: HandoffSettings,
        *,
        profile: Callable[[str], Awaitable[BotProfile]],
        webhooks: Webhooks | None = None,
    ) -> None:
        self.conversations = conversations
        self.sessions = sessions
        self.settings = settings
        self.profile = profile
        self.webhooks = webhooks

    # -- reading -----------------------------------------------------------------------------------

    async def state(self, tenant: str, session_id: str) -> ConversationState:
        """The conversation's state, a waiting one past ``claim_timeout_s`` handed back first."""
        store = self.conversations.for_tenant(tenant)
        state = await store.state(session_id)
        if state is None:
            raise SessionNotFoundError(f"no session {shown(session_id)} (it may have expired)")
        if timed_out(state, self.settings.claim_timeout_s):
            done = await self._change(tenant, session_id, state, "timeout", raise_conflict=False)
            state = done.state
        return state

    async def listed(self, tenant: str, status: str | None, limit: int) -> list[Listed]:
        found = await self.conversations.for_tenant(tenant).listed(None, limit=10_000)
        out: list[Listed] = []
        for entry in found:
            state = entry.state
            if timed_out(state, self.settings.claim_timeout_s):
                state = await self.state(tenant, entry.session_id)
            if status is None or state.status == status:
                out.append(Listed(entry.session_id, state))
        return out[:limit]

    async def history(self, tenant: str, session_id: str) -> SessionSnapshot:
        snapshot = await self.sessions.for_tenant(tenant).load(session_id)
        if snapshot is None:
            raise SessionNotFoundError(f"no session {shown(session_id)} (it may have expired)")
        return snapshot

    # -- changes -----------------------------------------------------------------------------------

    async def request(
        self, tenant: str, session_id: str, reason: Reason, *, origin: str | None = None
    ) -> ConversationState:
        """Hand the conversation to a person (from ``bot``; a conversation waiting for or held by
        a person already stays as it is, a resolved one is reopened first)."""
        state = await self.state(tenant, session_id)
        if state.status == "resolved":
            state = (await self._change(tenant, session_id, state, "reopen", origin=origin)).state
        if state.status != "bot":
            return state
        snapshot = await self.sessions.for_tenant(tenant).load(
            session_id, last=self.settings.summary_messages
        )
        summary = summarize(snapshot.messages if snapshot else (),
                            last=self.settings.summary_messages)  # fmt: skip
        done = await self._change(tenant, session_id, state, "request", reason=reason,
                                  summary=summary, origin=origin, raise_conflict=False)  # fmt: skip
        return done.state

    async def claim(self, tenant: str, session_id: str, agent: str) -> ConversationState:
        state = await self.state(tenant, session_id)
        return (await self._change(tenant, session_id, state, "claim", agent=agent)).state

    async def handback(self, tenant: str, session_id: str, agent: str) -> ConversationState:
        state = await self._held_by(tenant, session_id, agent)
        return (await self._change(tenant, session_id, state, "handback")).state

    async def resolve(self, tenant: str, session_id: str, agent: str) -> ConversationState:
        state = await self._held_by(tenant, session_id, agent)
        return (await self._change(tenant, session_id, state, "resolve")).state

    async def reopen(self, tenant: str, session_id: str, state: ConversationState) -> None:
        """The customer wrote in a resolved conversation: the bot has it again."""
        await self._change(tenant, session_id, state, "reopen", raise_conflict=False)

    async def reply(self, tenant: str, session_id: str, agent: str, text: str) -> Message:
        """The agent's message: stored as an assistant message with ``author`` the agent, sent
        live to the session's connections (its stream) and to the ``message.created`` webhook.
        Only the agent holding the conversation (status ``human``) may write."""
        state = await self.state(tenant, session_id)
        if state.status != "human":
            raise ConversationStatusError(
                f"the conversation is {state.status!r}: only the agent who claimed it writes",
                code="conversation_status_conflict",
            )
        self._check_holder(state, agent)
        message = Message(role="assistant", content=(TextPart(text=text),), author=agent)
        result = await self.sessions.for_tenant(tenant).append(session_id, message)
        await self.message_added(tenant, session_id, result.message, state=state)
        return result.message

    async def message_added(
        self, tenant: str, session_id: str, message: Message, *, origin: str | None = None,
        state: ConversationState | SessionInfo | None = None, seq: str | None = None,
    ) -> str:  # fmt: skip
        """A message was stored: its event on the session's stream (its sequence number; given
        as ``seq``: the store's turn round trip appended it already), and the
        ``message.created`` webhook when a person has the conversation."""
        if seq is None:
            seq = await self.conversations.for_tenant(tenant).publish(
                session_id, item_event(message, origin)
            )
        if state is not None and state.status != "bot":
            data = {"session_id": session_id, "seq": seq, "item": wire_item_dict(message)}
            await self._webhook(tenant, "message.created", data)
        return seq

    # -- the store's one atomic change, then the webhook -------------------------------------------

    async def _held_by(self, tenant: str, session_id: str, agent: str) -> ConversationState:
        """The state; a conversation a person holds only for that person."""
        state = await self.state(tenant, session_id)
        if state.status == "human":
            self._check_holder(state, agent)
        return state

    @staticmethod
    def _check_holder(state: ConversationState, agent: str) -> None:
        if state.agent != agent:
            raise ConversationStatusError(
                "another agent holds this conversation", code="conversation_not_yours"
            )

    async def _change(
        self, tenant: str, session_id: str, state: ConversationState, action: Action, *,
        agent: str | None = None, reason: Reason | None = None, summary: str | None = None,
        origin: str | None = None, raise_conflict: bool = True,
    ) -> Transitioned:  # fmt: skip
        """``action`` from ``state``, applied only if the stored status is still ``state``'s
        (so of two concurrent changes one wins; the loser gets ``conversation_status_conflict``,
        or the current state with ``raise_conflict=False``)."""
        try:
            new = apply(state, action, agent=agent, reason=reason, summary=summary)
        except ConversationStatusError:
            if raise_conflict:
                raise
            return Transitioned(False, state)
        store = self.conversations.for_tenant(tenant)
        done = await store.transition(session_id, {state.status}, new, status_event(new, origin))
        if not done.applied:
            if raise_conflict:
                raise conflict(action, done.state.status)
            return done
        event = _WEBHOOK_EVENTS.get(action)
        if event is not None:
            data: dict[str, Any] = {"session_id": session_id, "seq": done.seq,
                                    **new.model_dump(mode="json")}  # fmt: skip
            await self._webhook(tenant, event, data)
        log.info("conversation %s: %s -> %s (%s)", action, state.status, new.status, tenant)
        return done

    async def _webhook(self, tenant: str, event: str, data: dict[str, Any]) -> None:
        if self.webhooks is None:
            return
        try:
            await self.webhooks.publish(tenant, event, data)
        except AssistantError as exc:  # the change stands; its webhook is what is lost
            log.warning("webhook %s of tenant %s not queued: %s", event, tenant, exc)
