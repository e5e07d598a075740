"""The turn gate on the fakes (the in-memory stores, the scripted and failing models, the support
bot of test_grounded_turns): while a person has the conversation the model is not called and the
customer gets the profile's reply, not stored; the triggers (a phrase, unanswered replies in a
row, a model error) hand the conversation off; messages go on the session's stream; a resolved
conversation is reopened by the customer's next message."""

from __future__ import annotations

import pytest

from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.errors import ModelError
from assistant.handoff.gate import TurnGate
from assistant.handoff.service import Handoff
from assistant.handoff.settings import BotHandoffSettings, HandoffSettings
from assistant.knowledge.answer import BotProfile
from assistant.messages import Message
from assistant.orchestrator import Orchestrator, ResponseOverrides
from assistant.testing.conversations import MemoryConversations
from assistant.testing.language_models import FailingLM, ScriptedLM
from tests.unit.test_grounded_turns import _bot

PROFILE = BotProfile(**BotHandoffSettings().model_dump(), fallback="nothing found")
HELD = PROFILE.handoff_reply


def _gate(orchestrator: Orchestrator, session_id: str, profile=None) -> TurnGate:
    async def profile_of(tenant: str) -> BotProfile:
        if profile is None and orchestrator.grounder is not None:
            return await orchestrator.grounder.profile(tenant)
        return profile or PROFILE

    conversations = MemoryConversations(orchestrator.store)
    handoff = Handoff(conversations, orchestrator.store, HandoffSettings(), profile=profile_of)
    return TurnGate(handoff, orchestrator.store.tenant, session_id, origin="conn_1")


def _orchestrator(llm=None) -> Orchestrator:
    from assistant.testing.memory import MemoryStore

    return Orchestrator(
        llm or ScriptedLM("the bot speaks"), MemoryStore(), llm_settings=LLMSettings(),
        prompt_settings=PromptSettings(), memory_settings=MemorySettings(lock_wait_s=0.05),
    )  # fmt: skip


async def _turn(gate: TurnGate, orchestrator: Orchestrator, text: str):
    lease = orchestrator.new_lease(gate.session_id)
    added = await orchestrator.add_item(gate.session_id, Message.from_text("user", text), lease)
    await gate.message_added(added.message, lease.snapshot.info)
    run = orchestrator.start_response()
    deltas = gate.respond(orchestrator, run, ResponseOverrides(), lease)
    return run, "".join([d async for d in deltas])


async def _status(gate: TurnGate) -> str:
    return (await gate.handoff.state(gate.tenant, gate.session_id)).status


async def test_a_phrase_hands_off_and_the_model_stays_silent_until_handed_back():
    orchestrator = _orchestrator()
    llm = orchestrator.llm
    session = await orchestrator.open_session()
    gate = _gate(orchestrator, session.id)
    _, text = await _turn(gate, orchestrator, "hello")
    assert text == "the bot speaks" and len(llm.prompts) == 1
    run, text = await _turn(gate, orchestrator, "Can I speak to a human, please?")
    assert text == HELD and run.status == "completed" and len(llm.prompts) == 1
    assert await _status(gate) == "waiting_human"
    await gate.handoff.claim(gate.tenant, session.id, "agent:a")
    _, text = await _turn(gate, orchestrator, "still there?")
    assert text == HELD and len(llm.prompts) == 1  # held: no model call
    stored = (await orchestrator.store.load(session.id)).messages
    assert [m.text for m in stored] == ["hello", "the bot speaks", "Can I speak to a human, please?",
                                        "still there?"]  # fmt: skip
    await gate.handoff.handback(gate.tenant, session.id, "agent:a")
    _, text = await _turn(gate, orchestrator, "and now?")
    assert text == "the bot speaks" and len(llm.prompts) == 2
    events = await gate.handoff.conversations.events(session.id, "0", 100)
    kinds = [e.get("status") or e["item"]["role"] for _, e in events]
    assert kinds == ["user", "assistant", "user", "waiting_human", "human", "user", "bot", "user",
                     "assistant"]  # fmt: skip
    assert {e["origin"] for _, e in events if e["type"] == "conversation.item.added"} == {"conn_1"}


async def test_unanswered_replies_in_a_row_hand_off_after_the_profiles_count():
    orchestrator, _, _, _ = await _bot()
    session = await orchestrator.open_session()
    gate = _gate(orchestrator, session.id, BotProfile(
        knowledge_base="help", threshold=0.26, fallback="nothing found",
        handoff_after_unanswered=2, handoff_reply=HELD))  # fmt: skip
    run, text = await _turn(gate, orchestrator, "Tell me about volcanoes on Mars")
    assert run.message.status == "unanswered" and await _status(gate) == "bot"
    await _turn(gate, orchestrator, "Explain quantum chromodynamics")
    state = await gate.handoff.state(gate.tenant, session.id)
    assert state.status == "waiting_human" and state.reason == "unanswered"
    assert "bot (unanswered): I can't find that in our help pages." in state.summary


async def test_a_model_error_hands_off():
    orchestrator = _orchestrator(FailingLM())
    session = await orchestrator.open_session()
    gate = _gate(orchestrator, session.id)
    with pytest.raises(ModelError):
        await _turn(gate, orchestrator, "hello")
    state = await gate.handoff.state(gate.tenant, session.id)
    assert state.status == "waiting_human" and state.reason == "model_error"


async def test_the_customer_writing_in_a_resolved_conversation_reopens_it_to_the_bot():
    orchestrator = _orchestrator()
    session = await orchestrator.open_session()
    gate = _gate(orchestrator, session.id)
    await gate.request()
    await gate.handoff.claim(gate.tenant, session.id, "agent:a")
    await gate.handoff.resolve(gate.tenant, session.id, "agent:a")
    _, text = await _turn(gate, orchestrator, "one more question")
    assert text == "the bot speaks" and await _status(gate) == "bot"


def test_a_session_tied_chat_completion_gets_the_notice_while_held(tmp_path):
    from tests.support.openai_app import CHAT, AppClients, user

    with AppClients(tmp_path) as make:
        http = make()
        components = http.app.state.components
        created = http.portal.call(components.orchestrator.open_session)
        headers = {"X-Session-Id": created.id}
        asked = http.post(CHAT, json={"messages": user("let me talk to a human")}, headers=headers)
        assert asked.json()["choices"][0]["message"]["content"] == HELD
        state = http.portal.call(components.handoff.handoff.state, "default", created.id)
        assert state.status == "waiting_human" and state.reason == "customer_request"
        prompts = len(components.llm.prompts)
        again = http.post(CHAT, json={"messages": user("hello?")}, headers=headers).json()
        assert again["choices"][0]["message"]["content"] == HELD
        assert len(components.llm.prompts) == prompts  # no model call
        stored = http.get(f"/v1/sessions/{created.id}/messages").json()["data"]
        assert [m["content"][0]["text"] for m in stored] == ["let me talk to a human", "hello?"]
