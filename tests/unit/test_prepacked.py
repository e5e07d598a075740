"""Prepacked linear layers (``adapters.llm.prepacked``) on the tiny random Llama: the decoder's
layers are swapped once, the LM head is left alone (and fp16, and bf16 where the CPU lacks it), the
logits stay those of the plain layers (to rounding), greedy tokens too, and a pass with gradients
still backpropagates."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from adapters.llm import prepacked  # noqa: E402
from adapters.llm.precision import native_bf16  # noqa: E402
from adapters.llm.prepacked import PrepackedLinear, prepack_linears  # noqa: E402
from tests.support.tiny_models import make_tokenizer, tiny_llama  # noqa: E402

pytestmark = pytest.mark.skipif(not prepacked.supported(), reason="no oneDNN in this torch")


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_llama(tokenizer, initializer_range=0.2)


def linears(model):
    return {name: type(m) for name, m in model.named_modules() if "Linear" in type(m).__name__}


def test_the_decoder_layers_are_swapped_once_and_the_lm_head_is_left_alone(model):
    before = linears(model)
    swapped = prepack_linears(model)
    after = linears(model)
    # 2 layers x (q, k, v, o, gate, up, down); the head stays an nn.Linear.
    assert swapped == 14 and after["lm_head"] is torch.nn.Linear
    assert sorted(before) == sorted(after)
    assert all(kind is PrepackedLinear for name, kind in after.items() if name != "lm_head")
    assert prepack_linears(model) == 0 and linears(model) == after


def test_logits_and_greedy_tokens_stay_those_of_the_plain_layers(model):
    plain = copy.deepcopy(model)
    prepack_linears(model)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 64]])
    with torch.inference_mode():
        expected, got = plain(input_ids=ids).logits, model(input_ids=ids).logits
        assert torch.allclose(got, expected, atol=1e-4)
        assert torch.equal(got.argmax(-1), expected.argmax(-1))
        rows = model(input_ids=ids[:, :3]).logits  # fewer rows: the same values for those rows
        assert torch.allclose(rows, got[:, :3], atol=1e-5)


def test_bf16_is_prepacked_only_where_the_cpu_multiplies_it_natively_and_fp16_never(tokenizer):
    bf16 = tiny_llama(tokenizer).to(torch.bfloat16)
    assert prepack_linears(bf16) == (14 if native_bf16() else 0)
    fp16 = tiny_llama(tokenizer).to(torch.float16)
    assert prepack_linears(fp16) == 0
    assert all(kind is torch.nn.Linear for kind in linears(fp16).values())


def test_a_pass_with_gradients_backpropagates_to_its_inputs(model):
    plain = copy.deepcopy(model).requires_grad_(False)
    prepack_linears(model)
    model.requires_grad_(False)
    embeds = torch.randn(1, 5, model.config.hidden_size)
    grads = []
    for m in (plain, model):
        inputs = embeds.clone().requires_grad_(True)
        m(inputs_embeds=inputs).logits.sum().backward()
        grads.append(inputs.grad)
    assert torch.allclose(grads[1], grads[0], atol=1e-4)
