"""The other speech adapters: transformers Whisper on a tiny random model (saved to a temporary
directory with a processor built offline from tiny.en's tokenizer), openai-whisper against a
stand-in ``whisper`` module (the package is not a dependency), and the espeak-ng voice."""

from __future__ import annotations

import importlib
import shutil
import sys
import types

import numpy as np
import pytest

from assistant.config import ASRSettings, Settings
from assistant.errors import ConfigurationError, InvalidRequestError
from assistant.ports import SAMPLE_RATE

# -- transformers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory):
    """A random 1-layer WhisperForConditionalGeneration and a WhisperProcessor, save_pretrained."""
    pytest.importorskip("transformers")
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    from adapters.asr.faster_whisper import default_model_dir

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(default_model_dir() / "tokenizer.json"))
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_target_positions=64, decoder_start_token_id=start,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-whisper")
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(), tokenizer).save_pretrained(folder)
    return folder


async def test_transformers_whisper_loads_a_directory_and_transcribes(tiny_whisper_dir):
    from adapters.asr.transformers_whisper import TransformersWhisperSTT

    stt = TransformersWhisperSTT.from_path(tiny_whisper_dir, max_new_tokens=4)
    assert stt.capabilities.languages == ("en",)
    audio = (0.1 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32)
    transcript = await stt.transcribe(audio)  # a random model: some text, through the port
    assert isinstance(transcript.text, str) and transcript.language == "en"
    assert transcript.duration_s == pytest.approx(1.0)
    with pytest.raises(InvalidRequestError) as info:
        await stt.transcribe(audio, language="fr")
    assert info.value.code == "unsupported_language"


async def test_transformers_whisper_cuts_long_audio_into_30_s_windows(tiny_whisper_dir):
    from adapters.asr.transformers_whisper import TransformersWhisperSTT

    stt = TransformersWhisperSTT.from_path(tiny_whisper_dir, max_new_tokens=2)
    windows = []
    stt._window = lambda samples, language, prompt: windows.append(samples.shape[0]) or "x"
    transcript = await stt.transcribe(np.zeros(int(45 * SAMPLE_RATE), np.float32))
    assert windows == [30 * SAMPLE_RATE, 15 * SAMPLE_RATE] and transcript.text == "x x"


def test_transformers_whisper_through_the_registry(tiny_whisper_dir, tmp_path):
    from assistant.registry import build_speech_to_text

    settings = Settings(data_dir=tmp_path, asr=ASRSettings(adapter="transformers_whisper",
                                                           model=str(tiny_whisper_dir)))  # fmt: skip
    assert build_speech_to_text(settings).name == "transformers_whisper"
    with pytest.raises(ConfigurationError, match="ASSISTANT_ASR__MODEL"):
        build_speech_to_text(Settings(data_dir=tmp_path,
                                      asr=ASRSettings(adapter="transformers_whisper")))  # fmt: skip
    with pytest.raises(ConfigurationError, match="no transformers Whisper directory"):
        from adapters.asr.transformers_whisper import TransformersWhisperSTT

        TransformersWhisperSTT.from_path(tmp_path / "missing")


# -- openai-whisper (a stand-in module) --------------------------------------------------------------


class _FakeWhisperModel:
    is_multilingual = False

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def transcribe(self, audio, **options):
        self.calls.append({"samples": audio.shape[0], **options})
        return {"text": " hello there ", "language": "en", "segments": []}


@pytest.fixture
def openai_whisper(monkeypatch):
    loaded: list[tuple] = []
    fake = types.ModuleType("whisper")

    def load_model(name, device=None, download_root=None, in_memory=False):
        loaded.append((name, device, download_root))
        return _FakeWhisperModel()

    fake.load_model = load_model
    monkeypatch.setitem(sys.modules, "whisper", fake)
    sys.modules.pop("adapters.asr.openai_whisper", None)
    module = importlib.import_module("adapters.asr.openai_whisper")
    yield module, loaded
    sys.modules.pop("adapters.asr.openai_whisper", None)


async def test_openai_whisper_loads_a_checkpoint_file(openai_whisper, tmp_path):
    module, loaded = openai_whisper
    checkpoint = tmp_path / "tiny.en.pt"
    checkpoint.write_bytes(b"not really")
    stt = module.OpenAIWhisperSTT.from_path(checkpoint)
    assert loaded[0][:2] == (str(checkpoint), "cpu")
    transcript = await stt.transcribe(np.zeros(SAMPLE_RATE, np.float32), prompt="greetings")
    assert (transcript.text, transcript.language, transcript.duration_s) == ("hello there", "en", 1.0)
    call = stt.model.calls[0]
    assert call["fp16"] is False and call["language"] == "en" and call["initial_prompt"] == "greetings"
    with pytest.raises(InvalidRequestError):
        await stt.transcribe(np.zeros(10, np.float32), language="de")


def test_openai_whisper_never_downloads_by_itself(openai_whisper, tmp_path):
    module, loaded = openai_whisper
    with pytest.raises(ConfigurationError, match="nothing is downloaded"):
        module.OpenAIWhisperSTT.from_path("base", download_root=tmp_path)
    (tmp_path / "base.pt").write_bytes(b"x")  # already downloaded: loaded by name
    module.OpenAIWhisperSTT.from_path("base", download_root=tmp_path)
    assert loaded == [("base", "cpu", str(tmp_path))]


# -- espeak-ng -------------------------------------------------------------------------------------


async def test_espeak_speaks_16_khz_audio():
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed; the set-up installs it")
    from adapters.tts.espeak import build

    tts = build(Settings())
    audio = await tts.synthesize("Hello there.")
    assert audio.dtype == np.float32 and 0.5 < audio.shape[0] / SAMPLE_RATE < 2.0
    assert float(np.abs(audio).max()) > 0.1
    assert (await tts.synthesize("  ")).shape == (0,)
    assert "en-gb" in tts.capabilities.voices
    with pytest.raises(InvalidRequestError) as info:
        await tts.synthesize("Hi.", voice="--stdout")
    assert info.value.code == "unsupported_voice"
