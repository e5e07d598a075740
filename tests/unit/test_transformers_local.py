"""The local transformers adapter on a tiny random Llama and a byte-level BPE tokenizer trained
offline on a few sentences (``tests.support.tiny_models``): no hub, no prepared model. Random
weights make the text gibberish; what is checked is the token loop (KV cache, EOS, limits,
cancellation) and the streaming of text deltas."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from adapters.llm.transformers_local import TransformersLocalLM  # noqa: E402
from assistant.errors import ConfigurationError, ContextLengthError  # noqa: E402
from assistant.ports import (  # noqa: E402
    CancelToken,
    GenerationOptions,
    Prompt,
    PromptMessage,
    Usage,
)
from tests.support.tiny_models import (  # noqa: E402
    CHATML,
    EOS,
    QUESTIONS,
    SYSTEM,
    ForwardCounter,
    allow_only,
    assert_cancel_stops_after_one_token,
    make_tokenizer,
    printable_ids,
    tiny_llama,
)

PROMPT = Prompt(
    (PromptMessage("system", "You are a helpful assistant."), PromptMessage("user", "Hello there"))
)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_llama(
        tokenizer,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@pytest.fixture
def lm(model, tokenizer):
    return TransformersLocalLM(model, tokenizer)


async def stream_all(lm, prompt=PROMPT, **options):
    generation = lm.stream(prompt, GenerationOptions(**options))
    deltas = [delta async for delta in generation]
    return deltas, generation


def greedy_ids(lm, prompt=PROMPT, max_new_tokens=12):
    input_ids = lm._prompt_ids(prompt.messages)
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    with torch.inference_mode():
        return input_ids, list(lm._generate_ids(input_ids, options, CancelToken(), Usage()))


async def test_deltas_concatenate_to_the_decoded_output(lm, tokenizer):
    _, ids = greedy_ids(lm, max_new_tokens=16)
    deltas, generation = await stream_all(lm, max_new_tokens=16)
    assert len(deltas) >= 2
    assert all(deltas)
    expected = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert "".join(deltas) == expected
    assert generation.usage.output_tokens == len(ids)


async def test_usage_counts_prompt_and_reply_tokens(lm, model, tokenizer):
    allow_only(model, printable_ids(tokenizer))
    deltas, generation = await stream_all(lm, max_new_tokens=7)
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.text} for m in PROMPT.messages],
        tokenize=False,
        add_generation_prompt=True,
    )
    expected = len(tokenizer.encode(rendered, add_special_tokens=False))
    assert generation.usage.input_tokens == expected
    assert generation.usage.output_tokens == 7 == len(deltas)


async def test_max_new_tokens_finishes_with_length(lm, model, tokenizer):
    allow_only(model, printable_ids(tokenizer))
    _, generation = await stream_all(lm, max_new_tokens=5)
    assert generation.usage.output_tokens == 5
    assert generation.finish_reason == "length"


async def test_eos_finishes_with_stop_and_is_not_counted(lm, model, tokenizer):
    counter = ForwardCounter(model)
    words = printable_ids(tokenizer)
    allow_only(model, words)  # the first two tokens are words, then only EOS is allowed
    only_eos = torch.full((model.config.vocab_size,), float("-inf"))
    only_eos[tokenizer.eos_token_id] = 0.0
    model.lm_head.register_forward_hook(
        lambda module, inputs, logits: only_eos.expand_as(logits) if counter.calls >= 3 else logits
    )
    deltas, generation = await stream_all(lm, max_new_tokens=50)
    assert generation.finish_reason == "stop"
    assert generation.usage.output_tokens == 2
    assert EOS not in "".join(deltas)


async def test_cancel_after_the_first_delta_stops_within_one_token(lm, model, tokenizer):
    allow_only(model, printable_ids(tokenizer))  # every token is a delta
    counter = ForwardCounter(model, gate_from=2)  # decode steps wait until the test has cancelled
    generation = lm.stream(PROMPT, GenerationOptions(max_new_tokens=200))
    async for _ in generation:
        generation.cancel()
        tokens_at_cancel, calls_at_cancel = generation.usage.output_tokens, counter.calls
        counter.release.set()
        break
    await generation.aclose()  # returns once the worker thread has finished
    assert tokens_at_cancel == 1
    assert generation.usage.output_tokens <= tokens_at_cancel + 1
    assert counter.calls <= calls_at_cancel + 1
    assert generation.finish_reason == "cancelled"


async def test_greedy_is_deterministic(lm):
    first, _ = await stream_all(lm, max_new_tokens=12)
    second, _ = await stream_all(lm, max_new_tokens=12)
    assert "".join(first) == "".join(second)


async def test_seeded_sampling_is_reproducible(lm):
    options = dict(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first, _ = await stream_all(lm, **options)
    second, _ = await stream_all(lm, **options)
    assert "".join(first) == "".join(second)


def test_own_loop_matches_model_generate(lm, model):
    input_ids, ours = greedy_ids(lm, max_new_tokens=20)
    ids = torch.tensor([input_ids])  # (1, T)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=sorted(lm.eos_ids),
            pad_token_id=model.config.pad_token_id,
        )  # (1, T + N)
    theirs = out[0, ids.shape[1] :].tolist()
    if theirs and theirs[-1] in lm.eos_ids:
        theirs = theirs[:-1]  # generate keeps the EOS it stopped on; our loop does not yield it
    assert len(ours) >= 5
    assert ours == theirs


def test_held_back_until_a_multibyte_character_is_complete(lm, tokenizer):
    text = "Paris \u20ac and caf\u00e9"  # the euro sign is 3 bytes, never merged by the tiny BPE
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # precondition: a split character
    deltas = list(lm._text_deltas(iter(ids)))
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == text


def test_count_tokens_excludes_special_tokens(lm, tokenizer):
    text = "The capital of France is Paris."
    assert lm.count_tokens(text) == len(tokenizer.encode(text, add_special_tokens=False)) > 0
    assert lm.count_tokens("") == 0
    assert lm.count_tokens(f"{EOS}") == 1  # typed in the text, a special token counts as one


def test_message_overhead_is_the_templates_wrapping(lm, tokenizer):
    # ChatML wraps a message in "<|im_start|>{role}\n" ... "<|im_end|>\n".
    wrapped = tokenizer.encode("<|im_start|>user\nX<|im_end|>\n", add_special_tokens=False)
    assert lm.message_overhead_tokens() == len(wrapped) - 1
    assert lm.message_overhead_tokens() is lm.message_overhead_tokens()  # computed once


def test_embed_prompt_shape_and_values(lm, model):
    ids = torch.tensor([[1, 5, 9, 12]])  # (1, T)
    embeds = lm._embed_prompt(ids)  # (1, T, H)
    assert embeds.shape == (1, 4, 32)
    assert torch.equal(embeds[0], model.get_input_embeddings().weight[[1, 5, 9, 12]])


def test_capabilities_declare_embeddings_and_the_context(lm):
    assert lm.capabilities.embeddings is True
    assert lm.capabilities.images is False
    assert lm.capabilities.context_tokens == 256


async def test_a_prompt_longer_than_the_context_is_refused(lm):
    long_prompt = Prompt((PromptMessage("user", "Hello there " * 200),))
    generation = lm.stream(long_prompt, GenerationOptions(max_new_tokens=4))
    with pytest.raises(ContextLengthError):
        async for _ in generation:
            pass
    assert generation.finish_reason == "error"


def test_a_tokenizer_without_chat_template_is_refused(model):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ConfigurationError):
        TransformersLocalLM(model, tokenizer)


def test_token_loop_checks_cancel_after_every_token(lm):
    input_ids = lm._prompt_ids(PROMPT.messages)
    options = GenerationOptions(max_new_tokens=50)
    assert_cancel_stops_after_one_token(
        lambda cancel, usage: lm._generate_ids(input_ids, options, cancel, usage)
    )


async def test_a_tiny_top_p_keeps_only_the_most_likely_token(lm):
    greedy, _ = await stream_all(lm, max_new_tokens=12)
    nucleus, _ = await stream_all(lm, max_new_tokens=12, temperature=1.0, top_p=1e-6)
    assert "".join(nucleus) == "".join(greedy)


# -- KV cache reuse across turns ------------------------------------------------------------------


@pytest.fixture
def sharp_model(tokenizer):
    """Like ``model`` with larger weights: its logits depend on positions (the default init's are
    almost flat), so a prefill at wrong positions would change the greedy output."""
    return tiny_llama(tokenizer, initializer_range=0.2)


async def reply(lm, messages, cache_key="s", max_new_tokens=8):
    deltas, generation = await stream_all(
        lm, Prompt(tuple(messages), cache_key=cache_key), max_new_tokens=max_new_tokens
    )
    return "".join(deltas), generation


def turn_prompt(n, replies=("R",) * 4):
    """The conversation up to user turn ``n`` (0-based): earlier turns carry ``replies``."""
    messages = [SYSTEM]
    for i in range(n):
        messages += [PromptMessage("user", QUESTIONS[i]), PromptMessage("assistant", replies[i])]
    return [*messages, PromptMessage("user", QUESTIONS[n])]


async def test_reuse_gives_the_same_greedy_output_as_a_full_encode(sharp_model, tokenizer):
    reusing = TransformersLocalLM(sharp_model, tokenizer)
    fresh = TransformersLocalLM(sharp_model, tokenizer, kv_cache_sessions=0)
    messages = [SYSTEM]
    for turn, question in enumerate(QUESTIONS):
        messages.append(PromptMessage("user", question))
        prompt_tokens = len(reusing._prompt_ids(messages))
        text, generation = await reply(reusing, messages)
        expected, _ = await reply(fresh, messages)
        assert text == expected
        assert generation.usage.input_tokens == prompt_tokens
        if turn:
            assert reusing.prefill_tokens < prompt_tokens / 2
        messages.append(PromptMessage("assistant", text))
    assert (reusing.kv_cache.hits, reusing.kv_cache.misses) == (3, 1)
    assert reusing.kv_cache.reused_tokens > 0
    assert (fresh.kv_cache.hits, fresh.kv_cache.misses, len(fresh._kv_cache)) == (0, 0, 0)


async def test_the_second_turn_prefills_only_its_new_tokens(lm):
    first, _ = await reply(lm, turn_prompt(0))
    assert (lm.kv_cache.hits, lm.kv_cache.misses) == (0, 1)
    second = turn_prompt(1, replies=(first,))
    prompt_tokens = len(lm._prompt_ids(second))
    await reply(lm, second)
    assert lm.kv_cache.hits == 1
    assert lm.prefill_tokens < prompt_tokens
    assert lm.prefill_tokens + lm.kv_cache.reused_tokens == prompt_tokens


async def test_the_cache_holds_the_prompt_and_the_fed_reply_tokens(lm):
    messages = turn_prompt(0)
    input_ids = lm._prompt_ids(messages)
    _, reference = greedy_ids(lm, Prompt(tuple(messages)), max_new_tokens=6)
    await reply(lm, messages, max_new_tokens=6)
    entry = lm._kv_cache._entries["s"]
    assert entry.consistent()
    # The last token picked is never fed back (unless EOS ended the reply, when all of them are).
    assert entry.ids == input_ids + reference[: len(entry.ids) - len(input_ids)]
    assert len(input_ids) + len(reference) - 1 <= len(entry.ids) <= len(input_ids) + len(reference)


async def test_the_same_prompt_again_refeeds_its_last_token_only(sharp_model, tokenizer):
    lm = TransformersLocalLM(sharp_model, tokenizer)
    fresh = TransformersLocalLM(sharp_model, tokenizer, kv_cache_sessions=0)
    first, _ = await reply(lm, turn_prompt(0))
    again, _ = await reply(lm, turn_prompt(0))  # e.g. a regenerated reply
    assert lm.prefill_tokens == 1
    assert again == first == (await reply(fresh, turn_prompt(0)))[0]


async def test_a_different_cache_key_is_a_miss_that_starts_from_the_shared_prefix(
    sharp_model, tokenizer
):
    lm = TransformersLocalLM(sharp_model, tokenizer)
    fresh = TransformersLocalLM(sharp_model, tokenizer, kv_cache_sessions=0)
    first, _ = await reply(lm, turn_prompt(0), cache_key="a")
    second = turn_prompt(1, replies=(first,))
    text, _ = await reply(lm, second, cache_key="b")
    assert (lm.kv_cache.hits, lm.kv_cache.misses) == (0, 2)
    # Another conversation's cache holds the same start (system prompt, first exchange): copied.
    shared = lm._kv_cache.shared_tokens
    assert lm._kv_cache.shared_hits == 1 and shared >= len(lm._prompt_ids(turn_prompt(0))) - 1
    assert lm.prefill_tokens == len(lm._prompt_ids(second)) - shared
    assert text == (await reply(fresh, second))[0]
    assert "a" in lm._kv_cache and len(lm._kv_cache._entries["a"].ids) > shared  # a kept whole
    await reply(lm, second, cache_key=None)  # no conversation, nothing borrowed
    assert lm.prefill_tokens == len(lm._prompt_ids(second))


async def test_the_least_recently_used_session_is_evicted(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer, kv_cache_sessions=2)
    for key in ("a", "b", "a", "c"):  # "a" used again: "b" is the least recently used
        await reply(lm, turn_prompt(0), cache_key=key)
    assert set(lm._kv_cache._entries) == {"a", "c"}
    await reply(lm, turn_prompt(0), cache_key="b")
    assert (lm.kv_cache.hits, lm.kv_cache.misses) == (1, 4)
    assert set(lm._kv_cache._entries) == {"c", "b"}


async def test_the_token_budget_evicts_too(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer, kv_cache_max_tokens=60)
    await reply(lm, turn_prompt(0), cache_key="a")
    assert "a" in lm._kv_cache and lm._kv_cache.tokens <= 60
    await reply(lm, turn_prompt(0), cache_key="b")  # two entries would exceed 60 tokens
    assert set(lm._kv_cache._entries) == {"b"}
    await reply(lm, turn_prompt(3), cache_key="c")  # alone over the budget: not stored
    assert "c" not in lm._kv_cache
    assert lm._kv_cache.tokens <= 60


async def test_zero_sessions_disables_reuse(model, tokenizer):
    lm = TransformersLocalLM(model, tokenizer, kv_cache_sessions=0)
    await reply(lm, turn_prompt(0))
    await reply(lm, turn_prompt(0))
    assert (lm.kv_cache.hits, lm.kv_cache.misses, len(lm._kv_cache)) == (0, 0, 0)
    assert lm.prefill_tokens == len(lm._prompt_ids(turn_prompt(0)))


async def test_no_cache_key_never_stores(lm):
    await reply(lm, turn_prompt(0), cache_key=None)
    await reply(lm, turn_prompt(0), cache_key=None)
    assert (lm.kv_cache.hits, lm.kv_cache.misses, len(lm._kv_cache)) == (0, 0, 0)
    assert lm.prefill_tokens == len(lm._prompt_ids(turn_prompt(0)))


async def test_a_cancelled_turn_then_the_next_matches_a_fresh_model(sharp_model, tokenizer):
    lm = TransformersLocalLM(sharp_model, tokenizer)
    fresh = TransformersLocalLM(sharp_model, tokenizer, kv_cache_sessions=0)
    generation = lm.stream(Prompt(tuple(turn_prompt(0)), cache_key="s"), GenerationOptions(40))
    partial = ""
    async for delta in generation:
        partial += delta
        if len(partial) >= 3:
            generation.cancel()
            break
    await generation.aclose()
    assert generation.finish_reason == "cancelled"
    assert "s" in lm._kv_cache and lm._kv_cache._entries["s"].consistent()
    following = turn_prompt(1, replies=(partial,))  # the interrupted reply as it was stored
    text, _ = await reply(lm, following)
    assert lm.kv_cache.hits == 1
    assert text == (await reply(fresh, following))[0]


async def test_a_failed_generation_leaves_no_entry(sharp_model, tokenizer):
    lm = TransformersLocalLM(sharp_model, tokenizer)
    fresh = TransformersLocalLM(sharp_model, tokenizer, kv_cache_sessions=0)
    first, _ = await reply(lm, turn_prompt(0))
    calls = []

    def fail_on_the_second_call(module, args):  # layer 1, after layer 0 extended the cache
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")

    handle = sharp_model.model.layers[1].register_forward_pre_hook(fail_on_the_second_call)
    following = turn_prompt(1, replies=(first,))
    with pytest.raises(Exception, match="RuntimeError") as failed:
        await reply(lm, following)
    assert str(failed.value.__cause__) == "boom"  # the client hears the type; the log, the rest
    handle.remove()
    assert "s" not in lm._kv_cache  # uneven layers: dropped, not stored
    text, _ = await reply(lm, following)
    assert lm.prefill_tokens == len(lm._prompt_ids(following))  # a cold start
    assert text == (await reply(fresh, following))[0]


def test_build_reads_the_kv_cache_settings(monkeypatch):
    from adapters.llm import transformers_local
    from assistant.config import LLMSettings, Settings

    seen = {}
    monkeypatch.setattr(transformers_local, "_model_path", lambda settings: "/models/x")
    monkeypatch.setattr(
        TransformersLocalLM, "from_path", classmethod(lambda cls, path, **kw: seen.update(kw))
    )
    transformers_local.build(Settings(llm=LLMSettings()))
    defaults = LLMSettings()  # the one source of the defaults: 8 sessions, 16,384 tokens
    assert (seen["kv_cache_sessions"], seen["kv_cache_max_tokens"]) == (8, 16_384)
    assert (defaults.kv_cache_sessions, defaults.kv_cache_max_tokens) == (8, 16_384)
    transformers_local.build(Settings(llm=LLMSettings(kv_cache_sessions=2, kv_cache_max_tokens=100)))
    assert (seen["kv_cache_sessions"], seen["kv_cache_max_tokens"]) == (2, 100)


async def test_a_template_that_rerenders_earlier_turns_reuses_the_common_prefix(sharp_model):
    # This template marks the last message: once a turn follows, the previous prompt's end changes.
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHATML.replace(
        "message['content']", "message['content'] + (' Paris' if loop.last else '')"
    )
    reusing = TransformersLocalLM(sharp_model, tokenizer)
    fresh = TransformersLocalLM(sharp_model, tokenizer, kv_cache_sessions=0)
    messages = [SYSTEM]
    for question in QUESTIONS[:3]:
        messages.append(PromptMessage("user", question))
        if "s" in reusing._kv_cache:  # precondition: the cached ids are no prefix of the prompt
            cached, ids = reusing._kv_cache._entries["s"].ids, reusing._prompt_ids(messages)
            assert ids[: len(cached)] != cached
        text, _ = await reply(reusing, messages)
        assert text == (await reply(fresh, messages))[0]
        messages.append(PromptMessage("assistant", text))
    assert reusing.kv_cache.hits == 2
    assert 0 < reusing.prefill_tokens < len(reusing._prompt_ids(messages[:-1]))


def test_a_long_text_is_counted_on_a_tokenizer_of_its_own():
    """A long count (in a worker thread) does not hold the lock a short count on the loop takes."""
    from adapters.llm.transformers_local import BulkCounter

    tokenizer = make_tokenizer()
    bulk = BulkCounter(tokenizer)
    text = "Paris is the capital of France. " * 400  # 12,800 characters
    assert bulk.count(text) == len(tokenizer.encode(text, add_special_tokens=False))
    assert bulk._copy is not None and bulk._copy is not tokenizer
