"""Chat completions: a request's messages in, one streamed reply out. No web framework here:
``POST /v1/chat/completions`` (``server.openai_routes``) and LangChain's in-process chat model
both call it.

    completions = Completions(orchestrator, speech=speech_models)      # one per process
    completion = await completions.for_tenant("acme").start(
        [Message.from_text("user", "Hello!")],
        ResponseOverrides(max_output_tokens=16, stop=("\\n\\n",)),
        session_id=None,                                                # stateless
    )
    async for delta in completion:
        ...
    completion.finish_reason   # "stop" | "length" | "cancelled" | "error"
    completion.usage           # Usage(input_tokens, output_tokens)
    completion.cancel()        # from anywhere: it stops within a token
    await completion.aclose()  # stop now and release the model (safe to call twice)

Messages are domain ``Message`` objects (roles system, user, assistant) whose content may hold
``TextPart``, ``PendingImage`` (a data URL: validated and decoded by the image pipeline) and
``PendingAudio`` (base64 audio: transcribed by the configured speech to text, as uploads are).
Leading system messages are the reply's instructions (else the server's default).

Stateless (``session_id=None``), as OpenAI's endpoint: nothing of the conversation is stored;
the prompt is the request's messages, fitted to the budget as a session's history is (the oldest
left out first, ``prompt.build_prompt``). Images still go through the image pipeline, whose blobs
and embedding cache are content-addressed data (by the image's sha256), not the conversation.

A support bot (the orchestrator has a ``Grounder``): the turn is grounded in the tenant's
knowledge base as a session's is (``assistant.knowledge.grounded_turn``); ``annotations`` are the
reply's citations and ``unanswered`` tells that the fallback was the reply (no model call).

Tied to a session: the request's new turn (its messages after the last assistant message) is
stored in the session, the prompt comes from the stored history, and the reply is stored, as a
WebSocket turn's is; a REST client and a WebSocket client then share one conversation.

``start`` does everything up to the reply's first delta before it returns, so whatever is wrong
with the request (``no_input``, ``context_length_exceeded``, an image or audio error, an unknown
session, the model failing at once) is raised from it, before a caller has sent anything.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from assistant.errors import InvalidRequestError, NoInputError
from assistant.handoff.gate import TurnGate
from assistant.handoff.service import Handoff
from assistant.knowledge.answer import Grounding
from assistant.knowledge.grounded_turn import ground_prompt
from assistant.messages import Citation, Message, PendingAudio, TextPart, new_id
from assistant.orchestrator import Orchestrator, ResponseOverrides, ResponseRun
from assistant.ports import FinishReason, Generation, Usage
from assistant.prompt import build_prompt, current_turn_start
from assistant.rendering import MessageRenderer
from assistant.voice.models import SpeechModels
from assistant.voice.uploads import transcribe_pending

__all__ = ["Completion", "Completions", "ResponseOverrides"]

_RUN_FINISH: dict[str, FinishReason] = {
    "completed": "stop", "incomplete": "length", "cancelled": "cancelled", "failed": "error",
}  # fmt: skip


@dataclass
class Completion:
    """One reply streaming: iterate it once for its text deltas; ``finish_reason`` and ``usage``
    are final when the iteration ends (``finish_reason`` is None until then)."""

    id: str
    created: int  # unix seconds
    session_id: str | None
    _source: Generation | ResponseRun
    _deltas: AsyncIterator[str]
    _first: str | None = None
    _prompt_tokens: int = 0
    _grounding: Grounding | None = None  # stateless: the citations are made from the text
    _pieces: list[str] = field(default_factory=list, repr=False)
    _iterated: bool = field(default=False, repr=False)

    @property
    def annotations(self) -> tuple[Citation, ...]:
        """The reply's sources (support bot), final when the iteration ends."""
        source = self._source
        if isinstance(source, ResponseRun):
            part = source.message.content[0] if source.message is not None else None
            return part.annotations if isinstance(part, TextPart) else ()
        grounding = self._grounding
        if grounding is None or not grounding.answerable:
            return ()
        return grounding.citations("".join(self._pieces))

    @property
    def unanswered(self) -> bool:
        """True when nothing in the knowledge base was relevant: the reply is the fallback."""
        source = self._source
        grounding = source.grounding if isinstance(source, ResponseRun) else self._grounding
        return grounding is not None and not grounding.answerable

    @property
    def finish_reason(self) -> FinishReason | None:
        source = self._source
        if isinstance(source, Generation):
            return source.finish_reason
        return _RUN_FINISH[source.status] if source.status is not None else None

    @property
    def usage(self) -> Usage:
        usage = self._source.usage
        if not usage.input_tokens and self._prompt_tokens:  # an adapter that does not count
            return Usage(self._prompt_tokens, usage.output_tokens)
        return usage

    def cancel(self) -> None:
        self._source.cancel()

    async def aclose(self) -> None:
        self._source.cancel()
        aclose = getattr(self._deltas, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._iterated:
            raise RuntimeError("a completion is iterated once")
        self._iterated = True
        keep = self._pieces.append if self._grounding is not None else None
        try:
            if self._first:
                if keep is not None:
                    keep(self._first)
                yield self._first
            async for delta in self._deltas:
                if keep is not None:
                    keep(delta)
                yield delta
        finally:
            await self.aclose()


class Completions:
    """Completions over an orchestrator's model, store and image pipeline; ``speech``
    transcribes ``input_audio`` (None: audio is refused with ``unsupported_content``)."""

    def __init__(self, orchestrator: Orchestrator, *, speech: SpeechModels | None = None) -> None:
        self.orchestrator = orchestrator
        self.speech = speech
        #: The handoff: a session held by a person gets its ``handoff_reply``, no model call.
        self.handoff: Handoff | None = None
        self.created = int(time.time())  #: unix seconds: the model's ``created`` on /v1/models

    def for_tenant(self, tenant: str) -> Completions:
        """The same over ``tenant``'s sessions and store."""
        view = copy.copy(self)
        view.orchestrator = self.orchestrator.for_tenant(tenant)
        return view

    async def start(
        self,
        messages: Sequence[Message],
        overrides: ResponseOverrides = ResponseOverrides(),
        *,
        session_id: str | None = None,
    ) -> Completion:
        """Start the reply to ``messages`` (see the module's docstring); the options not given
        are the server's. ``session_id``: the stored session the exchange is appended to
        (``session_not_found`` if the tenant has none by that id)."""
        messages = [await self._transcribed(m) for m in messages]
        lead = 0
        while lead < len(messages) and messages[lead].role == "system":
            lead += 1
        if lead:
            instructions = "\n".join(m.text for m in messages[:lead])
            overrides = replace(overrides, instructions=overrides.instructions or instructions)
        rest = messages[lead:]
        if session_id is None:
            completion = await self._stateless(rest, overrides)
        else:
            completion = await self._in_session(session_id, rest, overrides)
        try:
            completion._first = await anext(aiter(completion._deltas), None)
        except BaseException:
            await completion.aclose()
            raise
        return completion

    async def _transcribed(self, message: Message) -> Message:
        if not any(isinstance(part, PendingAudio) for part in message.content):
            return message
        if self.speech is None or not self.speech.enabled:
            raise InvalidRequestError(
                "audio is not enabled on this server", code="unsupported_content"
            )
        return await transcribe_pending(self.speech, message)

    async def _stateless(
        self, messages: Sequence[Message], overrides: ResponseOverrides
    ) -> Completion:
        orchestrator = self.orchestrator
        if not any(m.role == "user" for m in messages):
            raise NoInputError("the messages hold no user message to respond to")
        messages = [await orchestrator.ingest(m) for m in messages]
        vision = await orchestrator.image_pipeline() if any(m.images for m in messages) else None
        render = await MessageRenderer(orchestrator.llm).for_history(messages, vision)
        instructions = (
            overrides.instructions
            or await orchestrator.bot_instructions()
            or orchestrator.defaults.instructions
        )
        count = orchestrator.token_counter
        await count.prepare([instructions, *(m.text for m in messages)])
        budget = orchestrator.defaults.budget(overrides)
        built = build_prompt(instructions, messages, budget, count, render)
        grounding = None
        if orchestrator.grounder is not None:
            built, grounding = await ground_prompt(
                orchestrator.grounder, orchestrator.store.tenant, messages, built, budget=budget,
                count=count, vision=vision,
                rebuild=lambda b: build_prompt(instructions, messages, b, count, render),
            )  # fmt: skip
        if grounding is not None and not grounding.answerable:
            generation = grounding.fallback_reply()
        else:
            options = orchestrator.defaults.options(overrides)
            generation = orchestrator.llm.stream(built.prompt, options)
        return Completion(
            new_id("chatcmpl"), int(time.time()), None, generation, aiter(generation),
            _prompt_tokens=built.tokens, _grounding=grounding,
        )  # fmt: skip

    async def _in_session(
        self, session_id: str, messages: Sequence[Message], overrides: ResponseOverrides
    ) -> Completion:
        orchestrator = self.orchestrator
        await orchestrator.open_session(session_id)  # session_not_found before anything is stored
        turn = messages[current_turn_start(messages) :]
        if not any(m.role == "user" for m in turn):
            raise NoInputError(
                "the messages end with no user message after the last assistant one: nothing new "
                "to store in the session and answer"
            )
        lease = orchestrator.new_lease(session_id)
        gate = self.handoff and TurnGate(self.handoff, orchestrator.store.tenant, session_id)
        try:
            for message in turn:
                added = await orchestrator.add_item(session_id, message, lease)
                if gate and added.created:
                    await gate.message_added(added.message, lease.snapshot and lease.snapshot.info)
        except BaseException:
            await lease.release()
            raise
        run = orchestrator.start_response()
        if gate:
            deltas = gate.respond(orchestrator, run, overrides, lease)
        else:
            deltas = orchestrator.respond(session_id, run, overrides, lease)
        return Completion(new_id("chatcmpl"), int(time.time()), session_id, run, deltas)
