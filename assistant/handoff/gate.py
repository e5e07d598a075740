"""The turn gate: while a person has the conversation the model does not answer.

``TurnGate.respond`` stands where ``Orchestrator.respond`` stood (the realtime connection's
responses, a session-tied chat completion) and reads the session's status from the turn's own
history read (``SessionInfo.status`` comes back with the begin-turn round trip: no extra one).

    resolved                          the customer wrote again: reopened, the bot answers
    waiting_human past the timeout    handed back to the bot, which answers
    bot, the customer asks a person   handed off (``customer_request``), then as held:
    waiting_human / human (held)      the profile's ``handoff_reply``, no model call, not stored
    bot                               the model answers; then a model error, or the profile's
                                      ``handoff_after_unanswered`` unanswered replies in a row,
                                      hand the conversation off (``model_error``, ``unanswered``)

Every message stored on the way (the bot's reply; the customer's, by the caller) goes to the
session's event stream (``Handoff.message_added``): the bot's deltas do not, only its final
item, one stream write per reply instead of one per token; none at all when the turn's lease
``publishes`` (the store's turn scripts append them: ``lease_events``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from assistant.errors import ModelError
from assistant.handoff.service import Handoff, item_event
from assistant.handoff.triggers import asks_for_person, too_many_unanswered
from assistant.knowledge.answer import BotProfile
from assistant.messages import ConversationStatus, Message, SessionInfo, TextPart
from assistant.orchestrator import Orchestrator, ResponseOverrides, ResponseRun
from assistant.ports.conversations import Event
from assistant.turn_lease import TurnLease

DEFAULT_REPLY = "A person will answer you here shortly."


class TurnGate:
    def __init__(self, handoff: Handoff, tenant: str, session_id: str, origin: str | None = None):
        self.handoff = handoff
        self.tenant = tenant
        self.session_id = session_id
        #: The connection whose events these are (its own stream events are not echoed to it).
        self.origin = origin
        #: The status as last seen (a turn's read, or the stream's events): a voice session does
        #: not start an early reply while it is not ``bot``.
        self.status: ConversationStatus = "bot"

    def note_status(self, status: ConversationStatus) -> None:
        """The session's stream told of a status change."""
        self.status = status

    def lease_events(self, message: Message) -> Event:
        """``TurnLease.events``: a message the connection's lease stores, as its stream event."""
        return item_event(message, self.origin)

    async def message_added(
        self, message: Message, info: SessionInfo | None = None, seq: str | None = None
    ) -> str:
        """The customer's message was stored: on the stream unless ``seq`` says it is there
        already (and the webhook while held)."""
        return await self.handoff.message_added(
            self.tenant, self.session_id, message, origin=self.origin, state=info, seq=seq
        )

    async def request(self) -> None:
        """The customer asked for a person (``conversation.handoff.request``)."""
        await self.handoff.request(self.tenant, self.session_id, "customer_request",
                                   origin=self.origin)  # fmt: skip

    async def respond(
        self,
        orchestrator: Orchestrator,
        run: ResponseRun,
        overrides: ResponseOverrides,
        lease: TurnLease,
    ) -> AsyncIterator[str]:
        snapshot = await lease.history()
        profile = await self.handoff.profile(self.tenant)
        held = await self._held(snapshot.info, snapshot.messages, profile)
        self.status = snapshot.info.status if held else "bot"
        if held:
            await lease.release()
            reply = profile.handoff_reply or DEFAULT_REPLY
            run.status = "completed"
            run.message = Message(id=run.item_id, role="assistant",
                                  content=(TextPart(text=reply),))  # fmt: skip
            yield reply
            return
        deltas = orchestrator.respond(self.session_id, run, overrides, lease)
        try:
            async for delta in deltas:
                yield delta
        except ModelError:
            await self.handoff.request(self.tenant, self.session_id, "model_error")
            raise
        finally:
            await deltas.aclose()
        if run.message is not None and not lease.publishes:
            await self.handoff.message_added(self.tenant, self.session_id, run.message,
                                             origin=self.origin)  # fmt: skip
            after = profile.handoff_after_unanswered
            if too_many_unanswered([*snapshot.messages, run.message], after):
                await self.handoff.request(self.tenant, self.session_id, "unanswered")

    async def _held(
        self, info: SessionInfo, history: tuple[Message, ...], profile: BotProfile
    ) -> bool:
        status = info.status
        if status == "resolved":
            state = await self.handoff.state(self.tenant, self.session_id)
            if state.status == "resolved":
                await self.handoff.reopen(self.tenant, self.session_id, state)
            return False
        if status == "waiting_human":
            state = await self.handoff.state(self.tenant, self.session_id)  # the timeout applied
            status = state.status
        if status == "bot":
            last = history[-1] if history else None
            if last is None or last.role != "user":
                return False
            if not asks_for_person(last.text, profile.handoff_phrases):
                return False
            await self.handoff.request(self.tenant, self.session_id, "customer_request",
                                       origin=self.origin)  # fmt: skip
        return True
