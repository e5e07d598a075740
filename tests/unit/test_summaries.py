"""Long conversations (``assistant.summaries``) over the orchestrator, the in-memory store and the
scripted model: past the high-water mark the oldest messages are summarised in the background,
once; the summary is stored and shown in the next prompts in their place; the prompt's prefix
stays the same between two summaries; a turn never waits for one; a failing or late summary
leaves the conversation as it was."""

from __future__ import annotations

from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.messages import Message
from assistant.orchestrator import Orchestrator
from assistant.ports import ConversationSummary
from assistant.prompt import OMITTED_NOTE
from assistant.summaries import NOTES_HEADER, SUMMARY_HEADER
from assistant.testing.language_models import FailingLM, GatedLM, ScriptedLM
from assistant.testing.memory import MemoryStore

BUDGET = 200  # words (the scripted model counts words): a few turns pass it


def make(**prompt):
    llm, store = ScriptedLM(), MemoryStore()
    settings = {"context_tokens": BUDGET, "summary_max_tokens": 16, "summary_retry_s": 0.0}
    orchestrator = Orchestrator(
        llm, store, llm_settings=LLMSettings(),
        prompt_settings=PromptSettings(instructions="be brief", **{**settings, **prompt}),
        memory_settings=MemorySettings(lock_wait_s=0.05),
    )  # fmt: skip
    return orchestrator, llm, store


async def turn(orchestrator, session_id, text):
    await orchestrator.add_item(session_id, Message.from_text("user", text))
    run = orchestrator.start_response()
    _ = [d async for d in orchestrator.respond(session_id, run)]
    assert run.status == "completed", run.error
    return run


def words(n, tag):
    """``tag`` and n more words, no digit among them (a sentence with one is kept as a note)."""
    return f"{tag} " + " ".join(["lorem"] * n)


def t(n):
    return "t" + "abcdefghijklmnopqrstuvwxyz"[n]


async def test_a_summary_is_made_once_past_the_mark_stored_and_shown_in_place_of_the_messages():
    orchestrator, llm, store = make()
    session = await orchestrator.open_session()
    await turn(orchestrator, session.id, "My order number is PP-204816. " + words(20, t(0)))
    tokens = []
    for n in range(1, 4):
        run = await turn(orchestrator, session.id, words(20, t(n)))
        tokens.append(run.prompt.tokens)
        assert orchestrator.summaries.made == 0  # nothing started below the mark
    assert tokens[-1] >= 0.85 * BUDGET  # the last of them reached it: a summary is being made
    await orchestrator.summaries.idle()
    assert orchestrator.summaries.made == 1
    summary = store.summaries[session.id]
    assert summary.notes == ("My order number is PP-204816.",)
    assert summary.upto % 2 == 0 and 2 <= summary.upto < len(store.messages[session.id])
    assert summary.last_id == store.messages[session.id][summary.upto - 1].id
    # The next prompt: the summary in the system prompt, the messages it covers gone.
    run = await turn(orchestrator, session.id, words(5, "next"))
    system = llm.prompts[-1].messages[0].text
    assert system == f"be brief\n{SUMMARY_HEADER} {summary.text}\n{NOTES_HEADER} {summary.notes[0]}"
    rest = " ".join(m.text for m in llm.prompts[-1].messages[1:])
    assert "ta " not in rest and "PP-204816" not in rest and "next lorem" in rest
    assert run.prompt.dropped == 0 and run.prompt.tokens < 0.85 * BUDGET
    assert orchestrator.summaries.made == 1  # no second one under the mark


async def test_the_prompt_prefix_stays_the_same_between_two_summaries():
    orchestrator, llm, store = make()
    session = await orchestrator.open_session()
    prompts = []
    for n in range(14):
        await turn(orchestrator, session.id, words(12, t(n)))
        prompts.append(llm.prompts[-1].messages)
        await orchestrator.summaries.idle()
    assert orchestrator.summaries.made >= 2
    changes = 0
    for before, after in zip(prompts, prompts[1:]):
        # Each prompt is the previous one grown (its last user message now followed by the
        # reply), unless a new summary came in between: then the prefix changes, once.
        if after[: len(before) - 1] != before[:-1]:
            changes += 1
            assert after[0].text != before[0].text and SUMMARY_HEADER in after[0].text
    # The prefix changed at each new summary shown, and only then.
    assert changes == len({p[0].text for p in prompts}) - 1 >= 2
    assert not any(OMITTED_NOTE in p[0].text for p in prompts)  # never a message dropped


async def test_a_turn_does_not_wait_for_the_summary_and_drops_as_before_until_it_is_ready():
    orchestrator, llm, store = make()
    gated = GatedLM("the summary of it all")
    orchestrator.summaries.llm = gated  # the summary's generation holds after its first word
    session = await orchestrator.open_session()
    for n in range(5):
        await turn(orchestrator, session.id, words(20, t(n)))
    assert orchestrator.summaries.running == 1  # started, held by the gate
    dropped = []
    for n in range(5, 8):  # the turns go on meanwhile: past the budget, dropped with the note
        run = await turn(orchestrator, session.id, words(20, t(n)))
        dropped.append(run.prompt.dropped)
        assert SUMMARY_HEADER not in llm.prompts[-1].messages[0].text
    assert orchestrator.summaries.running == 1
    assert dropped[-1] > 0 and OMITTED_NOTE in llm.prompts[-1].messages[0].text
    assert session.id not in store.summaries
    gated.release.set()
    await orchestrator.summaries.idle()
    assert store.summaries[session.id].text == "the summary of it all"
    run = await turn(orchestrator, session.id, "and now")
    assert f"{SUMMARY_HEADER} the summary of it all" in llm.prompts[-1].messages[0].text
    assert run.prompt.tokens <= BUDGET


async def test_a_failing_summariser_leaves_the_conversation_working_and_is_tried_again():
    orchestrator, llm, store = make()
    orchestrator.summaries.llm = FailingLM(good=1)
    session = await orchestrator.open_session()
    for n in range(8):
        run = await turn(orchestrator, session.id, words(20, t(n)))
        await orchestrator.summaries.idle()
        assert run.message.text == f"You said: {words(20, t(n))}"
    assert orchestrator.summaries.failed >= 2  # tried again on later turns (retry_s is 0 here)
    assert session.id not in store.summaries and not store.summary_claims  # claims given back
    assert run.prompt.dropped > 0  # dropped as before, the turns unharmed
    orchestrator.summaries.llm = llm  # the model is back: the next turn past the mark makes one
    await turn(orchestrator, session.id, words(20, t(8)))
    await orchestrator.summaries.idle()
    assert orchestrator.summaries.made == 1 and store.summaries[session.id].upto > 0


async def test_one_summary_at_a_time_per_session_across_processes():
    orchestrator, _, store = make()
    session = await orchestrator.open_session()
    assert await store.process().claim_summary(session.id, "other-process", 60_000)
    for n in range(5):
        await turn(orchestrator, session.id, words(20, t(n)))
        await orchestrator.summaries.idle()
    assert orchestrator.summaries.made == 0 and session.id not in store.summaries
    assert (
        await store.finish_summary(session.id, "other-process", None, session.created_at) is False
    )
    await turn(orchestrator, session.id, words(20, t(5)))  # the claim is free: this one makes it
    await orchestrator.summaries.idle()
    assert orchestrator.summaries.made == 1


async def test_a_late_summary_never_replaces_a_newer_one():
    store = MemoryStore()
    session = await Orchestrator(
        ScriptedLM(), store, llm_settings=LLMSettings(), prompt_settings=PromptSettings(),
        memory_settings=MemorySettings(),
    ).open_session()  # fmt: skip
    newer = ConversationSummary("up to ten", 10, "m9")
    late = ConversationSummary("up to six", 6, "m5")
    assert await store.claim_summary(session.id, "a", 60_000)
    assert not await store.claim_summary(session.id, "b", 60_000)  # one claim at a time
    assert await store.finish_summary(session.id, "a", newer, session.created_at)
    assert await store.claim_summary(session.id, "b", 60_000)  # given back by finish
    assert not await store.finish_summary(session.id, "b", late, session.created_at)
    assert not await store.finish_summary(session.id, "c", newer, session.created_at)  # as many
    snapshot = await store.load(session.id)
    assert snapshot.summary == newer
    # A summary of a session since created again under its id is not stored.
    again = await store.create(session.model_copy(update={"created_at": session.created_at + 1}))
    assert not await store.finish_summary(again.id, "d", newer, session.created_at)
    assert (await store.load(again.id)).summary is None


async def test_a_budget_too_small_for_a_summary_only_drops():
    orchestrator, llm, store = make(context_tokens=40)  # half the low-water mark: 11 < 16 tokens
    session = await orchestrator.open_session()
    for n in range(6):
        run = await turn(orchestrator, session.id, words(6, t(n)))
        await orchestrator.summaries.idle()
    assert run.prompt.dropped > 0 and run.prompt.tokens <= 40
    assert orchestrator.summaries.made == 0 and session.id not in store.summaries


async def test_notes_that_do_not_fit_beside_the_summary_are_left_out_from_the_last():
    orchestrator, llm, store = make()
    session = await orchestrator.open_session()
    await turn(orchestrator, session.id, "hello")
    notes = tuple(f"Order {n} is PP-{n}." for n in range(30))
    summary = ConversationSummary("a summary", 2, store.messages[session.id][1].id, notes)
    assert await store.finish_summary(session.id, "x", summary, session.created_at)
    await turn(orchestrator, session.id, "and then")
    system = llm.prompts[-1].messages[0].text
    assert "Order 0 is PP-0." in system and "Order 29 is PP-29." not in system
    assert len(system.split()) <= BUDGET * 0.55 / 2 + len("be brief".split())
