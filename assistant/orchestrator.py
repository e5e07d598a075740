"""One conversation turn, transport-agnostic: store the user's items, then for a response load the
history, fit the prompt to the budget, stream the reply and persist it, cut short or not.

    add_item(session, message, lease)   -> stored (idempotent on the client's turn id), lease taken
    respond(session, run, lease) -> deltas
        history (from the lease's write, or re-read) -> build prompt -> LanguageModel.stream
        (its text so far goes to the store with the lease's renewals: if this process dies, the
        next turn stores it as interrupted)
        -> store the reply (completed | incomplete | interrupted) and give the lease back

With a ``Grounder`` (a support bot), the tenant's bot profile gives the turn's instructions and
knowledge base: the passages the turn's words find go into the prompt's current user turn and
the reply is stored with them as citations; when none is relevant, the profile's fallback is the
reply, with no model call, stored ``unanswered`` (``assistant.knowledge.grounded_turn``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.errors import (
    AssistantError,
    InvalidRequestError,
    NoInputError,
    SessionNotFoundError,
    shown,
)
from assistant.knowledge.answer import Grounding
from assistant.knowledge.grounded_turn import ground_prompt
from assistant.knowledge.grounder import Grounder
from assistant.messages import (
    Message,
    MessageStatus,
    PendingImage,
    ResponseStatus,
    SessionInfo,
    TextPart,
    new_id,
    secret_id,
)
from assistant.ports import (
    AppendResult,
    Generation,
    LanguageModel,
    SessionStore,
    Usage,
)
from assistant.prompt import BuiltPrompt, PromptBudget, PromptCache, build_prompt
from assistant.rendering import MessageRenderer
from assistant.response_settings import ResponseOverrides, ResponseSettings
from assistant.summaries import Summaries
from assistant.token_counts import TokenCounter
from assistant.turn_lease import StreamingReply, TurnLease
from assistant.vision.pipeline import ImagePipeline

log = logging.getLogger(__name__)

_STORED_STATUS: dict[ResponseStatus, MessageStatus] = {
    "completed": "completed",
    "incomplete": "incomplete",
    "cancelled": "interrupted",
    "failed": "interrupted",
}


@dataclass
class ResponseRun:
    """A response being generated. Iterate ``deltas()`` once; then ``status``, ``message`` and
    ``usage`` hold the outcome. ``cancel()`` may be called at any time, from any task."""

    id: str
    item_id: str
    status: ResponseStatus | None = None
    message: Message | None = None
    usage: Usage = field(default_factory=Usage)
    error: AssistantError | None = None
    prompt: BuiltPrompt | None = None
    #: The knowledge base's passages for this turn (None: the plain assistant answers).
    grounding: Grounding | None = None
    _generation: Generation | None = None
    _cancelled: bool = False

    def cancel(self) -> None:
        self._cancelled = True
        if self._generation is not None:
            self._generation.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled


class Orchestrator:
    def __init__(
        self,
        llm: LanguageModel,
        store: SessionStore,
        *,
        llm_settings: LLMSettings,
        prompt_settings: PromptSettings,
        memory_settings: MemorySettings,
        vision: ImagePipeline | None = None,
        vision_factory: Callable[[], ImagePipeline] | None = None,
        grounder: Grounder | None = None,
    ) -> None:
        """``vision_factory`` (blocking) builds the image pipeline on the first image, so a server
        that never sees one never loads the encoder. ``grounder``: the tenants' bot profiles and
        knowledge bases (None: every turn is the plain assistant's)."""
        self.llm = llm
        self.store = store
        self.vision = vision  # the root's; a tenant view uses it over its own store
        self._vision_factory = vision_factory
        self._vision_lock = asyncio.Lock()
        self.grounder = grounder
        self._root = self
        self._tenants: dict[str, Orchestrator] = {store.tenant: self}
        self._tenant_vision: ImagePipeline | None = None
        #: The server's side of a response's settings (prompt budget, generation options).
        self.defaults = ResponseSettings(llm, llm_settings, prompt_settings)
        self._memory_settings = memory_settings
        # Token counts of message texts, so a turn only tokenizes what is new (on the loop);
        # shared by the tenant views and the stateless completions (``assistant.completions``).
        self.token_counter = TokenCounter(
            llm.count_tokens, context_tokens=llm.capabilities.context_tokens
        )
        self._renderer = MessageRenderer(llm)
        self._background: set[asyncio.Task[object]] = set()
        # Each session's last prompt: the next turn's is built from it when the history only grew.
        self._prompts = PromptCache()
        self.summaries = Summaries(llm, prompt_settings, self.token_counter)  # long conversations

    # -- tenants -----------------------------------------------------------------------------------

    def for_tenant(self, tenant: str) -> Orchestrator:
        """This orchestrator over ``tenant``'s store: the same model, vision pipeline and caches;
        another tenant's sessions are not found from it."""
        root = self._root
        view = root._tenants.get(tenant)
        if view is None:
            if len(root._tenants) >= 1024:  # views are cheap to make again
                root._tenants = {root.store.tenant: root}
            view = copy.copy(root)
            view.store = root.store.for_tenant(tenant)
            view._tenant_vision = None
            root._tenants[tenant] = view
        return view

    # -- sessions ----------------------------------------------------------------------------------

    async def open_session(self, session_id: str | None = None) -> SessionInfo:
        """Resume ``session_id`` (``SessionNotFoundError`` if unknown) or create a new session."""
        if session_id is not None:
            snapshot = await self.store.load(session_id, last=0)
            if snapshot is None:
                raise SessionNotFoundError(f"no session {shown(session_id)} (it may have expired)")
            return snapshot.info
        return await self.store.create(SessionInfo(id=secret_id("sess")))

    async def update_session(self, session_id: str, **fields: object) -> SessionInfo:
        return await self.store.update_info(session_id, **fields)

    # -- images ------------------------------------------------------------------------------------

    async def image_pipeline(self) -> ImagePipeline | None:
        """The process's image pipeline (built on the first image), over this tenant's store."""
        root = self._root
        if root.vision is None and root._vision_factory is not None:
            async with root._vision_lock:
                if root.vision is None:
                    root.vision = await asyncio.to_thread(root._vision_factory)
        if root.vision is None or self is root:
            return root.vision
        if self._tenant_vision is None or self._tenant_vision.encoder is not root.vision.encoder:
            self._tenant_vision = root.vision.with_store(self.store)
        return self._tenant_vision

    async def ingest(self, message: Message) -> Message:
        """``message`` with its client images (``PendingImage``) validated and stored as blobs
        (content-addressed ``ImagePart``); ``unsupported_content`` without a vision encoder."""
        if not any(isinstance(part, PendingImage) for part in message.content):
            return message
        vision = await self.image_pipeline()
        if vision is None:
            raise InvalidRequestError(
                "this server has no vision encoder configured", code="unsupported_content"
            )
        parts = [
            await vision.ingest(part) if isinstance(part, PendingImage) else part
            for part in message.content
        ]
        return message.model_copy(update={"content": tuple(parts)})

    def new_lease(self, session_id: str) -> TurnLease:
        """A connection's writer lease on its session (see ``turn_lease``)."""
        return TurnLease(
            self.store,
            session_id,
            lease_s=self._memory_settings.lock_ttl_ms / 1000,
            wait_s=self._memory_settings.lock_wait_s,
            last=self.defaults.prompt_settings.max_history_messages,
            flush_s=self._memory_settings.partial_flush_ms / 1000,
        )

    def forget_session(self, session_id: str) -> None:
        """Drop what this process keeps of ``session_id`` for its next turn (its last prompt, the
        store's parsed metadata): its connection closed. A turn after that (a resume) builds it
        again from the store."""
        self._prompts.forget(session_id)
        self.store.forget_session(session_id)

    async def add_item(
        self, session_id: str, message: Message, lease: TurnLease | None = None
    ) -> AppendResult:
        """Store a client item, idempotent on its turn id. With the connection's ``lease`` the
        lease is kept for the response that follows; without one it is given back at once.
        Images are validated and stored as blobs first."""
        message = await self.ingest(message)
        if lease is not None:
            return await lease.add(message)
        lease = self.new_lease(session_id)
        try:
            return await lease.add(message)
        finally:
            await lease.release()

    # -- responses ---------------------------------------------------------------------------------

    def start_response(self) -> ResponseRun:
        return ResponseRun(id=new_id("resp"), item_id=new_id("msg"))

    async def respond(
        self,
        session_id: str,
        run: ResponseRun,
        overrides: ResponseOverrides = ResponseOverrides(),
        lease: TurnLease | None = None,
    ) -> AsyncIterator[str]:
        """Stream the reply's text deltas; the outcome lands on ``run`` and in the store.

        The session's writer lease is held from reading the history until the reply is stored.
        One generator from the model's deltas to the caller (each layer costs every token)."""
        lease = lease or self.new_lease(session_id)
        try:
            run.prompt, run.grounding = await self._prepare(session_id, overrides, lease)
            pieces: list[str] = []
            lease.keep_alive(StreamingReply(run.item_id, pieces))  # its text, should we die
            if run.grounding is not None and not run.grounding.answerable:
                generation = run.grounding.fallback_reply()
            else:
                generation = self.llm.stream(run.prompt.prompt, self.defaults.options(overrides))
            run._generation = generation
            if run.cancelled:
                generation.cancel()
            try:
                async for delta in generation:
                    pieces.append(delta)
                    yield delta
            except AssistantError as exc:
                run.error = exc
            finally:
                # On success, cancel, a model error, and when the consumer goes away: the reply
                # (whole or cut short) is stored in any case, shielded from cancellation.
                await self._store_reply(run, generation, "".join(pieces), lease)
            if run.error is not None:
                raise run.error
        finally:
            await lease.release()  # a no-op once the reply was stored

    async def _prepare(
        self, session_id: str, overrides: ResponseOverrides, lease: TurnLease
    ) -> tuple[BuiltPrompt, Grounding | None]:
        snapshot = await lease.history()
        history = snapshot.messages
        if not any(m.role == "user" for m in history):
            raise NoInputError("the conversation holds no user message to respond to")
        instructions = (
            overrides.instructions
            or snapshot.info.instructions
            or await self.bot_instructions()
            or self.defaults.instructions
        )
        instructions, history = self.summaries.shown(
            instructions, snapshot, self.defaults.budget(overrides)
        )
        vision = await self.image_pipeline() if any(m.images for m in history) else None
        render = await self._renderer.for_history(history, vision)
        await self.token_counter.prepare([instructions, *(m.text for m in history)])
        budget, count = self.defaults.budget(overrides), self.token_counter
        built = self._prompts.build(session_id, instructions, history, budget, count, render)
        self.summaries.consider(self.store, session_id, snapshot, built, budget)
        if self.grounder is None:
            return built, None

        def rebuild(budget: PromptBudget) -> BuiltPrompt:
            return build_prompt(instructions, history, budget, count, render, session_id)

        return await ground_prompt(
            self.grounder, self.store.tenant, history, built, budget=budget, count=count,
            rebuild=rebuild, vision=vision,
        )  # fmt: skip

    async def bot_instructions(self) -> str:
        """The tenant's bot persona (its profile's instructions), "" without a grounder."""
        if self.grounder is None:
            return ""
        return (await self.grounder.profile(self.store.tenant)).instructions

    async def _store_reply(
        self, run: ResponseRun, generation: Generation, text: str, lease: TurnLease
    ) -> None:
        run.status = _status(generation, run)
        await generation.aclose()
        run.usage = generation.usage
        reply = _reply(run, text) if text or run.status == "completed" else None
        try:
            result = await lease.finish(reply)
        except asyncio.CancelledError:
            # Cancelled while storing (the server shutting down): the write goes on in the
            # background (end_turn is idempotent on the message id), the cancellation through.
            task = asyncio.ensure_future(lease.finish(reply))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        run.message = result.message if result is not None else None


def _reply(run: ResponseRun, text: str) -> Message:
    """The reply as stored: a grounded one with its citations, the fallback ``unanswered``."""
    assert run.status is not None
    status: MessageStatus = _STORED_STATUS[run.status]
    grounding, part = run.grounding, TextPart(text=text)
    if grounding is not None and not grounding.answerable:
        status = "unanswered" if status == "completed" else status
    elif grounding is not None:
        part = TextPart(text=text, annotations=grounding.citations(text))
    return Message(id=run.item_id, role="assistant", content=(part,), status=status)


def _status(generation: Generation, run: ResponseRun) -> ResponseStatus:
    if run.error is not None or generation.finish_reason == "error":
        return "failed"
    if run.cancelled or generation.finish_reason == "cancelled":
        return "cancelled"
    if generation.finish_reason == "length":
        return "incomplete"
    if generation.finish_reason is None:  # the consumer stopped iterating
        return "cancelled"
    return "completed"
