"""What keeps a late turn of a conversation as fast as the first one with the local transformers
model (``adapters.llm.kv_cache``): cache layers that grow in place, masked GQA attention without
repeated key/value heads, tokenization a piece at a time, and every forward pass on one thread.
Each must leave the output exactly what stock transformers computes from the whole prompt."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenizers import AddedToken
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from adapters.llm import kv_cache
from adapters.llm.kv_cache import (
    GrowingLayer,
    SegmentIds,
    croppable,
    new_cache,
    sdpa_gqa_attention,
    use_gqa_attention,
)
from adapters.llm.transformers_local import TransformersLocalLM
from assistant.ports import GenerationOptions, Prompt, PromptMessage
from tests.support.tiny_models import (
    QUESTIONS,
    SYSTEM,
    make_tokenizer,
    tiny_llama,
)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def kv(length, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, length, 4, generator=generator)  # (B, kv_heads, positions, D)


# -- GrowingLayer ---------------------------------------------------------------------------------


def test_a_growing_layer_holds_what_a_dynamic_layer_holds(monkeypatch):
    monkeypatch.setattr(kv_cache, "MIN_SPARE_POSITIONS", 3)  # regrow often
    growing, dynamic = GrowingLayer(), DynamicLayer()
    steps = [("update", 5), ("update", 1), ("crop", -2), ("update", 4), ("update", 9), ("crop", -7)]
    for seed, (op, n) in enumerate(steps + [("update", 2)]):
        for layer in (growing, dynamic):
            if op == "update":
                keys, _ = layer.update(kv(n, seed), kv(n, seed + 100))
            else:
                layer.crop(n)
        assert torch.equal(growing.keys, dynamic.keys)
        assert torch.equal(growing.values, dynamic.values)
        assert growing.get_seq_length() == dynamic.get_seq_length()
    assert torch.equal(keys, dynamic.keys)


def test_keys_replaced_from_outside_are_taken_over():
    growing, dynamic = GrowingLayer(), DynamicLayer()
    for layer in (growing, dynamic):
        layer.update(kv(3, 0), kv(3, 1))
        layer.update(kv(1, 2), kv(1, 3))  # growing: now with spare room
        layer.batch_repeat_interleave(2)  # keys and values reassigned: batch 1 -> 2
        layer.update(kv(2, 4).repeat(2, 1, 1, 1), kv(2, 5).repeat(2, 1, 1, 1))
    assert growing.keys.shape == (2, 2, 6, 4)
    assert torch.equal(growing.keys, dynamic.keys) and torch.equal(growing.values, dynamic.values)


def test_a_growing_layer_copies_in_new_positions_only(monkeypatch):
    monkeypatch.setattr(kv_cache, "MIN_SPARE_POSITIONS", 16)
    layer = GrowingLayer()
    layer.update(kv(6, 0), kv(6, 1))
    assert layer._key_buffer.shape[-2] == 6  # the first pass allocates exactly what it holds
    layer.update(kv(1, 2), kv(1, 3))  # outgrown: 7 positions + max(7 // 4, 16) spare
    buffer = layer._key_buffer
    assert buffer.shape[-2] == 7 + 16
    layer.crop(-3)
    layer.update(kv(10, 4), kv(10, 5))
    assert layer._key_buffer is buffer  # fitted: written in place
    assert layer.keys.data_ptr() == buffer.data_ptr() and layer.get_seq_length() == 14


def test_new_cache_has_growing_layers_and_stays_croppable(tokenizer):
    config = tiny_llama(tokenizer).config
    cache = new_cache(config)
    assert [type(layer) for layer in cache.layers] == [GrowingLayer, GrowingLayer]
    assert isinstance(cache, DynamicCache) and croppable(cache)


# -- masked GQA attention -------------------------------------------------------------------------


class Module:
    num_key_value_groups = 3
    is_causal = True


def attention_inputs(q_len=5, cached=7):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 6, q_len, 8, generator=generator)  # 6 query heads
    key = torch.randn(1, 2, cached + q_len, 8, generator=generator)  # 2 key/value heads
    value = torch.randn(1, 2, cached + q_len, 8, generator=generator)
    mask = torch.ones(q_len, cached + q_len, dtype=torch.bool).tril(cached)[None, None]
    return query, key, value, mask


def test_masked_gqa_attention_is_bitwise_what_transformers_computes(monkeypatch):
    query, key, value, mask = attention_inputs()
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((args[1].shape[1], kwargs.get("enable_gqa", False)))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.inference_mode():
        ours, _ = sdpa_gqa_attention(Module(), query, key, value, mask, scaling=0.3, dropout=0.0)
        theirs, _ = sdpa_attention_forward(Module(), query, key, value, mask, scaling=0.3)
    assert seen == [(2, True), (6, False)]  # theirs repeated the key/value heads 2 -> 6
    assert ours.shape == (1, 5, 6, 8) and torch.equal(ours, theirs)


def test_other_attention_calls_go_to_transformers_unchanged(monkeypatch):
    query, key, value, mask = attention_inputs()
    calls = []
    monkeypatch.setattr(
        "transformers.integrations.sdpa_attention.sdpa_attention_forward",
        lambda *args, **kwargs: calls.append(kwargs) or ("theirs", None),
    )
    with torch.inference_mode():
        sdpa_gqa_attention(Module(), query, key, value, None)  # no mask: already GQA upstream
        sdpa_gqa_attention(Module(), query[:, :, :1], key, value, mask[:, :, :1])  # one query
        sdpa_gqa_attention(Module(), query, key, value, mask, position_bias=torch.zeros(1))
    sdpa_gqa_attention(Module(), query, key, value, mask)  # with autograd (training)
    assert len(calls) == 4


def test_use_gqa_attention_switches_sdpa_models_only(tokenizer):
    model = tiny_llama(tokenizer)
    assert model.config._attn_implementation == "sdpa"  # precondition: transformers' default
    assert use_gqa_attention(model) and model.config._attn_implementation == "sdpa_gqa"
    eager = tiny_llama(tokenizer, attn_implementation="eager")
    assert not use_gqa_attention(eager) and eager.config._attn_implementation == "eager"


# -- the whole adapter against stock transformers -------------------------------------------------


async def test_every_turn_matches_stock_transformers_encoding_the_whole_prompt(
    tokenizer, monkeypatch
):
    """Greedy ids, turn after turn, of the adapter reusing its cache (grown in place, regrown often
    here) against ``generate`` on an untouched copy of the model (sdpa, ``DynamicCache``)."""
    monkeypatch.setattr(kv_cache, "MIN_SPARE_POSITIONS", 2)
    stock = tiny_llama(tokenizer, initializer_range=0.2)
    lm = TransformersLocalLM(tiny_llama(tokenizer, initializer_range=0.2), tokenizer)
    assert stock.config._attn_implementation == "sdpa"
    messages = [SYSTEM]
    for question in QUESTIONS:
        messages.append(PromptMessage("user", question))
        input_ids = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.text} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = torch.tensor([tokenizer(input_ids, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            out = stock.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                eos_token_id=sorted(lm.eos_ids), pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        expected = tokenizer.decode(
            [i for i in out[0, ids.shape[1] :].tolist() if i not in lm.eos_ids],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        generation = lm.stream(Prompt(tuple(messages), cache_key="s"), GenerationOptions(6))
        text = "".join([delta async for delta in generation])
        assert generation.usage.input_tokens == ids.shape[1]
        assert text == expected
        messages.append(PromptMessage("assistant", text))
    assert lm.kv_cache.hits == len(QUESTIONS) - 1
    assert lm.prefill_tokens < len(lm._prompt_ids(messages[:-1])) / 2


async def test_every_forward_pass_runs_on_one_thread(tokenizer):
    model = tiny_llama(tokenizer)
    threads = set()
    handle = model.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    first, second = TransformersLocalLM(model, tokenizer), TransformersLocalLM(model, tokenizer)
    for lm in (first, second, first):
        generation = lm.stream(Prompt((SYSTEM, PromptMessage("user", QUESTIONS[0]))))
        assert [delta async for delta in generation]
    handle.remove()
    assert len(threads) == 1 and threading.get_ident() not in threads


# -- SegmentIds -----------------------------------------------------------------------------------


def whole(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_segment_ids_equal_the_whole_texts_ids(tokenizer):
    encoded = []

    def encode(texts):
        encoded.extend(texts)
        return [whole(tokenizer, text) for text in texts]

    segments = SegmentIds(tokenizer, encode)
    assert segments.usable
    chat = [{"role": "system", "content": " Be brief. "}]
    for question in QUESTIONS:
        chat.append({"role": "user", "content": question})
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        encoded.clear()
        assert segments(text) == whole(tokenizer, text)
        if len(chat) > 4:  # after the first two turns, the one new piece only
            assert encoded == ["user\n" + question]
        chat.append({"role": "assistant", "content": "Paris  is <|im_end|>there"})
    for text in ("", "<|im_end|>", "a<|im_start|><|im_end|>b ", "\n\n <|im_start|>x\n"):
        assert segments(text) == whole(tokenizer, text)


def test_segment_ids_forget_the_least_recently_used_pieces(tokenizer):
    segments = SegmentIds(tokenizer, lambda texts: [whole(tokenizer, t) for t in texts], 2)
    for text in ("a<|im_end|>b", "a<|im_end|>c", "d"):
        assert segments(text) == whole(tokenizer, text)
    assert list(segments._pieces) == ["c", "d"]


def test_segment_ids_are_not_used_when_the_pieces_would_not_add_up(tokenizer):
    def spaced(texts):  # pieces that would not add up: each gets a leading space
        return [whole(tokenizer, " " + text) for text in texts]

    assert not SegmentIds(tokenizer, spaced).usable
    stripping = make_tokenizer()
    stripping.add_tokens([AddedToken("<x>", lstrip=True)])  # takes in the spaces before it
    assert not SegmentIds(stripping, lambda texts: [whole(stripping, t) for t in texts]).usable
