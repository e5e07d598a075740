"""Projectors on random features, a tiny random Llama and a small BPE tokenizer trained offline
(``tests.support.tiny_models``): shapes, the registry, save/load, and that ``class_embeddings``
returns the LM's own embeddings of the top classes' names."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from adapters.vision.projector import (  # noqa: E402
    PROJECTORS,
    ClassEmbeddingProjector,
    Projector,
    build_projector,
    load_projector,
    save_projector,
)
from assistant.errors import ConfigurationError, UnknownAdapterError  # noqa: E402
from assistant.ports import EmbeddingTable, ImageFeatures  # noqa: E402
from tests.support.tiny_models import make_tokenizer  # noqa: E402

D, H, P = 24, 32, 49
CLASS_NAMES = ("tabby", "tiger cat", "espresso", "coffee mug", "goldfish", "tench", "cup", "lynx")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def language_model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=H,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def features() -> ImageFeatures:
    rng = np.random.default_rng(0)
    probs = np.array([0.05, 0.4, 0.02, 0.3, 0.01, 0.1, 0.07, 0.05], dtype=np.float32)
    return ImageFeatures(
        patches=rng.standard_normal((P, D)).astype(np.float32),
        class_probs=probs,
        class_names=CLASS_NAMES,
    )


def embedding_table(language_model, tokenizer) -> EmbeddingTable:
    """What ``TransformersLocalLM.input_embeddings()`` gives, for a bare model and tokenizer."""
    weight = language_model.get_input_embeddings().weight.detach()  # (V, H)
    return EmbeddingTable(weight, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])


def make(name: str, language_model, tokenizer, **kw) -> Projector:
    if name == "class_embeddings":
        kw = {"table": embedding_table(language_model, tokenizer), "class_names": CLASS_NAMES,
              **kw}  # fmt: skip
    else:
        kw = {"in_dim": D, "hidden_size": H, **kw}
    return build_projector(name, **kw)


@pytest.mark.parametrize(
    ("name", "n"), [("linear", P), ("mlp2x_gelu", P), ("class_embeddings", 5)]
)
def test_output_shapes(name, n, features, language_model, tokenizer):
    torch.manual_seed(0)
    projector = make(name, language_model, tokenizer)
    out = projector.project(features)
    assert out.shape == (n, H) and out.dtype == torch.float32
    assert projector.num_embeddings(P) == n
    assert not out.requires_grad
    batched = projector(  # (B, P, D), (B, C) -> (B, N, H)
        torch.randn(3, P, D), torch.softmax(torch.randn(3, len(CLASS_NAMES)), dim=-1)
    )
    assert batched.shape == (3, n, H)


def test_registry_knows_the_three():
    assert set(PROJECTORS) == {"linear", "mlp2x_gelu", "class_embeddings"}


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownAdapterError) as info:
        build_projector("mlp3x_gelu", in_dim=D, hidden_size=H)
    assert info.value.code == "unknown_adapter"
    for known in ("class_embeddings", "linear", "mlp2x_gelu"):
        assert known in str(info.value)


def test_a_missing_argument_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        build_projector("linear", in_dim=D)


def test_linear_checks_the_feature_dim(language_model, tokenizer):
    with pytest.raises(ValueError, match="last dimension"):
        make("linear", language_model, tokenizer)(torch.randn(P, D + 1))


@pytest.mark.parametrize("name", ["linear", "mlp2x_gelu", "class_embeddings"])
def test_save_load_round_trip(name, features, language_model, tokenizer, tmp_path):
    torch.manual_seed(1)
    projector = make(name, language_model, tokenizer, **(
        {"top_k": 3, "scale_by_probability": True} if name == "class_embeddings" else {}
    ))  # fmt: skip
    save_projector(projector, tmp_path / "p")
    loaded = load_projector(tmp_path / "p")
    assert type(loaded) is type(projector)
    assert loaded.identity == projector.identity
    assert torch.equal(loaded.project(features), projector.project(features))


def test_identity_changes_with_weights_and_config(language_model, tokenizer):
    torch.manual_seed(2)
    a = make("linear", language_model, tokenizer)
    torch.manual_seed(3)
    b = make("linear", language_model, tokenizer)
    assert a.identity.startswith("linear:")
    assert a.identity != b.identity
    b.load_state_dict(a.state_dict())
    assert a.identity == b.identity
    top3 = make("class_embeddings", language_model, tokenizer, top_k=3)
    top4 = make("class_embeddings", language_model, tokenizer, top_k=4)
    assert top3.identity != top4.identity


def test_a_tampered_save_is_refused(language_model, tokenizer, tmp_path):
    save_projector(make("linear", language_model, tokenizer), tmp_path)
    state = tmp_path / "projector.json"
    state.write_text(state.read_text().replace('"hidden_size": 32', '"hidden_size": 33'))
    with pytest.raises(ConfigurationError):  # the weights no longer fit
        load_projector(tmp_path)
    save_projector(make("class_embeddings", language_model, tokenizer, top_k=5), tmp_path)
    state.write_text(state.read_text().replace('"top_k": 5', '"top_k": 4'))
    with pytest.raises(ConfigurationError, match="identity"):  # loads, but is not what was saved
        load_projector(tmp_path)


def expected_embedding(language_model, tokenizer, name: str) -> torch.Tensor:
    ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    assert ids
    weight = language_model.get_input_embeddings().weight.detach()  # (V, H)
    return weight[ids].mean(dim=0)  # (H,)


def test_class_embeddings_are_the_lm_embeddings_of_the_top_class_names(
    features, language_model, tokenizer
):
    projector = make("class_embeddings", language_model, tokenizer, top_k=3)
    assert isinstance(projector, ClassEmbeddingProjector)
    out = projector.project(features)  # (3, H)
    top = ["tiger cat", "coffee mug", "tench"]  # probabilities 0.4, 0.3, 0.1
    expected = torch.stack([expected_embedding(language_model, tokenizer, n) for n in top])
    torch.testing.assert_close(out, expected)


def test_class_embeddings_scaled_by_probability(features, language_model, tokenizer):
    plain = make("class_embeddings", language_model, tokenizer, top_k=2)
    scaled = make("class_embeddings", language_model, tokenizer, top_k=2, scale_by_probability=True)
    torch.testing.assert_close(
        scaled.project(features), plain.project(features) * torch.tensor([[0.4], [0.3]])
    )


def test_class_embeddings_need_the_encoder_it_was_built_for(features, language_model, tokenizer):
    projector = make("class_embeddings", language_model, tokenizer)
    other = ImageFeatures(
        patches=features.patches,
        class_probs=features.class_probs,
        class_names=tuple(reversed(CLASS_NAMES)),
    )
    with pytest.raises(ConfigurationError):
        projector.project(other)
    with pytest.raises(ValueError):
        projector(torch.randn(P, D), None)
