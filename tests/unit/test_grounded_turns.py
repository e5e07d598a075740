"""The turn path of a support bot: the passages a turn's words find go into the prompt, the reply
is stored with its citations, and a turn nothing is relevant to gets the fallback with no model
call, stored ``unanswered``. The in-memory session and knowledge stores, the hashing embedder, the
real reader, the scripted model."""

from __future__ import annotations

from pathlib import Path

from assistant.completions import Completions
from assistant.config import (
    BotSettings,
    LLMSettings,
    MemorySettings,
    PromptSettings,
)
from assistant.knowledge.answer import BotProfile
from assistant.knowledge.grounder import Grounder
from assistant.messages import Message
from assistant.orchestrator import Orchestrator, ResponseOverrides
from assistant.protocol.items import wire_item
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.knowledge import fake_knowledge

CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"
FALLBACK = "I can't find that in our help pages."


async def _bot(reply="Your bank declined the payment [1].", *, knowledge_base="help", **prompt):
    service = fake_knowledge()
    for name in ("payments.pdf", "returns.md", "shipping.md"):
        await service.add("help", name, (CORPUS / name).read_bytes())

    async def retriever_of():
        return service.retriever

    default = BotProfile.from_settings(
        BotSettings(knowledge_base=knowledge_base, threshold=0.26, fallback=FALLBACK,
                    instructions="You are Shopbot.")
    )  # fmt: skip
    grounder = Grounder(service.store, retriever_of, default, top_k=2, profile_cache_s=0)
    llm = ScriptedLM(reply)
    sessions = MemoryStore()
    orchestrator = Orchestrator(
        llm, sessions, llm_settings=LLMSettings(), prompt_settings=PromptSettings(**prompt),
        memory_settings=MemorySettings(lock_wait_s=0.05), grounder=grounder,
    )  # fmt: skip
    return orchestrator, llm, sessions, service


async def _turn(orchestrator, session_id, text):
    await orchestrator.add_item(session_id, Message.from_text("user", text))
    run = orchestrator.start_response()
    deltas = [d async for d in orchestrator.respond(session_id, run)]
    return run, "".join(deltas)


async def test_a_grounded_turn_prompts_with_numbered_sources_and_stores_citations():
    orchestrator, llm, sessions, _ = await _bot()
    session = await orchestrator.open_session()
    run, text = await _turn(orchestrator, session.id, "What does error code E-402 mean?")
    assert text == "Your bank declined the payment [1]."
    prompt = llm.prompts[-1]
    assert prompt.messages[0].text == "You are Shopbot."  # the profile's persona
    question = prompt.messages[-1].text
    assert question.startswith("Question: What does error code E-402 mean?\n\nAnswer it from")
    assert "\n[1] Payments and checkout" in question and "E-402 means your bank" in question
    stored = sessions.messages[session.id]
    assert stored[0].text == "What does error code E-402 mean?"  # the user's words, as sent
    reply = stored[1]
    assert reply.status == "completed" and run.message == reply
    (cited,) = reply.content[0].annotations
    assert (cited.filename, cited.page, cited.number) == ("payments.pdf", 1, 1)
    assert cited.index == text.index("[1]") and "E-402" in cited.quote
    wire = wire_item(reply).model_dump()
    assert wire["content"][0]["annotations"][0]["filename"] == "payments.pdf"


async def test_the_next_turn_reads_the_earlier_question_without_its_passages():
    orchestrator, llm, _, _ = await _bot()
    session = await orchestrator.open_session()
    await _turn(orchestrator, session.id, "What does error code E-402 mean?")
    await _turn(orchestrator, session.id, "What does error code E-517 mean?")
    messages = llm.prompts[-1].messages
    assert messages[1].text == "What does error code E-402 mean?"
    assert messages[-1].text.startswith("Question: What does error code E-517 mean?\n")
    assert "\n[1] " not in "".join(m.text for m in messages[:-1])


async def test_nothing_relevant_is_the_fallback_with_no_model_call_stored_unanswered():
    orchestrator, llm, sessions, _ = await _bot()
    session = await orchestrator.open_session()
    run, text = await _turn(orchestrator, session.id, "Write me a poem about the moon")
    assert text == FALLBACK and llm.prompts == []
    assert run.status == "completed" and run.usage.output_tokens == 0
    reply = sessions.messages[session.id][1]
    assert reply.status == "unanswered" and reply.content[0].annotations == ()
    assert wire_item(reply).status == "unanswered"


async def test_a_profile_without_knowledge_base_is_the_plain_assistant():
    orchestrator, llm, sessions, _ = await _bot(reply=None, knowledge_base="")
    session = await orchestrator.open_session()
    run, text = await _turn(orchestrator, session.id, "What does error code E-402 mean?")
    assert text == "You said: What does error code E-402 mean?"
    assert llm.prompts[-1].messages[0].text == "You are Shopbot."
    assert "annotations" not in sessions.messages[session.id][1].model_dump_json()


async def test_a_stored_profile_of_the_tenant_wins_over_the_default():
    orchestrator, llm, _, service = await _bot(reply=None)
    await service.store.for_tenant("acme").set_profile({"knowledge_base": ""})
    acme = orchestrator.for_tenant("acme")
    session = await acme.open_session()
    _, text = await _turn(acme, session.id, "Write me a poem about the moon")
    assert text == "You said: Write me a poem about the moon"  # acme has no knowledge base


async def _long_conversation(**prompt):
    """Six long turns, then a question the knowledge base answers, on a budget of 400 words (the
    passages take most of it); the summaries made in between waited for."""
    orchestrator, llm, _, _ = await _bot(context_tokens=400, **prompt)
    session = await orchestrator.open_session()
    for n in range(6):
        await _turn(orchestrator, session.id, f"message {n} " + "filler " * 60)
        await orchestrator.summaries.idle()
    run, _ = await _turn(orchestrator, session.id, "What does error code E-402 mean?")
    assert run.prompt.tokens <= 400
    assert "E-402 means your bank" in llm.prompts[-1].messages[-1].text  # the passage
    return orchestrator, llm, run


async def test_passages_that_do_not_fit_beside_the_history_push_the_history_out():
    orchestrator, llm, run = await _long_conversation(summary_high_water=0.0)  # no summaries
    assert run.prompt.dropped > 0 and orchestrator.summaries.made == 0
    assert "Summary of the earlier conversation:" not in llm.prompts[-1].messages[0].text


async def test_passages_fit_beside_a_summary_of_the_oldest_messages():
    orchestrator, llm, run = await _long_conversation()
    assert orchestrator.summaries.made >= 1
    assert "Summary of the earlier conversation:" in llm.prompts[-1].messages[0].text
    assert "message 0" not in " ".join(m.text for m in llm.prompts[-1].messages[1:])


async def test_stateless_completions_are_grounded_too():
    orchestrator, llm, _, _ = await _bot()
    completions = Completions(orchestrator)
    completion = await completions.start(
        [Message.from_text("user", "What does error code E-402 mean?")]
    )
    assert "".join([d async for d in completion]) == "Your bank declined the payment [1]."
    assert [c.filename for c in completion.annotations] == ["payments.pdf"]
    assert not completion.unanswered and "\n[1] " in llm.prompts[-1].messages[-1].text
    refused = await completions.start([Message.from_text("user", "A poem about the moon")])
    assert "".join([d async for d in refused]) == FALLBACK
    assert refused.unanswered and refused.annotations == () and len(llm.prompts) == 1
    assert refused.finish_reason == "stop"


async def test_session_completions_carry_the_stored_citations():
    orchestrator, _, _, _ = await _bot()
    session = await orchestrator.open_session()
    completion = await Completions(orchestrator).start(
        [Message.from_text("user", "What does error code E-402 mean?")],
        ResponseOverrides(),
        session_id=session.id,
    )
    assert [d async for d in completion]
    assert [c.number for c in completion.annotations] == [1] and not completion.unanswered
