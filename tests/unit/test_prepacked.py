"""Prepacked linear layers (``adapters.llm.prepacked``) on the tiny random Llama: the decoder's
layers and its LM head are prepacked in place once (hooks on them still run; fp16, and bf16 where
the CPU lacks it, are left alone), the logits stay those of the plain layers (to rounding), greedy
tokens too, and a pass with gradients still backpropagates."""

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
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def test_every_linear_layer_is_prepacked_in_place_once(model):
    before = linears(model)
    assert prepack_linears(model) == 15  # 2 layers x (q, k, v, o, gate, up, down), the LM head
    after = linears(model)
    assert after == before  # the same modules, in the same places
    assert all(type(m) is PrepackedLinear for m in after.values())
    assert prepack_linears(model) == 0 and linears(model) == before


def test_hooks_on_a_layer_still_run_once_it_is_prepacked(model):
    forced = 7

    def force(module, inputs, logits):  # (B, T, V): token ``forced`` everywhere
        out = torch.full_like(logits, float("-inf"))
        out[..., forced] = 0.0
        return out

    model.lm_head.register_forward_hook(force)
    prepack_linears(model)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[5, 17, 42]])).logits
    assert logits.argmax(-1).tolist() == [[forced] * 3]


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
    assert prepack_linears(bf16) == (15 if native_bf16() else 0)
    fp16 = tiny_llama(tokenizer).to(torch.float16)
    assert prepack_linears(fp16) == 0
    assert all(type(m) is torch.nn.Linear for m in linears(fp16).values())


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


@pytest.mark.parametrize("prepack", [True, False])
def test_the_adapter_prepacks_when_it_is_built_unless_told_not_to(tokenizer, prepack):
    from adapters.llm.transformers_local import TransformersLocalLM

    lm = TransformersLocalLM(tiny_llama(tokenizer), tokenizer, prepack=prepack)
    kinds = {type(m) for m in linears(lm.model).values()}
    assert kinds == ({PrepackedLinear} if prepack else {torch.nn.Linear})


def test_a_one_row_input_takes_the_plain_product_where_the_model_chose_it(model):
    from adapters.llm.prepacked import choose_one_row_product

    plain = copy.deepcopy(model)
    prepack_linears(model)
    chosen = choose_one_row_product(model)
    layers = [m for m in model.modules() if isinstance(m, PrepackedLinear)]
    assert {layer.one_row_plain for layer in layers} == {chosen}  # one choice for the model
    layer, reference = layers[0], dict(plain.named_modules())[
        next(name for name, m in model.named_modules() if m is layers[0])
    ]
    one, two = torch.randn(1, 1, layer.in_features), torch.randn(1, 2, layer.in_features)
    with torch.inference_mode():
        layer.one_row_plain = True
        assert torch.equal(layer(one), reference(one))  # MKL's product itself, bit for bit
        assert torch.allclose(layer(two), reference(two), atol=1e-4)  # two rows: prepacked
        layer.one_row_plain = False
        assert torch.allclose(layer(one), reference(one), atol=1e-4)


# -- int8 weights for one-row products (llm.precision=int8-decode) ---------------------------------

int8_supported = pytest.mark.skipif(
    not prepacked.int8_rows.supported(), reason="no int8-weight product in this torch"
)


@int8_supported
@pytest.mark.parametrize("packed_first", [True, False])
def test_int8_weights_serve_one_row_inputs_and_two_rows_keep_fp32(model, packed_first):
    from adapters.llm.int8_rows import quantise
    from adapters.llm.prepacked import quantise_one_row_products

    plain = copy.deepcopy(model)
    if packed_first:
        prepack_linears(model)
    assert quantise_one_row_products(model) == 15
    assert all(type(m) is PrepackedLinear for m in linears(model).values())
    name, layer = next((n, m) for n, m in model.named_modules() if isinstance(m, PrepackedLinear))
    reference = dict(plain.named_modules())[name]
    ints, scales = quantise(reference.weight)
    assert ints.dtype == torch.int8 and int(ints.abs().max()) == 127
    dequantised = ints.float() * scales.float()[:, None]
    assert (dequantised - reference.weight).abs().max() <= scales.float().max()  # half a step+
    one, two = torch.randn(1, 1, layer.in_features), torch.randn(1, 2, layer.in_features)
    with torch.inference_mode():
        got, exact = layer(one), reference(one)
        assert not torch.equal(got, exact)  # the int8 product, not fp32's
        assert torch.allclose(got, exact, atol=0.05 * float(exact.abs().max()))
        assert torch.allclose(layer(two), reference(two), atol=1e-4)  # two rows: fp32


@int8_supported
def test_the_adapter_in_int8_decode_quantises_and_greedy_tokens_mostly_agree(tokenizer):
    from adapters.llm.precision import precision_of
    from adapters.llm.transformers_local import TransformersLocalLM
    from bench.decode import forced_agreement, greedy_ids

    reference = tiny_llama(tokenizer, initializer_range=0.2)
    lm = TransformersLocalLM(copy.deepcopy(reference), tokenizer, int8_decode=True)
    assert precision_of(lm.model) == "int8-decode" and precision_of(reference) == "fp32"
    assert all(m.row_int8 is not None for m in linears(lm.model).values())
    ids = [5, 17, 42, 99, 7, 3]
    expected, _ = greedy_ids(reference, ids, 12)
    assert forced_agreement(reference, ids, expected, one_row=True) == len(expected)
    assert forced_agreement(lm.model, ids, expected, one_row=True) >= len(expected) // 2


@int8_supported
def test_siblings_fed_the_same_input_are_multiplied_together_and_alone_otherwise(model):
    from adapters.llm import int8_rows
    from adapters.llm.prepacked import quantise_one_row_products

    quantise_one_row_products(model)
    attention = model.model.layers[0].self_attn
    q, k, v = attention.q_proj, attention.k_proj, attention.v_proj
    group = q.row_group
    assert group is not None and group.layers == [q, k, v] and k.row_group is group
    assert model.model.layers[0].mlp.gate_proj.row_group is model.model.layers[0].mlp.up_proj.row_group
    assert model.model.layers[0].mlp.down_proj.row_group is None  # fed another input
    x, other = torch.randn(1, 1, q.in_features), torch.randn(1, 1, q.in_features)
    alone = {
        name: int8_rows.row_product(x, *layer.row_int8, layer.bias)
        for name, layer in (("q", q), ("k", k), ("v", v))
    }
    with torch.inference_mode():
        together = {"q": q(x), "k": k(x), "v": v(x)}  # the model's order: one product
        assert group._input is None and not group._waiting  # nothing held after the last
        for name in alone:
            assert torch.allclose(together[name], alone[name], atol=1e-5)
        q(x)
        assert torch.allclose(k(other), int8_rows.row_product(other, *k.row_int8, None), atol=1e-5)
        assert torch.allclose(v(x), alone["v"], atol=1e-5)  # still waiting for that input
