"""The conversation status as a state machine, transport- and store-agnostic:

    bot ──request──> waiting_human ──claim──> human ──resolve──> resolved
     ^                 │     ^                  │                    │
     └──handback/timeout┘    └──────────────────┼──(reopen: the customer writes again)──> bot
     └──────────────handback────────────────────┘

``TRANSITIONS`` says which statuses an action may start from and where it leads; the store applies
one as a compare-and-set on the status it expects (one atomic script on Redis), so of two agents
claiming the same conversation exactly one wins. ``ConversationState`` is what is stored beside
the session's metadata: the status, the agent holding it, why it was handed off and the summary
the agent reads first."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.errors import ConversationStatusError
from assistant.messages import ConversationStatus, now_ms

Action = Literal["request", "claim", "handback", "timeout", "resolve", "reopen"]
#: Why a conversation was handed to a person.
Reason = Literal["customer_request", "unanswered", "model_error", "agent", "api"]

STATUSES: tuple[ConversationStatus, ...] = ("bot", "waiting_human", "human", "resolved")

#: action -> (the statuses it may start from, the status it leads to)
TRANSITIONS: dict[Action, tuple[frozenset[ConversationStatus], ConversationStatus]] = {
    "request": (frozenset({"bot"}), "waiting_human"),
    "claim": (frozenset({"waiting_human"}), "human"),
    "handback": (frozenset({"waiting_human", "human"}), "bot"),
    "timeout": (frozenset({"waiting_human"}), "bot"),
    "resolve": (frozenset({"waiting_human", "human"}), "resolved"),
    "reopen": (frozenset({"resolved"}), "bot"),
}


class ConversationState(BaseModel):
    """A conversation's handoff state (``status`` is also the session's ``SessionInfo.status``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    status: ConversationStatus = "bot"
    #: The agent holding it (``agent:<key id>``), set by ``claim``, kept until it leaves ``human``.
    agent: str | None = None
    reason: Reason | None = None
    #: The last few messages condensed for the agent (``summary.summarize``).
    summary: str = ""
    #: When the status last changed (ms since the epoch).
    since: int = Field(default_factory=now_ms)
    #: When the conversation was last handed off (ms), for the queue's order.
    handoff_at: int | None = None


def conflict(action: Action, current: ConversationStatus) -> ConversationStatusError:
    """The error of ``action`` tried on a conversation that is ``current``."""
    allowed = ", ".join(sorted(TRANSITIONS[action][0]))
    return ConversationStatusError(
        f"cannot {action} a conversation that is {current!r} (only from: {allowed})",
        code="conversation_status_conflict",
    )


def allowed_from(action: Action) -> frozenset[ConversationStatus]:
    return TRANSITIONS[action][0]


def apply(
    state: ConversationState,
    action: Action,
    *,
    agent: str | None = None,
    reason: Reason | None = None,
    summary: str | None = None,
    at: int | None = None,
) -> ConversationState:
    """The state ``action`` leads to from ``state`` (``ConversationStatusError`` when it may not start
    from there). Pure: the store applies the result only if the status is still ``state``'s."""
    sources, target = TRANSITIONS[action]
    if state.status not in sources:
        raise conflict(action, state.status)
    when = now_ms() if at is None else at
    update: dict[str, object] = {"status": target, "since": when}
    if action == "request":
        update.update(reason=reason, summary=summary or "", handoff_at=when, agent=None)
    elif action == "claim":
        if not agent:
            raise ValueError("a claim names the agent")
        update["agent"] = agent
    else:
        update["agent"] = None
    return state.model_copy(update=update)


def timed_out(state: ConversationState, timeout_s: float, now: int | None = None) -> bool:
    """Nobody claimed it within ``timeout_s`` (0: never times out)."""
    if state.status != "waiting_human" or timeout_s <= 0:
        return False
    return (now_ms() if now is None else now) - state.since >= timeout_s * 1000
