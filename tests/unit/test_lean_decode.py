"""The lean decode step of int8-decode (``adapters.llm.lean_decode``) on the tiny random Llama:
its logits are the model's own int8-decode pass's (to float rounding), it extends the same cache
(a later prompt through the model reads what it wrote), the adapter decodes a lone sequence
through it and only then, steps it cannot vouch for go through the model, and models it does not
cover get none."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from adapters.llm import int8_rows  # noqa: E402
from adapters.llm.kv_cache import CachedPrefix, new_cache  # noqa: E402
from adapters.llm.lean_decode import LeanDecoder  # noqa: E402
from adapters.llm.packed import Part  # noqa: E402
from adapters.llm.prepacked import quantise_one_row_products  # noqa: E402
from tests.support.tiny_models import make_tokenizer, tiny_llama  # noqa: E402

pytestmark = pytest.mark.skipif(not int8_rows.supported(), reason="no int8 product in this torch")

PROMPT = [5, 17, 42, 99, 7, 3]


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def model(tokenizer):
    model = tiny_llama(tokenizer, initializer_range=0.2)
    assert quantise_one_row_products(model) > 0
    return model


def model_step(model, cache, ids):
    out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    return out.logits[:, -1].float()  # (1, V)


def test_its_logits_are_the_models_own_pass_and_it_extends_the_same_cache(model):
    lean = LeanDecoder.build(model)
    assert lean is not None
    with torch.inference_mode():
        ours, theirs = new_cache(model.config), new_cache(model.config)
        token = int(model_step(model, ours, PROMPT).argmax())
        model_step(model, theirs, PROMPT)
        for step in range(10):
            position = len(PROMPT) + step
            got = lean.logits(ours, position, token)
            expected = model_step(model, theirs, [token])
            assert got.shape == expected.shape == (1, model.config.vocab_size)
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), step
            token = int(expected.argmax())
        assert ours.get_seq_length() == theirs.get_seq_length() == len(PROMPT) + 10
        for mine, reference in zip(ours.layers, theirs.layers):
            assert torch.allclose(mine.keys, reference.keys, atol=1e-5)
            assert torch.allclose(mine.values, reference.values, atol=1e-5)
        # The next turn's prompt, through the model, on the cache the lean steps extended.
        more = [11, 12, 13]
        assert torch.allclose(
            model_step(model, ours, more), model_step(model, theirs, more), atol=1e-5
        )


def test_the_adapter_decodes_a_lone_sequence_through_it(tokenizer, model):
    from adapters.llm.transformers_local import TransformersLocalLM
    from assistant.ports import CancelToken, GenerationOptions, Usage
    from bench.decode import greedy_ids

    reference = copy.deepcopy(model)  # the model's own passes, the same int8 weights
    raw = tiny_llama(tokenizer, initializer_range=0.2)
    lm = TransformersLocalLM(raw, tokenizer, int8_decode=True)
    assert lm.lean is not None
    calls = []
    lean_logits = lm.lean.logits
    lm.lean.logits = lambda *args: calls.append(args[1:]) or lean_logits(*args)  # type: ignore[method-assign]
    options = GenerationOptions(max_new_tokens=12, temperature=0.0)
    lm.eos_ids = frozenset()  # all 12 tokens: the random model may pick an EOS early
    with torch.inference_mode():
        got = list(lm._generate_ids(PROMPT, options, CancelToken(), Usage()))
    expected, _ = greedy_ids(reference, PROMPT, 12)
    assert got == expected and len(got) == 12
    assert len(calls) == len(got) - 1  # every token after the prompt's first, and no prompt
    assert [position for position, _ in calls] == list(range(len(PROMPT), len(PROMPT) + len(calls)))
    assert TransformersLocalLM(tiny_llama(tokenizer), tokenizer).lean is None  # fp32: never


def test_models_it_does_not_cover_get_none(tokenizer, model):
    from transformers import MistralConfig, MistralForCausalLM

    assert LeanDecoder.build(tiny_llama(tokenizer)) is None  # no int8 weights
    biased = tiny_llama(tokenizer, mlp_bias=True)
    quantise_one_row_products(biased)
    assert LeanDecoder.build(biased) is None
    mistral = MistralForCausalLM(
        MistralConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2,
        )
    ).eval()  # fmt: skip
    quantise_one_row_products(mistral)
    assert LeanDecoder.build(mistral) is None
    model.model.layers[1].mlp.gate_proj.row_group = None  # a layer without its group
    assert LeanDecoder.build(model) is None


def test_steps_it_cannot_vouch_for_are_left_to_the_model(model):
    lean = LeanDecoder.build(model)
    assert lean is not None
    with torch.inference_mode():
        cache = new_cache(model.config)
        model_step(model, cache, PROMPT)
        prefix = CachedPrefix(cache, list(PROMPT))
        other = CachedPrefix(new_cache(model.config))
        refused = [
            [Part(prefix, [3]), Part(other, [4])],  # two sequences
            [Part(prefix, [3, 4])],  # two tokens
            [Part(prefix, [-1], {-1: torch.zeros(model.config.hidden_size)})],  # an image row
            [Part(CachedPrefix(cache, [*PROMPT, 1]), [3])],  # ids the cache does not hold
            [Part(CachedPrefix(new_cache(model.config), list(PROMPT)), [3])],  # an empty cache
        ]
        for parts in refused:
            assert lean.step(parts) is None
        handle = model.lm_head.register_forward_hook(lambda *args: None)
        assert lean.step([Part(prefix, [3])]) is None  # a hook the lean step would skip
        handle.remove()
        assert prefix.ids == PROMPT and cache.get_seq_length() == len(PROMPT)  # nothing fed
        logits = lean.step([Part(prefix, [3])])
        assert logits is not None and prefix.ids == [*PROMPT, 3]
    with torch.enable_grad():  # a pass with gradients takes the model's products
        assert lean.step([Part(prefix, [4])]) is None


def test_configs_it_does_not_cover_get_none(tokenizer):
    for extra in ({"attention_bias": True}, {"hidden_act": "gelu"}):
        model = tiny_llama(tokenizer, **extra)
        quantise_one_row_products(model)
        assert LeanDecoder.build(model) is None, extra
