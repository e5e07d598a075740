"""The continuous-batching scheduler (``adapters.llm.batching``) on the tiny random Llama: sequences
leave a shared step on EOS or their own max tokens while the others go on, a request cancelled
while it waits never runs, and a pass that fails fails the sequences it carried, not the next
ones. (The real SmolLM2 checks, greedy equality included: tests/integration/test_smollm2_batching.)"""

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
    SYSTEM,
    ForwardCounter,
    allow_only,
    make_tokenizer,
    printable_ids,
    tiny_llama,
)
from tests.support.waiting import wait_for_async  # noqa: E402


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def model(tokenizer):
    model = tiny_llama(tokenizer, initializer_range=0.2)
    allow_only(model, printable_ids(tokenizer))  # every token a delta, no EOS unless forced
    return model


def prompt(i):
    return Prompt((SYSTEM, PromptMessage("user", QUESTIONS[i])))


async def reply(lm, p, **options):
    generation = lm.stream(p, GenerationOptions(**options))
    return "".join([delta async for delta in generation]), generation


async def test_each_leaves_at_its_own_max_tokens_and_the_rest_go_on(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer)
    lengths = (3, 9, 6)
    expected = [(await reply(lm, prompt(i), max_new_tokens=n))[0] for i, n in enumerate(lengths)]
    together = await asyncio.gather(
        *(reply(lm, prompt(i), max_new_tokens=n) for i, n in enumerate(lengths))
    )
    assert [text for text, _ in together] == expected
    assert [g.usage.output_tokens for _, g in together] == list(lengths)
    assert all(g.finish_reason == "length" for _, g in together)
    assert lm.scheduler.widest_step == 3 and lm.scheduler.active == 0


async def test_an_eos_ends_one_sequence_of_a_shared_step(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer)
    eos = tokenizer.eos_token_id

    def first_row_ends(module, inputs, logits):  # (1, K, V): in a shared step, row 0 says EOS
        if logits.shape[1] < 2:
            return logits
        forced = logits.clone()
        forced[0, 0] = float("-inf")
        forced[0, 0, eos] = 0.0
        return forced

    handle = model.lm_head.register_forward_hook(first_row_ends)
    # The first asks for many tokens, so it still decodes when the second joins, however slow
    # the machine: it ends at their first shared step, on the forced EOS.
    first = asyncio.create_task(reply(lm, prompt(0), max_new_tokens=200))
    await wait_for_async(lambda: lm.scheduler.steps >= 2, what="the first to decode")
    (text0, g0), (text1, g1) = await asyncio.gather(first, reply(lm, prompt(1), max_new_tokens=5))
    handle.remove()
    assert g0.finish_reason == "stop" and 0 < g0.usage.output_tokens < 200
    assert g1.finish_reason == "length" and g1.usage.output_tokens == 5
    assert lm.scheduler.widest_step == 2


async def test_a_request_cancelled_while_it_waits_never_runs(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer, max_batch=1)
    running = lm.stream(prompt(0), GenerationOptions(max_new_tokens=30))
    chunks = running.__aiter__()
    await chunks.__anext__()
    waiting = lm.stream(prompt(1), GenerationOptions(max_new_tokens=30))
    task = asyncio.create_task(reply_of(waiting))
    await wait_for_async(lambda: lm.scheduler.waiting == 1, what="the second to wait")
    waiting.cancel()
    await running.aclose()
    assert await task == ""
    assert waiting.usage.output_tokens == 0 and waiting.finish_reason == "cancelled"
    assert lm.scheduler.active == lm.scheduler.waiting == 0


async def reply_of(generation):
    return "".join([delta async for delta in generation])


async def test_a_failed_pass_fails_the_sequences_it_carried_only(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer)
    expected = (await reply(lm, prompt(2), max_new_tokens=6))[0]
    calls = []

    def fail_once(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    handle = model.model.layers[0].register_forward_pre_hook(fail_once)
    gate = ForwardCounter(model, gate_from=1)  # the first pass waits until the second has come
    replies = [asyncio.create_task(reply(lm, prompt(i), max_new_tokens=6)) for i in range(2)]
    await wait_for_async(lambda: lm.scheduler.waiting + lm.scheduler.active == 2, what="both")
    gate.release.set()  # passes: 0's prompt, then 0's token + 1's prompt, then both tokens: boom
    results = await asyncio.gather(*replies, return_exceptions=True)
    handle.remove()
    gate.handle.remove()
    assert all(isinstance(r, Exception) and "RuntimeError" in str(r) for r in results)
    assert (await reply(lm, prompt(2), max_new_tokens=6))[0] == expected
