"""What the agent reads first when a conversation is handed over: the last few messages
condensed, one line each (no model call):

    customer: My order 1234 never arrived [image]
    bot (unanswered): I can't find that in our help pages...
"""

from __future__ import annotations

from collections.abc import Sequence

from assistant.messages import AudioPart, ImagePart, Message

_LINE_CHARS = 160


def speaker(message: Message) -> str:
    if message.role == "user":
        return "customer"
    if message.author:
        return "agent"
    return "bot" if message.role == "assistant" else message.role


def summarize(messages: Sequence[Message], *, last: int = 6, max_chars: int = 1_000) -> str:
    """The last ``last`` user and assistant messages, a line each (text cut at 160 characters,
    an image as ``[image]``, speech as its transcript), the whole at most ``max_chars``."""
    lines: list[str] = []
    for message in [m for m in messages if m.role != "system"][-last:]:
        text = " ".join(message.text.split())
        if len(text) > _LINE_CHARS:
            text = text[: _LINE_CHARS - 1].rstrip() + "…"
        marks = ["[image]"] * len(message.images)
        if any(isinstance(p, AudioPart) for p in message.content):
            marks.append("[voice]")
        if not text and not marks and not any(isinstance(p, ImagePart) for p in message.content):
            continue
        who = speaker(message)
        if message.status == "unanswered":
            who += " (unanswered)"
        lines.append(f"{who}: {' '.join([text, *marks]).strip()}")
    summary = "\n".join(lines)
    return summary if len(summary) <= max_chars else "…" + summary[-(max_chars - 1) :]
