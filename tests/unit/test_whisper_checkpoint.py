"""The openai-whisper checkpoint made from CTranslate2 files, on a tiny random Whisper: CTranslate2's
own converter writes the ``model.bin`` (float32 and int8) from a random transformers model, our
reader maps it back to transformers' names (the same tensors), and the openai-whisper renaming
gives a model that loads with ``strict=True`` and computes the transformers model's logits."""

from __future__ import annotations

import os

import pytest

from assistant.errors import ConfigurationError
from tests.support.tiny_whisper import save_tiny_transformers_whisper

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("whisper")

CONFIG_FIELDS = (
    "vocab_size", "d_model", "num_mel_bins", "encoder_layers", "decoder_layers",
    "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
    "max_source_positions", "max_target_positions",
)  # fmt: skip


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random 2-layer transformers Whisper: (its folder, the model)."""
    from transformers import WhisperForConditionalGeneration

    folder = save_tiny_transformers_whisper(
        tmp_path_factory.mktemp("hf"), encoder_layers=2, decoder_layers=2
    )
    return folder, WhisperForConditionalGeneration.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def ct2_dirs(hf_model, tmp_path_factory):
    """The random model written by CTranslate2's converter: {"float32": dir, "int8": dir}."""
    from ctranslate2.converters import TransformersConverter

    folder, _ = hf_model
    out = {}
    for quantization in ("float32", "int8"):
        out[quantization] = tmp_path_factory.mktemp(quantization)
        TransformersConverter(str(folder)).convert(
            str(out[quantization]), quantization=quantization, force=True
        )
    return out


def test_reads_back_what_ctranslate2_wrote(hf_model, ct2_dirs):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from adapters.asr.ct2_whisper import read_ct2_variables, transformers_whisper_weights

    _, model = hf_model
    reference = model.state_dict()
    fields, state = transformers_whisper_weights(read_ct2_variables(ct2_dirs["float32"] / "model.bin"))
    assert fields == {name: getattr(model.config, name) for name in CONFIG_FIELDS}
    assert set(state) == set(reference)
    assert all(torch.equal(state[name], reference[name]) for name in reference)
    WhisperForConditionalGeneration(WhisperConfig(**fields)).load_state_dict(state, strict=True)

    _, quantized = transformers_whisper_weights(read_ct2_variables(ct2_dirs["int8"] / "model.bin"))
    for name, tensor in reference.items():  # int8 rows scaled back: within one step of 127
        step = float(tensor.abs().max()) / 127
        assert float((quantized[name] - tensor).abs().max()) <= step + 1e-7, name
    assert not torch.equal(quantized["model.encoder.layers.0.fc1.weight"],
                           reference["model.encoder.layers.0.fc1.weight"])  # fmt: skip


def test_openai_whisper_computes_the_same_logits(hf_model):
    from whisper.model import ModelDimensions, Whisper

    from adapters.asr.whisper_checkpoint import openai_whisper_checkpoint

    _, model = hf_model
    fields = {name: getattr(model.config, name) for name in CONFIG_FIELDS}
    checkpoint = openai_whisper_checkpoint(fields, model.state_dict(), dtype=torch.float32)
    converted = Whisper(ModelDimensions(**checkpoint["dims"])).eval()
    converted.load_state_dict(checkpoint["model_state_dict"], strict=True)
    torch.manual_seed(1)
    mel = torch.randn(1, 80, 3000)  # (batch, mels, frames of a 30 s window)
    tokens = torch.tensor([[model.config.decoder_start_token_id, 50362, 400, 1000, 7]])
    with torch.inference_mode():
        expected = model(input_features=mel, decoder_input_ids=tokens).logits
        got = converted(mel, tokens)
    assert got.shape == expected.shape == (1, 5, model.config.vocab_size)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_writes_the_checkpoint_once(hf_model, ct2_dirs, tmp_path):
    import whisper

    from adapters.asr.whisper_checkpoint import openai_whisper_name, write_checkpoint

    _, model = hf_model
    target = tmp_path / "openai-whisper" / "tiny.pt"
    assert write_checkpoint(ct2_dirs["float32"], target, progress=False) == target
    written = target.stat().st_mtime_ns
    assert os.listdir(target.parent) == ["tiny.pt"]  # no temporary file left
    assert write_checkpoint(ct2_dirs["float32"], target, progress=False) == target
    assert target.stat().st_mtime_ns == written  # done already: not rewritten
    loaded = whisper.load_model(str(target), device="cpu")  # strict, as openai-whisper loads
    assert loaded.dims.n_text_layer == 2 and not loaded.is_multilingual
    state = loaded.state_dict()
    for name, tensor in model.state_dict().items():  # stored as fp16, loaded as fp32
        new = openai_whisper_name(name)
        assert new is None or torch.equal(state[new], tensor.half().float()), name


def test_refuses_what_it_cannot_convert(tmp_path):
    from adapters.asr.ct2_whisper import read_ct2_variables, transformers_whisper_weights
    from adapters.asr.whisper_checkpoint import model_dimensions, openai_whisper_name

    (tmp_path / "old.bin").write_bytes((3).to_bytes(4, "little"))
    with pytest.raises(ConfigurationError, match="binary version 3"):
        read_ct2_variables(tmp_path / "old.bin")
    (tmp_path / "short.bin").write_bytes((6).to_bytes(4, "little") + b"\x05")
    with pytest.raises(ConfigurationError, match="truncated"):
        read_ct2_variables(tmp_path / "short.bin")
    with pytest.raises(ConfigurationError, match="not a CTranslate2 Whisper model"):
        transformers_whisper_weights({})
    fields = dict(zip(CONFIG_FIELDS, (51864, 16, 80, 1, 1, 2, 2, 64, 32, 1500, 64)))
    with pytest.raises(ConfigurationError, match="decoder feed-forward width of 4 x 16"):
        model_dimensions(fields)
    with pytest.raises(ConfigurationError, match="no openai-whisper name"):
        openai_whisper_name("model.encoder.layers.0.adapter.weight")
    assert openai_whisper_name("proj_out.weight") is None
    assert openai_whisper_name("model.decoder.layers.3.encoder_attn.k_proj.weight") == (
        "decoder.blocks.3.cross_attn.key.weight"
    )
