"""Long conversations: the oldest messages summarised in the background, dropped in chunks.

Past the budget, ``build_prompt`` leaves the oldest messages out one per turn: the prompt's prefix
changes every turn (the local model's KV cache of the conversation is reused up to the first
change only) and the model forgets with no trace. Here, once a turn's prompt reaches
``prompt.summary_high_water`` of the budget (or left something out), ``Summaries.consider`` starts
a background task that has the configured model summarise the oldest messages (and the earlier
summary, if any) down to what fits in ``prompt.summary_low_water`` of the budget, and stores the
result as the session's ``ConversationSummary`` (``SessionStore.finish_summary``: atomic, a late
summary never replaces one covering more). From the next turn on ``Summaries.shown`` puts
it in the system prompt ("Summary of the earlier conversation: ...") in place of the messages it
covers: the prefix changes once per chunk, and stays the same over the turns until the next one.
A summary takes at most half the low-water share of the budget (a budget too small for
``summary_max_tokens`` gets none; its last notes are left out where they do not fit).


The turn never waits for a summary: until one is stored, the prompt is built as before (the
oldest messages dropped, with the omission note). One summary at a time per session, across
processes (``SessionStore.claim_summary``, a lease); a failure is logged and tried again on a turn
``prompt.summary_retry_s`` later, never surfaced to the turn. A summary is one more generation for
the model: the local adapter's continuous batching runs it beside the conversations' own.

A small model paraphrases numbers away, so the summary keeps ``notes`` too: the user's sentences
with a digit in them (order ids, amounts, dates), word for word, the first ``summary_notes``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from assistant.config import PromptSettings
from assistant.messages import Message
from assistant.ports import (
    ConversationSummary,
    GenerationOptions,
    LanguageModel,
    Prompt,
    PromptMessage,
    SessionSnapshot,
    SessionStore,
)
from assistant.prompt import BuiltPrompt, PromptBudget, current_turn_start, message_cost, text_only
from assistant.token_counts import TokenCounter

log = logging.getLogger(__name__)

SUMMARY_HEADER = "Summary of the earlier conversation:"
NOTES_HEADER = "Noted:"
INSTRUCTION = (
    "Summarise the conversation below for the assistant who continues it. Keep every name, "
    "number, order id, date and decision. Write a few short sentences and nothing else."
)
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_NOTE_CHARS = 200


def with_summary(instructions: str, summary: ConversationSummary) -> str:
    """The system prompt with the summary shown as such."""
    text = f"{instructions}\n{SUMMARY_HEADER} {summary.text}"
    if summary.notes:
        text += f"\n{NOTES_HEADER} " + " ".join(summary.notes)
    return text


def _visible(snapshot: SessionSnapshot) -> tuple[ConversationSummary | None, int]:
    """The summary that applies to the snapshot's history and how many of its messages it covers
    (None, 0 when there is none or it does not match this history)."""
    summary, history = snapshot.summary, snapshot.messages
    if summary is None:
        return None, 0
    skip = summary.upto - snapshot.first
    if skip <= 0:
        return summary, 0  # it covers messages before the history read: all of it is newer
    if skip > current_turn_start(history) or history[skip - 1].id != summary.last_id:
        return None, 0  # not this history's (never the current turn)
    return summary, skip


@dataclass(frozen=True)
class _Plan:
    previous: ConversationSummary | None
    messages: tuple[Message, ...]  # to summarise: the oldest shown
    upto: int  # the new summary covers the session's messages [0, upto)


class Summaries:
    """The background summaries of a process's sessions (shared by the orchestrator's tenant
    views). ``made``, ``failed``: counts, for tests and metrics."""

    def __init__(self, llm: LanguageModel, settings: PromptSettings, count: TokenCounter) -> None:
        self.llm = llm
        self.settings = settings
        self.count = count
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self.made = 0
        self.failed = 0

    def consider(
        self,
        store: SessionStore,
        session_id: str,
        snapshot: SessionSnapshot,
        built: BuiltPrompt,
        budget: PromptBudget,
    ) -> None:
        """After a turn's prompt was built: start summarising if it passed the high-water mark
        (or left messages out) and no summary of the session is being made."""
        high = self.settings.summary_high_water
        if high <= 0 or (built.tokens < high * budget.tokens and not built.dropped):
            return
        if self.settings.summary_max_tokens > self._room(budget):
            return  # a budget too small for a summary: the oldest messages are only dropped
        key = (store.tenant, session_id)
        if key in self._running or time.monotonic() < self._retry_at.get(key, 0.0):
            return
        plan = self._plan(snapshot, built, budget)
        if plan is None:
            return
        if len(self._retry_at) > 4096:
            self._retry_at.clear()
        task = asyncio.create_task(self._summarise(store, session_id, snapshot, plan))
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    def shown(
        self, instructions: str, snapshot: SessionSnapshot, budget: PromptBudget
    ) -> tuple[str, tuple[Message, ...]]:
        """The turn's instructions with the session's summary, and its history without the
        messages the summary covers. The summary takes at most ``_room`` of the budget (its last
        notes left out to fit; not shown at all when its text alone does not fit)."""
        summary, skip = _visible(snapshot)
        if summary is None:
            return instructions, snapshot.messages
        room, notes = self._room(budget), summary.notes
        while notes and self.count(with_summary("", replace(summary, notes=notes))) > room:
            notes = notes[:-1]
        summary = replace(summary, notes=notes)
        if self.count(with_summary("", summary)) > room:
            return instructions, snapshot.messages
        return with_summary(instructions, summary), snapshot.messages[skip:]

    def _room(self, budget: PromptBudget) -> float:
        """What a summary may take of the budget: half the low-water mark."""
        return budget.tokens * self.settings.summary_low_water / 2

    @property
    def running(self) -> int:
        """Summaries being made now."""
        return len(self._running)

    async def idle(self) -> None:
        """Wait until no summary is being made (tests, the bench, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def _plan(
        self, snapshot: SessionSnapshot, built: BuiltPrompt, budget: PromptBudget
    ) -> _Plan | None:
        """The oldest shown messages to summarise, so that what stays (beside the system prompt,
        a summary of ``summary_max_tokens`` and the current turn) fits in the low-water mark."""
        previous, skip = _visible(snapshot)
        history = snapshot.messages[skip:]
        start = current_turn_start(history)

        def cost(message: Message | PromptMessage) -> int:
            shown = text_only(message) if isinstance(message, Message) else message
            return message_cost(shown, budget, self.count)

        room = self.settings.summary_low_water * budget.tokens - cost(built.prompt.messages[0])
        room -= self.settings.summary_max_tokens + sum(cost(m) for m in history[start:])
        cut = start
        while cut > 0 and cost(history[cut - 1]) <= room:
            cut -= 1
            room -= cost(history[cut])
        # What stays starts with a user message, where a turn starts.
        while 0 < cut < start and not (history[cut].role == "user" and _turn_starts(history, cut)):
            cut += 1
        if cut == 0:
            return None
        first = snapshot.first + skip
        return _Plan(previous, tuple(history[:cut]), first + cut)

    async def _summarise(
        self, store: SessionStore, session_id: str, snapshot: SessionSnapshot, plan: _Plan
    ) -> None:
        token, created_at = secrets.token_hex(8), snapshot.info.created_at
        claimed = False
        try:
            claimed = await store.claim_summary(session_id, token, self.settings.summary_lock_ms)
            if not claimed:
                return  # another process makes one now
            summary = ConversationSummary(
                await self._generate(plan), plan.upto, plan.messages[-1].id, self._notes(plan)
            )
            claimed = False  # finish_summary gives the claim back, stored or not
            if await store.finish_summary(session_id, token, summary, created_at):
                self.made += 1
                log.info("session %s: summary of its first %d messages stored", session_id,
                         plan.upto)  # fmt: skip
        except Exception:  # noqa: BLE001 - a summary's failure is never the conversation's
            self.failed += 1
            self._retry_at[(store.tenant, session_id)] = (
                time.monotonic() + self.settings.summary_retry_s
            )
            log.warning("session %s: the summary failed (tried again later)", session_id,
                        exc_info=True)  # fmt: skip
            if claimed:
                try:
                    await store.finish_summary(session_id, token, None, created_at)
                except Exception:  # noqa: BLE001 - the claim's lease runs out by itself
                    log.debug("session %s: summary claim not given back", session_id)

    async def _generate(self, plan: _Plan) -> str:
        lines = []
        if plan.previous is not None:
            lines.append(f"(Earlier: {plan.previous.text})")
        for message in plan.messages:
            if message.text.strip():
                lines.append(f"{message.role.capitalize()}: {message.text.strip()}")
        messages = (PromptMessage("system", INSTRUCTION), PromptMessage("user", "\n".join(lines)))
        prompt = Prompt(messages)
        options = GenerationOptions(max_new_tokens=self.settings.summary_max_tokens)
        generation = self.llm.stream(prompt, options)
        try:
            text = "".join([delta async for delta in generation]).strip()
        finally:
            await generation.aclose()
        if not text:
            raise RuntimeError("the model gave an empty summary")
        return " ".join(text.split())

    def _notes(self, plan: _Plan) -> tuple[str, ...]:
        """The earlier summary's notes, then the user's new sentences that hold a digit."""
        notes = list(plan.previous.notes) if plan.previous is not None else []
        for message in plan.messages:
            if message.role != "user":
                continue
            for sentence in _SENTENCES.split(" ".join(message.text.split())):
                if any(c.isdigit() for c in sentence) and sentence not in notes:
                    notes.append(sentence[:_NOTE_CHARS])
        return tuple(notes[: self.settings.summary_notes])


def _turn_starts(history: Sequence[Message], index: int) -> bool:
    return index == 0 or history[index - 1].role != "user"
