"""What the batch scheduler (``adapters.llm.batching``) puts in each step, on the tiny random Llama:
a burst arriving while nothing runs is admitted into one step (the admission wait), the wait ends
at its cap for a request alone, a request arriving while others decode joins at the next step
without it, and a long prompt joins in chunks with the running stream fed at every step.
Every step is recorded by wrapping the engine's ``step``: no timing is asserted."""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from adapters.llm.transformers_local import TransformersLocalLM  # noqa: E402
from assistant.ports import GenerationOptions, Prompt, PromptMessage  # noqa: E402
from tests.support.tiny_models import (  # noqa: E402
    QUESTIONS,
    SENTENCES,
    SYSTEM,
    ForwardCounter,
    allow_only,
    make_tokenizer,
    printable_ids,
    tiny_llama,
)
from tests.support.waiting import wait_for_async  # noqa: E402

#: Longer than any test runs: an admission wait this long ends only when ``max_batch`` wait.
FOREVER_S = 600.0


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def model(tokenizer):
    model = tiny_llama(tokenizer, initializer_range=0.2)
    allow_only(model, printable_ids(tokenizer))  # every token a delta, no EOS unless forced
    return model


def recorded(lm, *, keyed=False):
    """Each step's parts as the number of ids each feeds (``keyed``: ``(its request's cache, the
    number)``, a request keeping one cache from its first step to its last), as they run."""
    steps, step = [], lm.step

    def recording(parts):
        steps.append([(id(p.prefix), len(p.ids)) if keyed else len(p.ids) for p in parts])
        return step(parts)

    lm.step = recording
    return steps


def prompt(question):
    return Prompt((SYSTEM, PromptMessage("user", question)))


async def reply(lm, p, **options):
    generation = lm.stream(p, GenerationOptions(**options))
    return "".join([delta async for delta in generation])


async def test_a_burst_arriving_while_nothing_runs_is_admitted_into_one_step(model, tokenizer):
    alone = TransformersLocalLM(model, tokenizer)
    expected = [await reply(alone, prompt(q), max_new_tokens=5) for q in QUESTIONS[:3]]
    lm = TransformersLocalLM(model, tokenizer, max_batch=3)
    lm.scheduler.admission_gap_s = lm.scheduler.admission_window_s = FOREVER_S
    steps = recorded(lm)
    replies = []
    for count, question in enumerate(QUESTIONS[:3], 1):  # one after the other: the first two
        replies.append(asyncio.create_task(reply(lm, prompt(question), max_new_tokens=5)))
        if count < 3:  # wait, none taken yet; the third fills the batch and the step begins
            await wait_for_async(lambda n=count: lm.scheduler.waiting == n, what=f"{count} waiting")
    assert list(await asyncio.gather(*replies)) == expected
    # One pass prefills all three prompts, then four decode the three together: 5 tokens each.
    assert [len(parts) for parts in steps] == [3] * 5
    assert all(n > 1 for n in steps[0]) and steps[1:] == [[1, 1, 1]] * 4


async def test_a_request_alone_waits_no_longer_than_the_admission_window(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer)
    expected = await reply(lm, prompt(QUESTIONS[0]), max_new_tokens=4)
    lm.scheduler.admission_gap_s, lm.scheduler.admission_window_s = FOREVER_S, 0.05
    assert await reply(lm, prompt(QUESTIONS[0]), max_new_tokens=4) == expected


async def test_a_request_arriving_while_others_decode_joins_at_the_next_step(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer)
    runs = ((prompt(QUESTIONS[0]), 12), (prompt(QUESTIONS[1]), 3))
    expected = [await reply(lm, p, max_new_tokens=n) for p, n in runs]
    steps = recorded(lm)
    gate = ForwardCounter(model, gate_from=3)  # the third pass waits: the first one decodes
    first = asyncio.create_task(reply(lm, runs[0][0], max_new_tokens=12))
    await wait_for_async(lambda: gate.calls >= 3, what="the first to decode")
    # Were the admission wait applied while something runs, the second would never start.
    lm.scheduler.admission_gap_s = lm.scheduler.admission_window_s = FOREVER_S
    second = asyncio.create_task(reply(lm, runs[1][0], max_new_tokens=3))
    await wait_for_async(lambda: lm.scheduler.waiting == 1, what="the second to wait")
    gate.gate_from = None
    gate.release.set()
    assert list(await asyncio.gather(first, second)) == expected
    gate.handle.remove()
    assert steps[2] == [1] and steps[3][0] == 1 and steps[3][1] > 1  # a token, then its prompt


async def test_a_long_prompt_joins_in_chunks_and_the_running_stream_gets_a_token_each_step(
    model, tokenizer
):
    chunk = 8
    long = prompt(" ".join(SENTENCES))  # past several chunks
    lm = TransformersLocalLM(model, tokenizer, prefill_chunk_tokens=chunk)
    expected = [await reply(lm, p, max_new_tokens=4) for p in (prompt(QUESTIONS[0]), long)]
    long_ids = len(lm._prompt_ids(long.messages))
    assert long_ids > 3 * chunk
    steps = recorded(lm, keyed=True)
    first = asyncio.create_task(reply(lm, prompt(QUESTIONS[0]), max_new_tokens=60))
    await wait_for_async(lambda: len(steps) >= 2, what="the first to decode")
    second = await reply(lm, long, max_new_tokens=4)
    assert (await first)[: len(expected[0])] == expected[0] and second == expected[1]
    ((running, _),) = steps[0]
    joined = next(i for i, parts in enumerate(steps) if len(parts) == 2)
    ((key, _),) = [part for part in steps[joined] if part[0] != running]
    fed, prefill = 0, []
    for parts in steps[joined:]:
        if fed < long_ids:
            prefill.append(dict(parts))
            fed += dict(parts)[key]
    # While the long prompt comes in, the running stream is fed a token in every step, and the
    # prompt at most ``chunk`` tokens a step: all of it in as few steps as that allows.
    assert fed == long_ids and len(prefill) == -(-long_ids // chunk)
    assert all(parts[running] == 1 and parts[key] <= chunk for parts in prefill)
