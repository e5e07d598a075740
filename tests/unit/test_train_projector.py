"""Projector training (LLaVA stage 1) on a tiny random Llama, the small BPE tokenizer of
``tests.support.tiny_models`` and an in-process fake encoder (mean colours of a 2 x 2 grid, spread over
a fixed random matrix), on 8 generated images: the loss masks what it should, falls, and the saved
projector reloads with identical outputs; the CLI command runs the same path."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tqdm")

from PIL import Image, ImageDraw  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from adapters.vision import train  # noqa: E402
from adapters.vision.projector import load_projector  # noqa: E402
from assistant.errors import ConfigurationError  # noqa: E402
from assistant.ports import ImageFeatures, VisionEncoder, VisionEncoderCapabilities  # noqa: E402
from tests.support.tiny_models import make_tokenizer  # noqa: E402

D, H = 16, 32
COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
}  # fmt: skip
SHAPES = ("square", "circle")


class ColourEncoder(VisionEncoder):
    """Patches (4, D): each 2 x 2 cell's mean colour through a fixed random (3, D) matrix."""

    name = "colour_fake"

    def __init__(self) -> None:
        self.capabilities = VisionEncoderCapabilities(feature_dim=D, patches=4)
        self.weight = np.random.default_rng(0).standard_normal((3, D)).astype(np.float32)
        self.calls = 0

    def _encode_impl(self, image: np.ndarray) -> ImageFeatures:
        self.calls += 1
        h, w = image.shape[0] // 2, image.shape[1] // 2
        cells = [image[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in (0, 1) for c in (0, 1)]
        means = np.stack([cell.reshape(-1, 3).mean(0) / 255.0 for cell in cells])  # (4, 3)
        return ImageFeatures(patches=(means @ self.weight).astype(np.float32))  # (4, D)


def make_dataset(folder):
    """8 images (4 colours x 2 shapes on white) and their captions, as the CLI reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            image = Image.new("RGB", (64, 64), "white")
            draw = ImageDraw.Draw(image)
            box = (12, 12, 52, 52)
            (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=rgb)
            image.save(folder / f"{colour}_{shape}.png")
            lines.append({"image": f"{colour}_{shape}.png", "caption": f"a {colour} {shape}"})
    captions = folder / "captions.jsonl"
    captions.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder, captions


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def tiny_lm(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=H, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        initializer_range=0.1,  # the default 0.02 makes a random LM barely react to its inputs
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data")


def test_pairs_are_read_and_checked(dataset, tmp_path):
    images, captions = dataset
    pairs = train.load_pairs(images, captions)
    assert len(pairs) == 8 and pairs[0].caption == "a red square"
    assert pairs[0].image == images / "red_square.png"
    bad = tmp_path / "bad.jsonl"
    for text, match in [
        ('{"image": "nope.png", "caption": "x"}', "no image file"),
        ('{"image": "red_square.png"}', "expected"),
        ("not json", "not a JSON"),
        ("\n\n", "no image-caption pairs"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigurationError, match=match):
            train.load_pairs(images, bad)


def test_only_caption_tokens_are_labelled_and_the_loss_is_the_lms(dataset, tokenizer):
    model, encoder = tiny_lm(tokenizer), ColourEncoder()
    pairs = train.load_pairs(*dataset)[:3]
    index = {p.image: i for i, p in enumerate(pairs)}
    examples = train.tokenize_pairs(tokenizer, pairs, index, prompt="Describe:")
    prompt_len = len(tokenizer("Describe:", add_special_tokens=False)["input_ids"])
    features = train.encode_images(encoder, [p.image for p in pairs], progress=False)  # (3, 4, D)
    batch = train.collate(features, examples, tokenizer.pad_token_id)
    for row, example in enumerate(examples):
        labels = batch.labels[row]
        assert (labels[:prompt_len] == train.IGNORE).all()
        caption = tokenizer(pairs[row].caption, add_special_tokens=False)["input_ids"]
        n = len(example.ids)
        assert labels[prompt_len:n].tolist() == [*caption, tokenizer.eos_token_id]
        assert (labels[n:] == train.IGNORE).all() and batch.mask[row].sum() == n
    projector = train.build_projector("mlp2x_gelu", in_dim=D, hidden_size=H)
    loss, count = train.caption_loss(model, projector, batch)
    # The same loss from transformers' own shifted cross-entropy over the full sequence.
    image = projector(batch.features)  # (B, 4, H)
    embeds = torch.cat([image, model.get_input_embeddings()(batch.ids)], dim=1)
    ignore = torch.full((len(examples), image.shape[1]), train.IGNORE)
    mask = torch.cat([torch.ones(ignore.shape, dtype=torch.long), batch.mask], dim=1)
    reference = model(
        inputs_embeds=embeds, attention_mask=mask, labels=torch.cat([ignore, batch.labels], dim=1)
    ).loss
    torch.testing.assert_close(loss, reference)
    assert count == int((batch.labels != train.IGNORE).sum())


def test_the_loss_falls_and_the_saved_projector_reloads(dataset, tokenizer, tmp_path):
    model, encoder = tiny_lm(tokenizer), ColourEncoder()
    pairs = train.load_pairs(*dataset)
    config = train.TrainConfig(lr=1e-2, batch_size=4, max_steps=30, seed=0)
    result = train.train_projector(model, tokenizer, encoder, pairs, config, progress=False)
    assert encoder.calls == 8  # features once per image
    assert result.steps == 30 and len(result.losses) == 30
    assert result.final_loss < result.initial_loss - 0.2, (result.initial_loss, result.final_loss)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert not any(p.requires_grad for p in model.parameters())  # the LM stayed frozen

    folder = train.save_training(result, tmp_path / "out", projector="mlp2x_gelu")
    loaded = load_projector(folder)
    assert loaded.identity == result.projector.identity
    features = encoder._encode_impl(np.asarray(Image.open(pairs[0].image).convert("RGB")))
    assert torch.equal(loaded.project(features), result.projector.project(features))  # (4, H)
    summary = json.loads((folder / train.TRAINING_FILE).read_text())
    assert summary["steps"] == 30 and summary["final_loss"] == round(result.final_loss, 4)
    assert summary["identity"] == loaded.identity and len(summary["losses"]) == 30


def test_training_is_reproducible_with_a_seed(dataset, tokenizer):
    pairs = train.load_pairs(*dataset)
    config = train.TrainConfig(projector="linear", lr=1e-2, batch_size=3, max_steps=4, seed=7)
    runs = [
        train.train_projector(tiny_lm(tokenizer), tokenizer, ColourEncoder(), pairs, config,
                              progress=False)
        for _ in range(2)
    ]  # fmt: skip
    assert runs[0].losses == runs[1].losses
    assert runs[0].projector.identity == runs[1].projector.identity


def test_steps_follow_epochs_unless_max_steps_is_set():
    assert train.TrainConfig(epochs=3, batch_size=4).total_steps(10) == 9
    assert train.TrainConfig(epochs=3, batch_size=4, max_steps=5).total_steps(10) == 5
    bad_ones = ({"projector": "class_embeddings"}, {"lr": 0.0}, {"batch_size": 0}, {"max_steps": 0})
    for bad in bad_ones:
        with pytest.raises(ConfigurationError):
            train.TrainConfig(**bad)


def test_the_cli_command_trains_and_saves(dataset, tokenizer, tmp_path, monkeypatch, capsys):
    from assistant.cli import main

    loaded = []

    def fake_models(settings):
        loaded.append(settings)
        return tiny_lm(tokenizer), tokenizer, ColourEncoder(), "tiny"

    monkeypatch.setattr(train, "load_models", fake_models)
    images, captions = dataset
    out = tmp_path / "projector"
    argv = ["train-projector", "--images", str(images), "--captions", str(captions),
            "--out", str(out), "--projector", "linear", "--lr", "0.01", "--batch-size", "8",
            "--max-steps", "6", "--data-dir", str(tmp_path / "data-dir")]  # fmt: skip
    assert main(argv) == 0
    assert loaded[0].data_dir == tmp_path / "data-dir"
    summary = json.loads((out / train.TRAINING_FILE).read_text())
    assert summary["steps"] == 6 and summary["projector"] == "linear" and summary["lr"] == 0.01
    assert load_projector(out).kind == "linear"
    assert f"ASSISTANT_VISION__PROJECTOR={out}" in capsys.readouterr().out


def test_the_cli_refuses_a_missing_image_before_loading_models(dataset, tmp_path, monkeypatch):
    from assistant.cli import main

    monkeypatch.setattr(train, "load_models", lambda settings: pytest.fail("models loaded"))
    images, _ = dataset
    captions = tmp_path / "c.jsonl"
    captions.write_text('{"image": "missing.png", "caption": "a cat"}\n')
    argv = ["train-projector", "--images", str(images), "--captions", str(captions),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
