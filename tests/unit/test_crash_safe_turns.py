"""Crash-safe turns on the in-memory store: a streaming reply's text is kept with the lease's
renewals (not before the first flush interval), dropped when the turn ends, and stored as
``interrupted`` by the next process to take the session when its process died; a dead process's
lease is free at once, a live one's is not. Also the Redis store's partial-reply encoding, which
needs no Redis."""

import asyncio
import contextlib
import json

import pytest

from adapters.memory.redis_turns import PartialWriter, decode_partial, escape, partial_header
from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.errors import SessionBusyError, StoreError
from assistant.messages import Message
from assistant.orchestrator import Orchestrator
from assistant.ports import PartialReply
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.waiting import wait_for_async

REPLY = " ".join(f"word{i}" for i in range(40))


def orchestrator(store, llm, *, flush_ms=50, wait_s=0.0):
    return Orchestrator(
        llm, store, llm_settings=LLMSettings(), prompt_settings=PromptSettings(),
        memory_settings=MemorySettings(partial_flush_ms=flush_ms, lock_wait_s=wait_s),
    )  # fmt: skip


async def respond(orch, session_id):
    return "".join([d async for d in orch.respond(session_id, orch.start_response())])


async def test_a_reply_done_within_the_flush_interval_writes_no_partial():
    store = MemoryStore()
    orch = orchestrator(store, ScriptedLM("a short reply"), flush_ms=60_000)
    session = await orch.open_session()
    await orch.add_item(session.id, Message.from_text("user", "hi"))
    assert await respond(orch, session.id) == "a short reply"
    assert store.partial_writes == 0 and store.partials == {}


async def test_a_streaming_reply_is_kept_in_batches_and_dropped_when_the_turn_ends():
    store = MemoryStore()
    orch = orchestrator(store, ScriptedLM(REPLY, token_delay_s=0.01), flush_ms=50)
    session = await orch.open_session()
    await orch.add_item(session.id, Message.from_text("user", "talk"))
    task = asyncio.create_task(respond(orch, session.id))
    kept = await wait_for_async(lambda: store.partials.get(session.id), what="a partial reply")
    assert REPLY.startswith(kept[1].text) and kept[1].text
    assert await task == REPLY
    assert store.partials == {}
    assert 1 <= store.partial_writes < len(REPLY.split())  # batched, not one write per token
    assert [m.status for m in store.messages[session.id]] == ["completed", "completed"]


async def test_a_dead_processs_reply_is_stored_interrupted_by_the_next_turn_on_another():
    first = MemoryStore()
    orch = orchestrator(first, ScriptedLM(REPLY, token_delay_s=0.01))
    session = await orch.open_session()
    await orch.add_item(session.id, Message.from_text("user", "talk"))
    task = asyncio.create_task(respond(orch, session.id))

    def kept_words():
        left = first.partials.get(session.id)
        return left is not None and len(left[1].text.split()) >= 5 and left[1]

    kept = await wait_for_async(kept_words, what="five words of the reply kept")
    first.crash()  # from here on its writes fail, as a killed process's would
    task.cancel()
    with contextlib.suppress(StoreError, asyncio.CancelledError):
        await task
    second = first.process()
    orch2 = orchestrator(second, ScriptedLM("again"))
    started = await second.begin_turn(session.id, "tok", message=Message.from_text("user", "more"))
    assert started.recovered
    await second.end_turn(session.id, "tok")
    stored = second.messages[session.id]
    assert [(m.role, m.status) for m in stored] == [
        ("user", "completed"), ("assistant", "interrupted"), ("user", "completed")
    ]
    assert stored[1].id == kept.message_id and REPLY.startswith(stored[1].text)
    assert stored[1].text.startswith(kept.text)
    assert await respond(orch2, session.id) == "again"  # the lease was given back
    # Once: no one else finds it again.
    again = await second.process().begin_turn(session.id, "tok3")
    assert not again.recovered and len(second.messages[session.id]) == 4


async def test_a_live_processs_lease_is_not_taken_over_and_a_dead_ones_is():
    first = MemoryStore()
    orch = orchestrator(first, ScriptedLM())
    session = await orch.open_session()
    await first.begin_turn(session.id, "tok-a", message=Message.from_text("user", "q"))
    second = first.process()
    with pytest.raises(SessionBusyError):
        await second.begin_turn(session.id, "tok-b")
    first.crash()
    started = await second.begin_turn(session.id, "tok-b")
    assert not started.recovered  # nothing was streaming
    with pytest.raises(StoreError):
        await first.end_turn(session.id, "tok-a")


async def test_a_recovered_reply_is_stored_once_on_its_message_id():
    store = MemoryStore()
    session = await orchestrator(store, ScriptedLM()).open_session()
    await store.begin_turn(session.id, "tok-a", message=Message.from_text("user", "q"))
    await store.renew_turn(session.id, "tok-a", PartialReply("msg_x", "half"))
    # Its writer stored the whole reply, then died before the partial was dropped.
    whole = Message(id="msg_x", role="assistant", content=PartialReply("msg_x", "whole").
                    as_interrupted().content, status="completed")  # fmt: skip
    await store.append(session.id, whole)
    store.crash()
    other = store.process()
    assert (await other.begin_turn(session.id, "tok-b")).recovered
    assert [m.text for m in other.messages[session.id]] == ["q", "whole"]


async def test_a_writer_that_lost_its_lease_keeps_no_partial():
    store = MemoryStore()
    session = await orchestrator(store, ScriptedLM()).open_session()
    await store.begin_turn(session.id, "tok-a")
    store.crash()
    other = store.process()
    await other.begin_turn(session.id, "tok-b")
    store.live.add(store.owner)  # it was only stalled: it comes back
    assert not await store.renew_turn(session.id, "tok-a", PartialReply("msg_y", "late"))
    assert session.id not in store.partials


# -- the Redis store's partial replies, encoded without Redis -------------------------------------


def test_a_partial_reply_joins_into_the_interrupted_messages_json():
    text = 'say "hi"\n\\ tab\t ünïcode 😀 </script>'
    value = partial_header("inst tok", "msg_1") + escape(text)
    lock, once, before, after, escaped = value.split("\n", 4)
    assert (lock, once) == ("inst tok", "id:msg_1")
    message = Message.model_validate_json(before + escaped + after)
    assert (message.id, message.role, message.status, message.text) == (
        "msg_1", "assistant", "interrupted", text
    )
    assert decode_partial(value) == ("inst tok", text)
    json.loads(before + escaped + after)  # plain JSON too


def test_the_partial_writer_sends_the_new_text_only_and_all_of_it_after_a_lost_write():
    writer, key = PartialWriter(), "k"
    offset, first = writer.next(key, "L", PartialReply("m1", "Hello"))
    assert offset == 0 and decode_partial(first) == ("L", "Hello")
    writer.stored(key, len(first))
    offset, chunk = writer.next(key, "L", PartialReply("m1", 'Hello, "you"'))
    assert (offset, chunk) == (len(first), escape(', "you"'))
    writer.stored(key, offset + len(chunk) + 1)  # not what was expected: a write went missing
    offset, whole = writer.next(key, "L", PartialReply("m1", 'Hello, "you" there'))
    assert offset == 0 and decode_partial(whole)[1] == 'Hello, "you" there'
    writer.lost(key)  # an error: written or not, unknown
    assert writer.next(key, "L", PartialReply("m1", "Hello, more"))[0] == 0
    assert writer.next(key, "L", PartialReply("m2", "Other"))[0] == 0  # a new reply
    assert writer.forget(key) and not writer.forget(key)
