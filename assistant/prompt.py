"""Building a turn's prompt: the system prompt, as much history as the token budget allows, and the
current turn. The system prompt and the current turn are never dropped; the oldest history goes
first, and a note tells the model that earlier messages were left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant import heap
from assistant.errors import ContextLengthError
from assistant.messages import Message
from assistant.ports import Prompt, PromptMessage

OMITTED_NOTE = "(Earlier messages of this conversation are omitted.)"
#: Tokens assumed for an image given as pixels (the model's processor decides the real number).
IMAGE_TOKENS_ESTIMATE = 576


@dataclass(frozen=True)
class PromptBudget:
    """``tokens`` is what the whole prompt may use; ``per_message`` is the template's overhead."""

    tokens: int
    per_message: int = 4


@dataclass(frozen=True)
class BuiltPrompt:
    prompt: Prompt
    tokens: int  # estimated prompt tokens, template overhead included
    dropped: int  # history messages left out to fit the budget


def current_turn_start(history: Sequence[Message]) -> int:
    """Index of the first message of the current turn: the user/system messages after the last
    assistant message (the whole history when there is no assistant message yet)."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].role == "assistant":
            return index + 1
    return 0


def text_only(message: Message) -> PromptMessage:
    return PromptMessage(message.role, message.text)


def message_cost(
    message: PromptMessage, budget: PromptBudget, count_tokens: Callable[[str], int]
) -> int:
    """Tokens ``message`` takes in the prompt: its text, its images, the template's overhead."""
    tokens = count_tokens(message.text) + budget.per_message
    if message.images:
        tokens += sum(
            len(image.embeddings) if image.embeddings is not None else IMAGE_TOKENS_ESTIMATE
            for image in message.images
        )
    return tokens


def build_prompt(
    instructions: str,
    history: Sequence[Message],
    budget: PromptBudget,
    count_tokens: Callable[[str], int],
    render: Callable[[Message], PromptMessage] = text_only,
    cache_key: str | None = None,
) -> BuiltPrompt:
    """Fit ``history`` (oldest first, the current turn last) into ``budget``. ``render`` turns a
    stored message into what the model reads (its images as embeddings or as a description);
    ``cache_key`` goes on the prompt (see ``Prompt.cache_key``)."""

    def cost(message: PromptMessage) -> int:
        return message_cost(message, budget, count_tokens)

    rendered = [render(m) for m in history]
    start = current_turn_start(history)
    system_text = instructions
    required = cost(PromptMessage("system", system_text)) + sum(cost(m) for m in rendered[start:])
    if required > budget.tokens:
        raise ContextLengthError(
            f"the instructions and the current turn take {required} tokens; the budget is "
            f"{budget.tokens}"
        )
    earlier = rendered[:start]
    costs = [cost(m) for m in earlier]
    kept_from = 0
    if required + sum(costs) > budget.tokens:
        # Not everything fits: keep the newest messages that fit beside the omission note.
        room = budget.tokens - required - (count_tokens(OMITTED_NOTE) + 1)
        kept_from = len(earlier)
        while kept_from > 0 and costs[kept_from - 1] <= room:
            kept_from -= 1
            room -= costs[kept_from]
        system_text = f"{instructions}\n{OMITTED_NOTE}"
        required += count_tokens(OMITTED_NOTE) + 1
    kept = earlier[kept_from:]
    used = required + sum(costs[kept_from:])
    dropped = kept_from
    messages = [PromptMessage("system", system_text), *kept, *rendered[start:]]
    return BuiltPrompt(Prompt(tuple(_merge_roles([], messages)), cache_key), used, dropped)


def _merge_roles(merged: list[PromptMessage], new: Sequence[PromptMessage]) -> list[PromptMessage]:
    """``merged`` with ``new`` appended, consecutive messages of one role (two user items in a
    turn) joined into one; a system item the client sent mid-conversation stays where it is."""
    for message in new:
        if merged and merged[-1].role == message.role and message.role != "system":
            previous = merged[-1]
            merged[-1] = PromptMessage(
                message.role, f"{previous.text}\n{message.text}", previous.images + message.images
            )
        else:
            merged.append(message)
    return merged


@dataclass
class _Built:
    """A session's last prompt, and what it was built from."""

    built: BuiltPrompt
    key: tuple[str, int, int]  # instructions, budget tokens, per-message overhead
    first_id: str
    last_id: str
    count: int


class PromptCache:
    """Builds each session's prompt from the previous one when it can: the history only grew
    since, nothing was left out then, and everything still fits. Then only the new messages are
    rendered and counted, so a turn costs the same at message 4 and at message 400; otherwise
    ``build_prompt`` starts over. The result is always the one ``build_prompt`` gives. Holds the
    last prompt of at most ``sessions`` sessions (the least recently built go first); a session's
    connection forgets it as it closes (``forget``), so what is held follows the sessions open
    now, not every session seen since the process started (a few KB each)."""

    def __init__(self, sessions: int = 4096) -> None:
        self.sessions = sessions
        self._by_session: dict[str, _Built] = {}
        heap.track("prompts", self, sessions)
        self.extended = 0  #: prompts built from the previous one (for tests and metrics)

    def build(
        self,
        session_id: str,
        instructions: str,
        history: Sequence[Message],
        budget: PromptBudget,
        count_tokens: Callable[[str], int],
        render: Callable[[Message], PromptMessage] = text_only,
    ) -> BuiltPrompt:
        key = (instructions, budget.tokens, budget.per_message)
        previous = self._by_session.pop(session_id, None)
        built = None
        if previous is not None and previous.key == key:
            built = self._extend(previous, history, budget, count_tokens, render)
        if built is None:
            built = build_prompt(instructions, history, budget, count_tokens, render, session_id)
        else:
            self.extended += 1
        if history:
            if len(self._by_session) >= self.sessions:
                del self._by_session[next(iter(self._by_session))]
            self._by_session[session_id] = _Built(
                built, key, history[0].id, history[-1].id, len(history)
            )
        return built

    def forget(self, session_id: str) -> None:
        """Drop ``session_id``'s prompt (its connection closed; a resumed one builds it again)."""
        self._by_session.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_session)

    @staticmethod
    def _extend(
        previous: _Built,
        history: Sequence[Message],
        budget: PromptBudget,
        count_tokens: Callable[[str], int],
        render: Callable[[Message], PromptMessage],
    ) -> BuiltPrompt | None:
        count = previous.count
        same_start = history and history[0].id == previous.first_id
        grown = len(history) >= count and same_start and history[count - 1].id == previous.last_id
        if not grown or previous.built.dropped:
            return None
        new = [render(m) for m in history[count:]]
        tokens = previous.built.tokens + sum(message_cost(m, budget, count_tokens) for m in new)
        if tokens > budget.tokens:
            return None  # something must be left out now: the full build decides what
        messages = _merge_roles(list(previous.built.prompt.messages), new)
        prompt = Prompt(tuple(messages), previous.built.prompt.cache_key)
        return BuiltPrompt(prompt, tokens, 0)
