"""``HandoffSettings``: the ``handoff`` section of ``assistant.config.Settings``
(``ASSISTANT_HANDOFF__...``), kept beside what it configures. The phrases and the unanswered
count that trigger a handoff are the bot profile's (``BotSettings`` / ``PUT /v1/bot/profile``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HandoffSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A conversation waiting for a person that nobody claimed in this many seconds goes back to
    #: the bot (found by each process's sweeper within ``sweep_s``, or when it is next read:
    #: listed, opened, or the customer writes); 0: never.
    claim_timeout_s: float = Field(600.0, ge=0)
    #: How often each server process looks for waiting conversations past ``claim_timeout_s``
    #: (``handoff.sweeper``: one sorted-set read; the status change is the usual compare-and-set,
    #: so of processes sweeping at once one applies it); 0: no sweeper.
    sweep_s: float = Field(5.0, ge=0, le=3_600)
    #: Events a session's stream keeps (about: ``XADD MAXLEN ~``); a connection resuming from
    #: before the oldest kept is told it missed some (``events_lost``).
    stream_maxlen: int = Field(10_000, ge=100, le=1_000_000)
    #: Messages condensed into the summary the agent reads first.
    summary_messages: int = Field(6, ge=1, le=50)
    #: The longest one blocking read of a process's streams waits before it reads again.
    block_ms: int = Field(5_000, ge=10, le=60_000)


class BotHandoffSettings(BaseModel):
    """The bot profile's handoff fields (``config.BotSettings`` has them, ``ASSISTANT_BOT__...``)."""

    #: A customer message holding one of these (whole words, any case) hands the conversation
    #: to a person (``assistant.handoff.triggers``).
    handoff_phrases: tuple[str, ...] = (
        "talk to a person", "talk to a human", "speak to a person", "speak to a human",
        "real person", "human agent", "talk to an agent", "speak to an agent", "customer service",
    )  # fmt: skip
    #: This many ``unanswered`` replies in a row hand the conversation to a person; 0: never.
    handoff_after_unanswered: int = Field(2, ge=0, le=100)
    #: What the customer is told while a person has the conversation (no model call).
    handoff_reply: str = "A person from our team will answer you here shortly."
