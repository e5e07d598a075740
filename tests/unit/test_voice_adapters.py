"""The other speech adapters: transformers Whisper on a tiny random model (saved to a temporary
directory with a processor built offline from tiny.en's tokenizer), openai-whisper (the real
package) on a tiny random checkpoint, and the espeak-ng voice. The real tiny.en through
openai-whisper: tests/integration/test_openai_whisper_real.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from assistant.config import ASRSettings, Settings
from assistant.errors import ConfigurationError, InvalidRequestError
from assistant.ports import SAMPLE_RATE
from tests.support.tiny_whisper import save_tiny_openai_whisper, save_tiny_transformers_whisper

# -- transformers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory):
    """A random 1-layer WhisperForConditionalGeneration and a WhisperProcessor, save_pretrained."""
    pytest.importorskip("transformers")
    return save_tiny_transformers_whisper(tmp_path_factory.mktemp("tiny-whisper"))


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


# -- openai-whisper (the real package, a tiny random checkpoint) -------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("whisper")
    return save_tiny_openai_whisper(tmp_path_factory.mktemp("openai-whisper") / "tiny.pt")


async def test_openai_whisper_loads_a_checkpoint_file(tiny_checkpoint, recwarn):
    import whisper.model

    from adapters.asr.openai_whisper import OpenAIWhisperSTT

    stt = OpenAIWhisperSTT.from_path(tiny_checkpoint)
    assert isinstance(stt.model, whisper.model.Whisper) and stt.model.dims.n_audio_state == 16
    assert stt.capabilities.languages == ("en",)
    noise = (0.1 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32)
    transcript = await stt.transcribe(noise, prompt="greetings")  # a random model: some text
    assert isinstance(transcript.text, str)
    assert (transcript.language, transcript.duration_s) == ("en", 1.0)
    # fp16 on the CPU would warn "FP16 is not supported on CPU; using FP32 instead"
    assert not [w for w in recwarn if "FP16" in str(w.message)]
    with pytest.raises(InvalidRequestError) as info:
        await stt.transcribe(noise, language="de")
    assert info.value.code == "unsupported_language"
    assert (await stt.transcribe(np.zeros(0, np.float32))).text == ""


def test_openai_whisper_never_downloads_by_itself(tiny_checkpoint, tmp_path):
    from adapters.asr.openai_whisper import OpenAIWhisperSTT

    with pytest.raises(ConfigurationError, match="nothing is downloaded.*path of a local .pt"):
        OpenAIWhisperSTT.from_path("base", download_root=tmp_path)
    shutil.copyfile(tiny_checkpoint, tmp_path / "base.pt")  # "downloaded": loaded by its path
    stt = OpenAIWhisperSTT.from_path("base", download_root=tmp_path)
    assert stt.model.dims.n_audio_state == 16  # the file there, not openai's base


def test_openai_whisper_refuses_what_it_cannot_load(tmp_path):
    pytest.importorskip("whisper")
    from adapters.asr.openai_whisper import OpenAIWhisperSTT

    with pytest.raises(ConfigurationError, match="no openai-whisper checkpoint at"):
        OpenAIWhisperSTT.from_path(tmp_path / "missing.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match="cannot load the openai-whisper checkpoint"):
        OpenAIWhisperSTT.from_path(tmp_path / "broken.pt")


def test_openai_whisper_through_the_registry(tiny_checkpoint, tmp_path):
    from adapters.asr.openai_whisper import prepare
    from assistant.registry import build_speech_to_text

    asr = ASRSettings(adapter="openai_whisper", model=str(tiny_checkpoint), beam_size=2)
    settings = Settings(data_dir=tmp_path, asr=asr)
    stt = build_speech_to_text(settings)
    assert (stt.name, stt.beam_size) == ("openai_whisper", 2)
    assert prepare(settings, progress=False) == [
        f"speech to text: openai-whisper {tiny_checkpoint} (configured; nothing to prepare)"
    ]
    assert not (tmp_path / "models").exists()  # a checkpoint of one's own: nothing converted


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
