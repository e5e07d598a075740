"""The hf_vision encoder on tiny random CLIP / SigLIP vision towers saved to tmp_path (nothing is
downloaded): reload, patch shapes, the feature layer, CLS handling, the fallback preprocessing, the
port's async ``encode``, ``build`` and an ``mlp2x_gelu`` projector on the features."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from adapters.vision.hf_vision import HFVisionEncoder, SimplePreprocessor, build  # noqa: E402
from adapters.vision.projector import build_projector  # noqa: E402
from assistant.config import Settings, VisionSettings  # noqa: E402
from assistant.errors import ConfigurationError, ModelError  # noqa: E402
from assistant.registry import build_vision_encoder  # noqa: E402

TOWER = dict(
    image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=32,
)  # fmt: skip
P, D = (32 // 8) ** 2, 16


def clip_processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def clip_model() -> CLIPVisionModel:
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(**TOWER)).eval()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, clip_model):
    folder = tmp_path_factory.mktemp("clip_vision")
    clip_model.save_pretrained(folder)
    clip_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(clip_dir) -> HFVisionEncoder:
    return HFVisionEncoder.from_path(str(clip_dir))


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)


def test_from_path_reloads_the_saved_tower(encoder, clip_model):
    assert isinstance(encoder.model, CLIPVisionModel)
    assert type(encoder.processor).__name__ == "CLIPImageProcessorPil"  # no torchvision
    for (name, a), b in zip(clip_model.state_dict().items(), encoder.model.state_dict().values()):
        assert torch.equal(a, b), name
    caps = encoder.capabilities
    assert (caps.feature_dim, caps.patches, caps.class_scores, caps.image_size) == (D, P, False, 32)


def test_patches_are_penultimate_layer_without_cls(encoder, clip_model, image):
    features = encoder._encode_impl(image)
    assert features.patches.shape == (P, D)  # 16, not 17: the CLS token is dropped
    assert features.patches.dtype == np.float32
    assert features.class_probs is None and features.class_names is None
    np.testing.assert_array_equal(features.patches, encoder._encode_impl(image).patches)

    pixels = clip_processor()(images=image, return_tensors="pt")["pixel_values"]  # (1, 3, 32, 32)
    with torch.no_grad():
        hidden = clip_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(features.patches, hidden[-2][0, 1:].numpy(), rtol=1e-5, atol=1e-6)


def test_feature_layer_matters(clip_dir, encoder, image):
    last = HFVisionEncoder.from_path(str(clip_dir), feature_layer=-1)._encode_impl(image).patches
    assert last.shape == (P, D)
    assert not np.allclose(last, encoder._encode_impl(image).patches)


def test_keeping_cls(clip_dir, image):
    keep = HFVisionEncoder.from_path(str(clip_dir), drop_cls=False)
    assert keep.capabilities.patches == P + 1
    assert keep._encode_impl(image).patches.shape == (P + 1, D)


def test_feature_layer_out_of_range(clip_model):
    with pytest.raises(ConfigurationError, match="feature_layer"):
        HFVisionEncoder(clip_model, clip_processor(), feature_layer=-4)  # 3 hidden states


def test_siglip_tower_has_no_cls(tmp_path, image):
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(**TOWER)).save_pretrained(tmp_path)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    siglip = HFVisionEncoder.from_path(str(tmp_path))  # drop_cls has nothing to drop
    assert isinstance(siglip.model, SiglipVisionModel)
    assert siglip.capabilities.patches == P
    features = siglip._encode_impl(image)
    assert features.patches.shape == (P, D) and features.patches.dtype == np.float32


def test_full_clip_checkpoint_gives_its_vision_tower(tmp_path, image):
    torch.manual_seed(0)
    text = dict(
        vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=TOWER, projection_dim=8)).eval()
    full.save_pretrained(tmp_path)
    clip_processor().save_pretrained(tmp_path)

    loaded = HFVisionEncoder.from_path(str(tmp_path))
    assert isinstance(loaded.model, CLIPVisionModel)  # the text tower is not loaded
    reference = full.vision_model.state_dict()
    assert loaded.model.state_dict().keys() == reference.keys()
    assert all(torch.equal(t, reference[k]) for k, t in loaded.model.state_dict().items())

    from_instance = HFVisionEncoder(full, clip_processor())  # a built CLIPModel: its .vision_model
    assert from_instance.model is full.vision_model
    np.testing.assert_allclose(
        loaded._encode_impl(image).patches, from_instance._encode_impl(image).patches, rtol=1e-5
    )


def test_fallback_preprocessing_without_a_processor_file(tmp_path, clip_model, encoder, image):
    clip_model.save_pretrained(tmp_path)  # no preprocessor_config.json
    bare = HFVisionEncoder.from_path(str(tmp_path))
    assert isinstance(bare.processor, SimplePreprocessor)
    pixels = bare.processor(images=Image.fromarray(image))["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    features = bare._encode_impl(image)
    assert features.patches.shape == (P, D)
    # close to the real CLIP processor (same mean/std and crop; resize details differ slightly)
    ref = encoder._encode_impl(image).patches
    assert np.corrcoef(features.patches.ravel(), ref.ravel())[0, 1] > 0.9


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot load"):
        HFVisionEncoder.from_path(str(tmp_path))  # an empty directory: never goes to the hub


async def test_async_encode_port(encoder, image):
    features = await encoder.encode(image)
    assert features.patches.shape == (P, D)
    with pytest.raises(ModelError):
        await encoder.encode(image.astype(np.float32))


def test_build_needs_a_model(tmp_path, clip_dir):
    with pytest.raises(ConfigurationError, match="vision.model"):
        build(Settings(data_dir=tmp_path, vision=VisionSettings(adapter="hf_vision")))
    vision = VisionSettings(adapter="hf_vision", model=str(clip_dir))
    settings = Settings(data_dir=tmp_path, vision=vision)
    built = build_vision_encoder(settings)
    assert isinstance(built, HFVisionEncoder) and built.capabilities.patches == P


def test_mlp2x_gelu_projector_on_the_features(encoder, image):
    in_dim = encoder.capabilities.feature_dim
    projector = build_projector("mlp2x_gelu", in_dim=in_dim, hidden_size=32)
    embeddings = projector.project(encoder._encode_impl(image))
    assert tuple(embeddings.shape) == (P, 32)
    assert projector.num_embeddings(encoder.capabilities.patches) == P
