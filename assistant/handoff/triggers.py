"""When the bot hands a conversation to a person by itself, from the bot profile
(``knowledge.answer.BotProfile``): the customer's message holds one of ``handoff_phrases``
("talk to a person"; matched on words, case and punctuation ignored), or the bot's last
``handoff_after_unanswered`` replies in a row were ``unanswered`` (0: never)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from assistant.messages import Message

_WORD = re.compile(r"\w+")


def _words(text: str) -> str:
    return " " + " ".join(_WORD.findall(text.casefold())) + " "


@functools.lru_cache(maxsize=256)
def _phrase_words(phrases: tuple[str, ...]) -> tuple[str, ...]:
    """The profile's phrases as ``_words`` gives them, the empty ones left out: made once per
    profile (its phrases are a tuple), not at every customer message."""
    return tuple(words for words in map(_words, phrases) if words.strip())


def asks_for_person(text: str, phrases: Iterable[str]) -> bool:
    """``text`` holds one of ``phrases`` as whole words."""
    wanted = _phrase_words(phrases if isinstance(phrases, tuple) else tuple(phrases))
    if not wanted:
        return False
    said = _words(text)
    return any(words in said for words in wanted)


def unanswered_in_a_row(messages: Sequence[Message]) -> int:
    """How many of the bot's latest replies in a row were ``unanswered`` (user turns between
    them do not break the run; an answered reply does)."""
    count = 0
    for message in reversed(messages):
        if message.role != "assistant":
            continue
        if message.status != "unanswered":
            break
        count += 1
    return count


def too_many_unanswered(messages: Sequence[Message], after: int) -> bool:
    return after > 0 and unanswered_in_a_row(messages) >= after
