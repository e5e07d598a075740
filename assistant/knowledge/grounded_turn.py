"""A turn answered from a knowledge base, as the turn path uses it (the orchestrator's responses
and the stateless chat completions):

    built, grounding = await ground_prompt(grounder, tenant, history, built, budget=..., ...)

The query is the current turn's words: what the user typed, the transcripts of what they said,
and the labels of the images they sent. The passages found go into the current user turn of the
prompt already built (``answer.Grounding.user_text``); the stored message stays as the user sent
it, so the next turn's prompt holds the question, not the passages (the model's cache of the
history is reused up to that question).

When the passages do not fit beside the history, the history makes room (the prompt is built
again with a budget smaller by what they take); when they do not fit even so, the last passages
are left out. ``grounding`` is None when the tenant's profile names no knowledge base; not
``answerable`` when nothing passed its threshold (the fallback is the reply).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from assistant.errors import ContextLengthError
from assistant.knowledge.answer import Grounding
from assistant.knowledge.grounder import Grounder
from assistant.messages import Message
from assistant.ports import IMAGE_MARKER, Prompt, PromptMessage
from assistant.prompt import BuiltPrompt, PromptBudget, current_turn_start, message_cost
from assistant.token_counts import TokenCounter
from assistant.vision.pipeline import ImagePipeline

_PERCENT = re.compile(r"\s*\(\d+%\)")
_DESCRIPTION = "an image of:"


async def turn_query(history: Sequence[Message], vision: ImagePipeline | None) -> str:
    """The current turn's user words, and its images' labels where an encoder can tell them."""
    words: list[str] = []
    for message in history[current_turn_start(history) :]:
        if message.role != "user":
            continue
        text = message.text.replace(IMAGE_MARKER, "").strip()
        if text:
            words.append(text)
        if vision is not None and vision.encoder is not None:
            for part in message.images:
                label = _PERCENT.sub("", await vision.describe(part))
                words.append(label.removeprefix(_DESCRIPTION).strip())
    return "\n".join(w for w in words if w)


async def ground_prompt(
    grounder: Grounder,
    tenant: str,
    history: Sequence[Message],
    built: BuiltPrompt,
    *,
    budget: PromptBudget,
    count: TokenCounter,
    rebuild: Callable[[PromptBudget], BuiltPrompt],
    vision: ImagePipeline | None = None,
) -> tuple[BuiltPrompt, Grounding | None]:
    """``built`` with the current turn grounded (see the module's docstring). ``rebuild`` builds
    the prompt again within a smaller budget."""
    if not (await grounder.profile(tenant)).knowledge_base:
        return built, None  # the plain assistant: no query made
    grounding = await grounder.ground(tenant, await turn_query(history, vision))
    if grounding is None or not grounding.answerable:
        return built, grounding
    question = _question(built)
    grounded = _grounded(built, question, grounding)
    await count.prepare([grounded.text])
    fitted = _fit(built, question, grounded, budget, count)
    if fitted is not None:
        return fitted, grounding
    extra = message_cost(grounded, budget, count) - message_cost(
        built.prompt.messages[question], budget, count
    )
    try:
        smaller = rebuild(PromptBudget(budget.tokens - extra, budget.per_message))
    except ContextLengthError:
        smaller = built  # the current turn alone fills the budget: fewer passages, then
    passages = grounding.passages
    while passages:
        fewer = replace(grounding, passages=passages)
        index = _question(smaller)
        fitted = _fit(smaller, index, _grounded(smaller, index, fewer), budget, count)
        if fitted is not None:
            return fitted, fewer
        passages = passages[:-1]
    return built, replace(grounding, passages=())


def _question(built: BuiltPrompt) -> int:
    """Index of the prompt's last user message: the current turn's question."""
    messages = built.prompt.messages
    return max(i for i, m in enumerate(messages) if m.role == "user")


def _grounded(built: BuiltPrompt, index: int, grounding: Grounding) -> PromptMessage:
    question = built.prompt.messages[index]
    return PromptMessage("user", grounding.user_text(question.text), question.images)


def _fit(
    built: BuiltPrompt,
    index: int,
    grounded: PromptMessage,
    budget: PromptBudget,
    count: TokenCounter,
) -> BuiltPrompt | None:
    """``built`` with its message ``index`` replaced by ``grounded``, None if that passes the
    budget."""
    messages = built.prompt.messages
    tokens = (
        built.tokens
        - message_cost(messages[index], budget, count)
        + message_cost(grounded, budget, count)
    )
    if tokens > budget.tokens:
        return None
    prompt = Prompt((*messages[:index], grounded, *messages[index + 1 :]), built.prompt.cache_key)
    return BuiltPrompt(prompt, tokens, built.dropped)
