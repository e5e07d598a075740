"""``BotSettings``: the ``bot`` section of ``assistant.config.Settings`` (``ASSISTANT_BOT__...``), the
bot profile of a tenant that stored none; kept beside what it configures (``answer.BotProfile``),
``assistant.config`` re-exports it. Its handoff fields: ``handoff.settings.BotHandoffSettings``."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from assistant.handoff.settings import BotHandoffSettings


class BotSettings(BotHandoffSettings):
    """The bot profile of a tenant that stored none (``PUT /v1/bot/profile`` stores one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The bot's name (the widget shows it).
    name: str = "Assistant"
    #: The persona: the system prompt of a turn that sets none. Empty: ``prompt.instructions``.
    instructions: str = ""
    #: What the widget shows before the first turn.
    welcome: str = ""
    #: The knowledge base turns are answered from; empty: none (the plain assistant).
    knowledge_base: str = ""
    #: A passage counts when its score is at least this; when none does, the fallback is the
    #: reply (no model call) and the reply is stored ``unanswered``.
    threshold: float = Field(0.22, ge=0.0, le=1.0)
    #: The reply when nothing in the knowledge base is relevant.
    fallback: str = (
        "I can't find that in our help pages. Could you rephrase it, or shall I find a person "
        "to help?"
    )
