"""The answering policy of a support bot, transport-agnostic (the turn path calls it):

    grounding = await ground(retriever, profile, tenant, query, k)
    grounding.answerable        False: no passage reached the profile's threshold; the reply is
                                ``profile.fallback``, no model call, stored ``unanswered``
    grounding.user_text(text)   the current user turn as the model reads it: the numbered sources,
                                then the question (the passages go into the user turn, not into
                                the system prompt, so the history's prefix, and the model's KV
                                cache of it, stay the same from turn to turn)
    grounding.citations(reply)  the sources as OpenAI-style ``file_citation`` annotations
                                (``messages.Citation``): those the reply cites as ``[n]`` at their
                                marker, else all of them at the reply's end
    grounding.fallback_reply()  the fallback as a ``Generation`` that calls no model

``query`` is the user's words: typed text, an audio part's transcript, an image's labels."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from assistant.config import BotSettings
from assistant.messages import Citation
from assistant.ports import CancelToken, Generation
from assistant.ports.retrieval import Passage, Retriever

SOURCES_INSTRUCTION = (
    "Answer it from these sources, with the exact facts they give (numbers, names, codes), "
    "citing them as [1], [2]:"
)
_MARKER = re.compile(r"\[(\d{1,2})\]")
_QUOTE_CHARS = 240


@dataclass(frozen=True)
class BotProfile:
    """A tenant's bot (stored per tenant; ``BotSettings`` is the default of one that has none)."""

    name: str = "Assistant"
    instructions: str = ""
    welcome: str = ""
    knowledge_base: str = ""
    threshold: float = 0.22
    fallback: str = ""
    #: ``assistant.handoff.triggers``: the phrases asking for a person, the unanswered replies
    #: in a row that hand over (0: never), and the reply while a person has the conversation.
    handoff_phrases: tuple[str, ...] = ()
    handoff_after_unanswered: int = 0
    handoff_reply: str = ""

    @classmethod
    def from_settings(cls, bot: BotSettings) -> BotProfile:
        return cls(**bot.model_dump())

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None, default: BotProfile) -> BotProfile:
        if not stored:
            return default
        known = {k: v for k, v in stored.items() if k in cls.__dataclass_fields__}
        return cls(**{**default.__dict__, **known})


@dataclass(frozen=True)
class Grounding:
    passages: tuple[Passage, ...] = field(default=())  # those at or above the threshold
    fallback: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.passages)

    def user_text(self, question: str) -> str:
        """The question first, then the sources: SmolLM2-135M's replies held the key fact in 7
        of 14 answered test questions this way; in 5 with the sources first, each labelled with
        its title and page, and the question last; in 4 with the instruction between them."""
        lines = [f"Question: {question}", "", SOURCES_INSTRUCTION]
        lines += [f"[{n}] {p.chunk.text.strip()}" for n, p in enumerate(self.passages, 1)]
        return "\n".join(lines)

    def citations(self, reply: str) -> tuple[Citation, ...]:
        """``file_citation`` annotations, in the order they are cited."""
        cited: dict[int, int] = {}
        for match in _MARKER.finditer(reply):
            number = int(match.group(1))
            if 1 <= number <= len(self.passages):
                cited.setdefault(number, match.start())
        if not cited:
            cited = dict.fromkeys(range(1, len(self.passages) + 1), len(reply))
        out = []
        for number, index in cited.items():
            chunk = self.passages[number - 1].chunk
            out.append(Citation(
                file_id=chunk.document_id, filename=chunk.filename, index=index, number=number,
                title=chunk.title, heading=chunk.heading, page=chunk.page,
                quote=chunk.text.strip()[:_QUOTE_CHARS],
            ))  # fmt: skip
        return tuple(out)

    def fallback_reply(self) -> Generation:
        """The profile's fallback as the reply: one delta, finished, no model called."""
        return Generation(_chunks=_once(self.fallback), cancel_token=CancelToken(),
                          finish_reason="stop")  # fmt: skip


async def _once(text: str) -> AsyncIterator[str]:
    if text:
        yield text


async def ground(
    retriever: Retriever, profile: BotProfile, tenant: str, query: str, k: int
) -> Grounding | None:
    """None when the profile names no knowledge base (the plain assistant answers)."""
    if not profile.knowledge_base:
        return None
    hits = await retriever.search(tenant, profile.knowledge_base, query, k) if query.strip() else []
    passing = tuple(p for p in hits if p.score >= profile.threshold)
    return Grounding(passing, profile.fallback)
