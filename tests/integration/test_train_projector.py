"""``assistant train-projector`` on the real models: EfficientNet-Lite0 features, SmolLM2-135M
frozen, an ``mlp2x_gelu`` projector trained for a few dozen steps on 6 generated images (coloured
squares and circles); the loss falls and the saved directory is what ``serve`` loads when
``ASSISTANT_VISION__PROJECTOR`` names it. About 20 s on 2 cores."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image, ImageDraw  # noqa: E402

from adapters.llm import smollm2  # noqa: E402
from assistant.config import Settings, VisionSettings  # noqa: E402

pytestmark = pytest.mark.integration

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}
STEPS = 24


def make_dataset(folder):
    folder.mkdir()
    lines = []
    for colour, rgb in COLOURS.items():
        for shape in ("square", "circle"):
            image = Image.new("RGB", (224, 224), "white")
            draw = ImageDraw.Draw(image)
            (draw.rectangle if shape == "square" else draw.ellipse)((40, 40, 184, 184), fill=rgb)
            image.save(folder / f"{colour}_{shape}.png")
            lines.append({"image": f"{colour}_{shape}.png", "caption": f"a {colour} {shape}"})
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return folder, folder / "captions.jsonl"


@pytest.fixture(scope="module")
def prepared():
    settings = Settings()
    if settings.llm.model or settings.llm.adapter != "transformers_local":
        pytest.skip("a language model other than the default SmolLM2 is configured")
    if not smollm2.is_prepared(settings.models_dir):
        try:
            smollm2.gguf_path()
        except Exception as exc:  # noqa: BLE001 - the wheel is an optional install
            pytest.skip(str(exc))
    return smollm2.prepare(settings.models_dir, progress=False)


def test_the_cli_trains_a_projector_that_serve_loads(prepared, tmp_path, capsys):
    from adapters.vision import projector as projectors
    from adapters.vision.efficientnet import EfficientNetLite0Encoder
    from assistant.cli import main

    images, captions = make_dataset(tmp_path / "data")
    out = tmp_path / "projector"
    argv = ["train-projector", "--images", str(images), "--captions", str(captions),
            "--out", str(out), "--batch-size", "3", "--max-steps", str(STEPS)]  # fmt: skip
    assert main(argv) == 0
    assert f"ASSISTANT_VISION__PROJECTOR={out}" in capsys.readouterr().out

    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == STEPS and summary["images"] == 6
    assert summary["projector"] == "mlp2x_gelu"
    assert summary["final_loss"] < summary["initial_loss"], summary
    assert np.mean(summary["losses"][-4:]) < np.mean(summary["losses"][:4]), summary["losses"]

    # What `serve` does with ASSISTANT_VISION__PROJECTOR=<out>: the directory, not class_embeddings.
    settings = Settings(vision=VisionSettings(projector=str(out)))
    encoder = EfficientNetLite0Encoder.from_path()
    def no_table():  # a saved projector needs no language model
        raise AssertionError("the embedding table was asked for")

    adapter = projectors.build(settings, encoder=encoder.capabilities, table=no_table)
    assert adapter.identity == summary["identity"]
    assert adapter.identity.startswith("mlp2x_gelu:")
    pixels = np.asarray(Image.open(images / "red_square.png").convert("RGB"))
    features = encoder._encode_impl(pixels)
    vectors = adapter.project(features)
    assert vectors.shape == (49, 576) and vectors.dtype == np.float32  # SmolLM2's hidden size
    reloaded = projectors.load_projector(out).project(features).numpy()
    np.testing.assert_array_equal(vectors, reloaded)
