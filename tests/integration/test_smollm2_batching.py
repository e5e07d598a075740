"""Continuous batching on the real SmolLM2-135M-Instruct (``adapters.llm.batching``): replies
generated together are each the reply that request gets alone; one joins a running stream at its
next step; a cancelled one leaves the others as they were; a request past the queue bound fails at
once with ``server_busy``; each keeps its own sampling; the next turn still reuses its KV cache.

The "alone" reference is the same adapter serving one request at a time. On this model every
reply generated together so far was token for token its reply alone (the packed pass changes only
how the matrix products are shaped: see ``adapters.llm.packed``), so equality is asserted."""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from adapters.llm import smollm2  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.errors import ServerBusyError  # noqa: E402
from assistant.ports import GenerationOptions, Prompt, PromptMessage  # noqa: E402
from bench.ttft import QUESTIONS, SYSTEM  # noqa: E402
from tests.support.waiting import wait_for_async  # noqa: E402

pytestmark = pytest.mark.integration
TOKENS = 16
#: Questions whose replies run past the tokens asked for (no EOS before them).
LONG = ("Write a long poem about the sea.", "Tell me a long story about a dragon.")


@pytest.fixture(scope="module")
def loaded():
    try:
        smollm2.gguf_path()
    except Exception as exc:  # noqa: BLE001 - the wheel is an optional install
        pytest.skip(str(exc))
    from adapters.llm.transformers_local import TransformersLocalLM

    path = str(smollm2.prepare(Settings().models_dir, progress=False))
    return TransformersLocalLM.from_path(path)


def adapter(loaded, **kw):
    from adapters.llm.transformers_local import TransformersLocalLM

    return TransformersLocalLM(loaded.model, loaded.tokenizer, **kw)


def prompt(question, key=None, history=()):
    messages = (PromptMessage("system", SYSTEM), *history, PromptMessage("user", question))
    return Prompt(messages, cache_key=key)


async def reply(lm, p, **options):
    generation = lm.stream(p, GenerationOptions(**{"max_new_tokens": TOKENS, **options}))
    return "".join([delta async for delta in generation]), generation


async def alone(lm, prompts, **options):
    return [(await reply(lm, p, **options))[0] for p in prompts]


async def test_replies_generated_together_are_each_its_reply_alone(loaded):
    lm = adapter(loaded)
    prompts = [prompt(q) for q in QUESTIONS[:4]]
    expected = await alone(lm, prompts)
    assert lm.scheduler.widest_step == 1
    together = await asyncio.gather(*(reply(lm, p) for p in prompts))
    assert [text for text, _ in together] == expected
    assert lm.scheduler.widest_step >= 2  # they did share forward passes
    assert all(g.finish_reason in ("stop", "length") for _, g in together)


async def test_a_request_joins_a_running_stream(loaded):
    lm = adapter(loaded)
    first, second = prompt(LONG[0]), prompt(QUESTIONS[3])
    expected = await alone(lm, [first, second], max_new_tokens=32)
    running = lm.stream(first, GenerationOptions(max_new_tokens=32))
    texts, joined = [], None
    async for delta in running:
        texts.append(delta)
        if len(texts) == 3:  # the first stream is decoding: the second joins it
            joined = asyncio.create_task(reply(lm, second, max_new_tokens=32))
            await wait_for_async(lambda: lm.scheduler.active == 2, what="the second to join")
    assert joined is not None
    text, _ = await joined
    assert ["".join(texts), text] == expected
    assert lm.scheduler.widest_step == 2


async def test_a_cancelled_reply_leaves_the_others_intact(loaded):
    lm = adapter(loaded)
    prompts = [prompt(QUESTIONS[4]), prompt(LONG[1]), prompt(QUESTIONS[6])]
    expected = await alone(lm, prompts)
    cancelled = lm.stream(prompts[1], GenerationOptions(max_new_tokens=TOKENS))

    async def cancel_after_two() -> int:
        seen = 0
        async for _ in cancelled:
            seen += 1
            if seen == 2:
                cancelled.cancel()
        return seen

    others = [asyncio.create_task(reply(lm, p)) for p in (prompts[0], prompts[2])]
    seen = await cancel_after_two()
    results = [text for text, _ in await asyncio.gather(*others)]
    assert results == [expected[0], expected[2]]
    assert cancelled.finish_reason == "cancelled"
    assert seen == 2 and cancelled.usage.output_tokens <= 3  # stopped within a token
    assert lm.scheduler.active == 0


async def test_past_the_queue_bound_a_request_fails_at_once_with_server_busy(loaded):
    lm = adapter(loaded, max_batch=1, max_queue=1)
    running = lm.stream(prompt(LONG[0]), GenerationOptions(max_new_tokens=TOKENS))
    chunks = running.__aiter__()
    first = await chunks.__anext__()
    waiting = asyncio.create_task(reply(lm, prompt(QUESTIONS[1])))  # queued behind the first
    await wait_for_async(lambda: lm.scheduler.waiting == 1, what="the second request to wait")
    with pytest.raises(ServerBusyError) as busy:
        await reply(lm, prompt(QUESTIONS[2]))
    assert busy.value.code == "server_busy" and busy.value.type == "server_error"
    rest = "".join([delta async for delta in chunks])
    text, generation = await waiting  # the queued one ran once the first was done
    expected = await alone(lm, [prompt(LONG[0]), prompt(QUESTIONS[1])])
    assert [first + rest, text] == expected
    assert lm.scheduler.widest_step == 1
    assert (await reply(lm, prompt(QUESTIONS[2])))[0]  # and later it is served again


async def test_each_sequence_keeps_its_own_sampling(loaded):
    lm = adapter(loaded)
    sampled = dict(temperature=1.0, top_p=0.9)
    runs = [(prompt(QUESTIONS[0]), {}), (prompt(QUESTIONS[0]), {**sampled, "seed": 7}),
            (prompt(QUESTIONS[0]), {**sampled, "seed": 8}), (prompt(QUESTIONS[1]), {})]  # fmt: skip
    expected = [(await reply(lm, p, **o))[0] for p, o in runs]
    together = await asyncio.gather(*(reply(lm, p, **o) for p, o in runs))
    assert [text for text, _ in together] == expected
    assert lm.scheduler.widest_step == 4
    assert len({expected[0], expected[1], expected[2]}) == 3  # seeds differ, and from greedy


async def test_the_next_turn_reuses_the_kv_cache_of_a_batched_turn(loaded):
    lm, fresh = adapter(loaded), adapter(loaded, kv_cache_sessions=0)
    keys = ["a", "b", "c"]
    firsts = await asyncio.gather(*(reply(lm, prompt(QUESTIONS[i], k)) for i, k in enumerate(keys)))
    seconds = [
        prompt(QUESTIONS[i + 3], k, (PromptMessage("user", QUESTIONS[i]),
                                     PromptMessage("assistant", text)))
        for i, (k, (text, _)) in enumerate(zip(keys, firsts))
    ]  # fmt: skip
    together = await asyncio.gather(*(reply(lm, p) for p in seconds))
    assert (lm.kv_cache.hits, lm.kv_cache.misses) == (3, 3)
    assert [text for text, _ in together] == await alone(fresh, seconds)
    assert lm.prefill_tokens < len(lm._prompt_ids(seconds[-1].messages)) / 2
