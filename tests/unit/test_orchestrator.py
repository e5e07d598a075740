import asyncio

import pytest

from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.errors import ModelError, NoInputError, SessionBusyError, SessionNotFoundError
from assistant.messages import Message
from assistant.orchestrator import Orchestrator, ResponseOverrides
from assistant.testing.language_models import FailingLM, ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.waiting import wait_for_async


def make(llm=None, **llm_settings):
    store = MemoryStore()
    orchestrator = Orchestrator(
        llm or ScriptedLM(),
        store,
        llm_settings=LLMSettings(**llm_settings),
        prompt_settings=PromptSettings(instructions="be brief"),
        memory_settings=MemorySettings(lock_wait_s=0.05),
    )
    return orchestrator, store


async def collect(orchestrator, session_id, run, overrides=ResponseOverrides()):
    return [d async for d in orchestrator.respond(session_id, run, overrides)]


async def test_text_turn_streams_and_persists_both_messages():
    orchestrator, store = make()
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "hello there"))
    run = orchestrator.start_response()
    deltas = await collect(orchestrator, session.id, run)
    assert "".join(deltas) == "You said: hello there"
    assert len(deltas) == 4
    assert run.status == "completed"
    stored = store.messages[session.id]
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].text == "You said: hello there"
    assert stored[1].id == run.item_id
    assert run.usage.output_tokens == 4


async def test_instructions_reach_the_prompt():
    llm = ScriptedLM()
    orchestrator, _ = make(llm)
    session = await orchestrator.open_session()
    await orchestrator.update_session(session.id, instructions="talk like a pirate")
    await orchestrator.add_item(session.id, Message.from_text("user", "hi"))
    await collect(orchestrator, session.id, orchestrator.start_response())
    assert llm.prompts[-1].messages[0].text == "talk like a pirate"


async def test_cancel_mid_stream_stores_an_interrupted_reply():
    orchestrator, store = make(ScriptedLM("one two three four five six seven eight"))
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "count"))
    run = orchestrator.start_response()
    deltas = []
    async for delta in orchestrator.respond(session.id, run):
        deltas.append(delta)
        if len(deltas) == 2:
            run.cancel()
    assert deltas == ["one", " two"]
    assert run.status == "cancelled"
    reply = store.messages[session.id][-1]
    assert reply.status == "interrupted"
    assert reply.text == "one two"


async def test_consumer_leaving_early_still_stores_the_partial_reply():
    orchestrator, store = make(ScriptedLM("a b c d e f"))
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "go"))
    run = orchestrator.start_response()
    stream = orchestrator.respond(session.id, run)
    assert await stream.__anext__() == "a"
    await stream.aclose()
    assert run.status == "cancelled"
    assert store.messages[session.id][-1].status == "interrupted"
    assert store.messages[session.id][-1].text == "a"


async def test_max_output_tokens_gives_incomplete():
    orchestrator, store = make(ScriptedLM("a b c d e f"))
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "go"))
    run = orchestrator.start_response()
    deltas = await collect(orchestrator, session.id, run, ResponseOverrides(max_output_tokens=3))
    assert "".join(deltas) == "a b c"
    assert run.status == "incomplete"
    assert store.messages[session.id][-1].status == "incomplete"


async def test_model_failure_is_a_model_error_and_keeps_the_partial_reply():
    orchestrator, store = make(FailingLM(good=2))
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "go"))
    run = orchestrator.start_response()
    with pytest.raises(ModelError) as info:
        await collect(orchestrator, session.id, run)
    assert info.value.code == "model_error"
    assert run.status == "failed"
    assert store.messages[session.id][-1].status == "interrupted"
    assert store.messages[session.id][-1].text == "w0 w1 "


async def test_retried_item_with_the_same_turn_id_is_stored_once():
    orchestrator, store = make()
    session = await orchestrator.open_session()
    first = await orchestrator.add_item(session.id, Message.from_text("user", "hi", turn_id="t1"))
    again = await orchestrator.add_item(session.id, Message.from_text("user", "hi", turn_id="t1"))
    assert first.created and not again.created
    assert again.message.id == first.message.id
    assert len(store.messages[session.id]) == 1


async def test_no_user_input_and_unknown_session_are_refused():
    orchestrator, _ = make()
    session = await orchestrator.open_session()
    with pytest.raises(NoInputError):
        await collect(orchestrator, session.id, orchestrator.start_response())
    with pytest.raises(SessionNotFoundError):
        await orchestrator.open_session("sess_missing")


async def test_a_second_response_on_a_busy_session_is_refused():
    orchestrator, _ = make(ScriptedLM("a b c d", token_delay_s=0.05))
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "go"))
    first = orchestrator.start_response()
    stream = orchestrator.respond(session.id, first)
    await stream.__anext__()  # the first response holds the session's lock now
    with pytest.raises(SessionBusyError):
        await collect(orchestrator, session.id, orchestrator.start_response())
    rest = [d async for d in stream]
    assert "".join(["a", *rest]) == "a b c d"


async def test_history_is_fitted_to_the_budget():
    llm = ScriptedLM()
    orchestrator, _ = make(llm)
    orchestrator.defaults.prompt_settings = PromptSettings(instructions="sys", context_tokens=40)
    session = await orchestrator.open_session()
    for i in range(10):
        await orchestrator.add_item(
            session.id, Message.from_text("user", f"message number {i} here")
        )
        await collect(orchestrator, session.id, orchestrator.start_response())
    run = orchestrator.start_response()
    await orchestrator.add_item(session.id, Message.from_text("user", "last one"))
    await collect(orchestrator, session.id, run)
    assert run.prompt is not None and run.prompt.dropped > 0
    assert run.prompt.tokens <= 40
    assert llm.prompts[-1].messages[-1].text == "last one"


async def test_a_model_that_stalls_fails_with_model_timeout_and_keeps_what_it_said():
    llm = ScriptedLM("one two three")
    llm.token_timeout_s = 0.05
    original = llm._stream_impl

    async def stall_after_first(prompt, options, cancel, usage):
        async for index, delta in _enumerate(original(prompt, options, cancel, usage)):
            if index == 1:
                # The stall is the behaviour under test: far past the 0.05 s allowed between
                # tokens (bounded, so a missing timeout fails the test instead of hanging it).
                await asyncio.sleep(5)
            yield delta

    llm._stream_impl = stall_after_first
    orchestrator, store = make(llm)
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "go"))
    run = orchestrator.start_response()
    with pytest.raises(ModelError) as info:
        await collect(orchestrator, session.id, run)
    assert info.value.code == "model_timeout"
    assert store.messages[session.id][-1].text == "one"
    assert store.messages[session.id][-1].status == "interrupted"


async def _enumerate(iterator):
    index = 0
    async for item in iterator:
        yield index, item
        index += 1


async def test_a_task_cancelled_while_the_reply_is_being_stored_still_stores_it_once():
    class SlowEnd(MemoryStore):
        """Storing a reply waits for ``go`` (a slow store), so the task can be cancelled there."""

        def __init__(self) -> None:
            super().__init__()
            self.go = asyncio.Event()
            self.entered = asyncio.Event()

        async def _end_turn_impl(self, session_id, token, message, event=None):
            if message is not None:
                self.entered.set()
                await self.go.wait()
            return await super()._end_turn_impl(session_id, token, message, event)

    store = SlowEnd()
    orchestrator = Orchestrator(
        ScriptedLM("all of it"), store, llm_settings=LLMSettings(),
        prompt_settings=PromptSettings(), memory_settings=MemorySettings(),
    )  # fmt: skip
    session = await orchestrator.open_session()
    await orchestrator.add_item(session.id, Message.from_text("user", "q"))
    run = orchestrator.start_response()
    task = asyncio.create_task(collect(orchestrator, session.id, run))
    await asyncio.wait_for(store.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.go.set()
    await wait_for_async(
        lambda: len(store.messages[session.id]) >= 2, what="the background write of the reply"
    )  # it finishes on its own
    assert [m.text for m in store.messages[session.id]] == ["q", "all of it"]
    assert store.messages[session.id][1].id == run.item_id


async def test_an_unknown_session_id_is_not_echoed_whole():
    """Found by the fuzzer: ``?session_id=`` of 5,000 characters came back in the error whole."""
    orchestrator, _ = make()
    with pytest.raises(SessionNotFoundError) as info:
        await orchestrator.open_session("s" * 5000)
    assert len(info.value.message) < 120 and info.value.message.startswith("no session 'sss")
