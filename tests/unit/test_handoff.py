"""The handoff's core on fakes: the state machine's transitions (every action from every status),
the triggers (phrases, unanswered replies in a row), the agent's summary, and the service over
the in-memory conversations store (compare-and-set, the holder's checks, the claim timeout)."""

from __future__ import annotations

import pytest

from assistant.errors import ConversationStatusError
from assistant.handoff.hub import EventHub
from assistant.handoff.service import Handoff
from assistant.handoff.settings import HandoffSettings
from assistant.handoff.status import STATUSES, TRANSITIONS, ConversationState, apply, timed_out
from assistant.handoff.summary import summarize
from assistant.handoff.triggers import asks_for_person, too_many_unanswered, unanswered_in_a_row
from assistant.knowledge.answer import BotProfile
from assistant.messages import ImagePart, Message, SessionInfo, TextPart, now_ms
from assistant.testing.conversations import MemoryConversations
from assistant.testing.memory import MemoryStore

EXPECTED = {
    ("bot", "request"): "waiting_human",
    ("waiting_human", "claim"): "human",
    ("waiting_human", "handback"): "bot",
    ("human", "handback"): "bot",
    ("waiting_human", "timeout"): "bot",
    ("waiting_human", "resolve"): "resolved",
    ("human", "resolve"): "resolved",
    ("resolved", "reopen"): "bot",
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", sorted(TRANSITIONS))
def test_every_action_from_every_status_goes_where_the_machine_says_or_is_refused(status, action):
    state = ConversationState(status=status, agent="agent:a" if status == "human" else None)
    target = EXPECTED.get((status, action))
    if target is None:
        with pytest.raises(ConversationStatusError) as caught:
            apply(state, action, agent="agent:b")
        assert caught.value.code == "conversation_status_conflict"
        return
    new = apply(state, action, agent="agent:b", reason="api", summary="s", at=5)
    assert new.status == target and new.since == 5
    assert new.agent == ("agent:b" if action == "claim" else None)
    if action == "request":
        assert (new.reason, new.summary, new.handoff_at) == ("api", "s", 5)


def test_a_claim_names_its_agent_and_the_timeout_counts_from_the_handoff():
    waiting = apply(ConversationState(), "request", reason="api", at=1_000)
    with pytest.raises(ValueError):
        apply(waiting, "claim")
    assert not timed_out(waiting, 10, now=10_999)
    assert timed_out(waiting, 10, now=11_000)
    assert not timed_out(waiting, 0, now=10**12)  # 0: never
    assert not timed_out(apply(waiting, "claim", agent="a", at=2), 10, now=10**12)


def test_phrases_match_whole_words_in_any_case_and_punctuation():
    phrases = ("talk to a person", "human agent")
    assert asks_for_person("Can I TALK to a person, please?", phrases)
    assert asks_for_person("human-agent now", phrases)
    assert not asks_for_person("I talked to a personal trainer", phrases)
    assert not asks_for_person("anything", ("", "  "))


def _bot(status: str) -> Message:
    return Message.from_text("assistant", "...", status=status)


def test_unanswered_replies_in_a_row_count_across_user_turns_not_past_an_answer():
    user = Message.from_text("user", "?")
    history = [_bot("unanswered"), user, _bot("completed"), user, _bot("unanswered"), user,
               _bot("unanswered")]  # fmt: skip
    assert unanswered_in_a_row(history) == 2
    assert too_many_unanswered(history, 2) and not too_many_unanswered(history, 3)
    assert not too_many_unanswered(history, 0)


def test_the_summary_condenses_the_last_messages_one_line_each():
    long = "word " * 100
    messages = [
        Message.from_text("user", "old, left out"),
        Message(role="user", content=(TextPart(text="my  parcel\nnever came"),
                                      ImagePart(sha256="a" * 64))),
        Message.from_text("assistant", "I can't find that.", status="unanswered"),
        Message.from_text("assistant", "Here I am.", author="agent:k1"),
        Message.from_text("user", long),
    ]  # fmt: skip
    lines = summarize(messages, last=4).splitlines()
    assert lines[:3] == [
        "customer: my parcel never came [image]",
        "bot (unanswered): I can't find that.",
        "agent: Here I am.",
    ]
    assert lines[3].startswith("customer: word word") and lines[3].endswith("…")
    assert len(lines[3]) < 200


async def _setup(timeout_s: float = 600):
    sessions = MemoryStore("acme")
    conversations = MemoryConversations(sessions)

    async def profile(tenant: str) -> BotProfile:
        return BotProfile()

    handoff = Handoff(conversations, sessions, HandoffSettings(claim_timeout_s=timeout_s),
                      profile=profile)  # fmt: skip
    session = await sessions.create(SessionInfo(id="sess_1"))
    await sessions.append(session.id, Message.from_text("user", "help"))
    return sessions, conversations, handoff


async def test_the_service_moves_a_conversation_through_its_life_on_the_fake_store():
    sessions, conversations, handoff = await _setup()
    state = await handoff.request("acme", "sess_1", "customer_request")
    assert state.status == "waiting_human" and state.summary == "customer: help"
    assert (await handoff.request("acme", "sess_1", "unanswered")).reason == "customer_request"
    assert sessions.infos["sess_1"].status == "waiting_human"
    claimed = await handoff.claim("acme", "sess_1", "agent:a")
    assert claimed.agent == "agent:a"
    with pytest.raises(ConversationStatusError):
        await handoff.claim("acme", "sess_1", "agent:b")
    with pytest.raises(ConversationStatusError) as caught:
        await handoff.handback("acme", "sess_1", "agent:b")
    assert caught.value.code == "conversation_not_yours"
    await handoff.reply("acme", "sess_1", "agent:a", "hello")
    assert (await handoff.resolve("acme", "sess_1", "agent:a")).status == "resolved"
    events = await conversations.events("sess_1", "0", 100)
    assert [e.get("status") or e["item"]["author"] for _, e in events] == [
        "waiting_human", "human", "agent:a", "resolved"
    ]  # fmt: skip


async def test_a_waiting_conversation_nobody_claims_goes_back_to_the_bot_when_read():
    _, conversations, handoff = await _setup(timeout_s=60)
    state = await handoff.request("acme", "sess_1", "api")
    key = ("acme", "sess_1")
    assert (await handoff.state("acme", "sess_1")).status == "waiting_human"
    conversations._shared.states[key] = state.model_copy(update={"since": state.since - 60_000})
    assert (await handoff.state("acme", "sess_1")).status == "bot"
    assert await handoff.listed("acme", "waiting_human", 10) == []


async def test_the_sweeper_hands_back_what_nobody_claimed_in_time_and_nothing_else():
    from assistant.handoff.sweeper import ClaimTimeouts
    from assistant.ports.conversations import QUEUE

    sessions, conversations, handoff = await _setup(timeout_s=60)
    for sid in ("sess_2", "sess_3"):
        await sessions.create(SessionInfo(id=sid))
    sweeper = ClaimTimeouts(handoff)
    for sid in ("sess_1", "sess_2", "sess_3"):
        await handoff.request("acme", sid, "api")
    await handoff.claim("acme", "sess_3", "agent:a")  # claimed: not the sweeper's
    assert await sweeper.sweep() == 0  # none is past the timeout yet
    aged = conversations._shared  # sess_1 and sess_3 waited (or were claimed) 61 s ago
    for sid in ("sess_1", "sess_3"):
        key = ("acme", sid)
        aged.states[key] = aged.states[key].model_copy(update={"since": now_ms() - 61_000})
        aged.waiting[key] = now_ms() - 61_000
    after = await conversations.last_seq(QUEUE)
    assert await sweeper.sweep() == 1
    assert (await handoff.state("acme", "sess_1")).status == "bot"
    assert (await handoff.state("acme", "sess_2")).status == "waiting_human"
    assert (await handoff.state("acme", "sess_3")).status == "human"
    told = await conversations.events(QUEUE, after, 10)  # the console's queue hears it at once
    assert [(e["conversation"], e["status"]) for _, e in told] == [("sess_1", "bot")]
    assert await conversations.due(now_ms() + 1, 10) == [("acme", "sess_2")]  # the rest: swept
    assert await sweeper.sweep() == 0


async def test_the_hub_hands_each_event_once_to_each_subscriber_from_its_own_position():
    sessions, conversations, _ = await _setup()
    first = await conversations.publish("sess_1", {"n": 0})
    hub = EventHub(conversations, block_ms=1_000)
    from_start = await hub.subscribe("acme", "sess_1", "0")
    from_first = await hub.subscribe("acme", "sess_1", first)
    await conversations.publish("sess_1", {"n": 1})
    got_start = [e["n"] for _, e in [await anext(aiter(from_start)) for _ in range(2)]]
    got_first = [(await anext(aiter(from_first)))[1]["n"]]
    assert got_start == [0, 1] and got_first == [1]
    await hub.aclose()


async def test_the_hub_keeps_each_streams_cursor_and_waits_more_the_more_it_watches():
    from assistant.handoff import hub as hubs

    sessions, conversations, _ = await _setup()
    hub = EventHub(conversations, block_ms=1_000)
    assert hub.coalesce_s == 0
    first = await conversations.publish("sess_1", {"n": 0})
    ahead = await hub.subscribe("acme", "sess_1", first)  # past the first event
    behind = await hub.subscribe("acme", "sess_1", "0")  # catches up on it before joining
    assert hub._cursors == {("acme", "sess_1"): first}
    assert (await anext(aiter(behind)))[1]["n"] == 0
    second = await conversations.publish("sess_1", {"n": 1})
    assert [(await anext(aiter(sub)))[1]["n"] for sub in (ahead, behind)] == [1, 1]
    assert hub._cursors == {("acme", "sess_1"): second}
    hub.unsubscribe(ahead)
    hub.unsubscribe(behind)
    assert hub._cursors == {} and hub.watched == 0
    await hub.aclose()
    assert hub.coalesce_s == 0
    hub._subs = {("acme", f"s{i}"): set() for i in range(10)}
    assert hub.coalesce_s == pytest.approx(10 * hubs.COALESCE_S_PER_STREAM)
    hub._subs = {("acme", f"s{i}"): set() for i in range(100_000)}
    assert hub.coalesce_s == hubs.COALESCE_MAX_S


async def test_the_status_is_not_written_around_the_compare_and_set():
    sessions, _, _ = await _setup()
    with pytest.raises(ValueError, match="transition"):
        await sessions.update_info("sess_1", status="human")
    assert sessions.infos["sess_1"].status == "bot"


@pytest.mark.parametrize("seq", ["0", "1700000000000", "1700000000000-0", "12-345"])
def test_a_stream_id_is_a_sequence_number(seq):
    from assistant.ports.conversations import valid_seq

    assert valid_seq(seq)


@pytest.mark.parametrize("seq", ["", "²", "1²", "٣", "1-²", "-1", "1-", "1-2-3", "x", "1" * 20, " 1"])
def test_only_ascii_digits_make_a_sequence_number(seq):
    from assistant.ports.conversations import valid_seq

    assert not valid_seq(seq)
