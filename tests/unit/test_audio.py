"""assistant.voice.audio: PCM16 and base64 conversions, file decoding through PyAV, limits."""

from __future__ import annotations

import base64
import io
import struct
import sys
import wave

import numpy as np
import pytest

from assistant.errors import InvalidRequestError, MissingDependencyError
from assistant.voice.audio import (
    AudioLimits,
    base64_pcm16_to_float,
    decode_audio_file,
    decode_base64,
    float_to_base64_pcm16,
    float_to_pcm16,
    pcm16_to_float,
)


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate  # (N,)
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # (N,)


def wav_bytes(audio: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """A PCM16 WAV of ``audio`` (N,), repeated on every channel, written with the stdlib."""
    pcm = np.rint(np.clip(audio, -1, 1) * 32767).astype("<i2")  # (N,)
    interleaved = np.repeat(pcm[:, None], channels, axis=1)  # (N, C)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(interleaved.tobytes())
    return buffer.getvalue()


def dominant_hz(audio: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))  # (N // 2 + 1,)
    return float(np.fft.rfftfreq(audio.shape[0], 1 / rate)[np.argmax(spectrum)])


# -- PCM16 ------------------------------------------------------------------------------------------


def test_pcm16_round_trip_is_exact():
    pcm = np.random.default_rng(0).integers(-32768, 32768, size=4000, dtype=np.int16)
    data = pcm.astype("<i2").tobytes()
    audio = pcm16_to_float(data)
    assert audio.dtype == np.float32 and audio.shape == (4000,)
    assert audio.min() >= -1.0 and audio.max() < 1.0
    assert float_to_pcm16(audio) == data


def test_pcm16_is_little_endian():
    assert pcm16_to_float(b"\x00\x40").tolist() == [0.5]  # 0x4000 = 16384
    assert pcm16_to_float(b"\x00\x80").tolist() == [-1.0]
    assert float_to_pcm16(np.array([0.5, -1.0], np.float32)) == b"\x00\x40\x00\x80"


def test_float_to_pcm16_clips():
    out = np.frombuffer(float_to_pcm16(np.array([2.0, -3.0, 0.0], np.float32)), "<i2")
    assert out.tolist() == [32767, -32768, 0]


def test_odd_byte_count_is_refused_with_its_code():
    with pytest.raises(InvalidRequestError) as info:
        pcm16_to_float(b"\x00\x01\x02")
    assert info.value.code == "invalid_audio_bytes"
    assert info.value.type == "invalid_request_error"


def test_empty_pcm16_is_empty_audio():
    assert pcm16_to_float(b"").shape == (0,)


# -- base64 -----------------------------------------------------------------------------------------


def test_base64_pcm16_round_trip():
    audio = sine(440, 0.1, 16_000)
    text = float_to_base64_pcm16(audio)
    assert base64.b64decode(text) == float_to_pcm16(audio)
    np.testing.assert_allclose(base64_pcm16_to_float(text), audio, atol=1 / 32768)


def test_decode_base64_takes_a_data_url():
    assert decode_base64("data:audio/wav;base64," + base64.b64encode(b"RIFF").decode()) == b"RIFF"


@pytest.mark.parametrize("text", ["not base64!", "data:audio/wav,UklGRg=="])
def test_bad_base64_has_its_code(text):
    with pytest.raises(InvalidRequestError) as info:
        decode_base64(text)
    assert info.value.code == "invalid_base64"


# -- audio files ------------------------------------------------------------------------------------


def test_decodes_a_16k_mono_wav():
    audio = sine(440, 0.5, 16_000)
    decoded = decode_audio_file(wav_bytes(audio, 16_000))
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert decoded.shape[0] == audio.shape[0]
    np.testing.assert_allclose(decoded, audio, atol=2 / 32768)


def test_resamples_a_44k_stereo_wav_to_16k_mono():
    audio = sine(1000, 1.0, 44_100)
    decoded = decode_audio_file(wav_bytes(audio, 44_100, channels=2))
    assert abs(decoded.shape[0] - 16_000) <= 16  # one second at 16 kHz
    assert dominant_hz(decoded) == pytest.approx(1000, abs=2)
    rms = float(np.sqrt(np.mean(decoded[1000:-1000] ** 2)))  # the two channels averaged
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("webm", "libopus", 48_000), ("ogg", "libopus", 48_000), ("mp3", "libmp3lame", 16_000)],
)
def test_decodes_compressed_files(container, codec, rate):
    av = pytest.importorskip("av")
    audio = sine(440, 1.0, 16_000)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.rint(audio * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )  # (1, N) packed
        frame.sample_rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    decoded = decode_audio_file(buffer.getvalue())
    assert abs(decoded.shape[0] - 16_000) <= 1200  # encoder padding, at most a frame or two
    assert dominant_hz(decoded) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("data", [b"this is not audio at all" * 50, b"RIFF\x00\x00\x00\x00WAVE", b""])
def test_undecodable_input_is_invalid_audio(data):
    with pytest.raises(InvalidRequestError) as info:
        decode_audio_file(data)
    assert info.value.code == "invalid_audio"


# Found by the fuzzer: the message carried FFmpeg's str(), an errno and '<none>' for the file name,
# or a C call with a Python dict: 'avcodec_open2("pcm_s16le", {})' returned 22.
@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\xff\xff\xff\xffWAVE" + b"garbage" * 20,
        b"OggS\x00\x02" + b"x" * 100,
        b"RIFF" + struct.pack("<I", 136) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 0, 16000, 0, 0, 16)
        + b"data" + struct.pack("<I", 100) + b"\x00" * 100,  # no channels
    ],
)  # fmt: skip
def test_an_undecodable_file_is_told_without_ffmpeg_internals(data):
    with pytest.raises(InvalidRequestError) as info:
        decode_audio_file(data)
    assert info.value.code == "invalid_audio"
    message = info.value.message
    assert message.startswith("the audio cannot be decoded: ")
    assert not any(internal in message for internal in ("Errno", "<none>", "avcodec", "{", "returned"))


def test_missing_pyav_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes ``import av`` raise ImportError
    with pytest.raises(MissingDependencyError) as info:
        decode_audio_file(wav_bytes(sine(440, 0.1, 16_000), 16_000))
    assert info.value.code == "missing_dependency"
    assert "assistant[voice]" in str(info.value)


# -- limits -----------------------------------------------------------------------------------------


def test_default_limits():
    limits = AudioLimits()
    assert limits.max_seconds == 120 and limits.max_bytes == 25 * 1024 * 1024
    assert limits.max_samples == 120 * 16_000
    with pytest.raises(Exception):  # frozen
        limits.max_seconds = 1  # type: ignore[misc]


def test_too_many_bytes_is_refused_before_decoding():
    data = b"x" * 2048  # not audio: the size check comes first
    with pytest.raises(InvalidRequestError) as info:
        decode_audio_file(data, limits=AudioLimits(max_bytes=1024))
    assert info.value.code == "audio_too_large"


def test_too_long_audio_is_refused():
    data = wav_bytes(sine(440, 1.0, 16_000), 16_000)
    with pytest.raises(InvalidRequestError) as info:
        decode_audio_file(data, limits=AudioLimits(max_seconds=0.5))
    assert info.value.code == "audio_too_long"
    assert decode_audio_file(data, limits=AudioLimits(max_seconds=1.0)).shape == (16_000,)


def test_check_samples_and_bytes_at_the_limit():
    limits = AudioLimits(max_seconds=2.0, max_bytes=100)
    limits.check_samples(32_000)
    limits.check_bytes(100)
    with pytest.raises(InvalidRequestError) as info:
        limits.check_samples(32_001)
    assert info.value.code == "audio_too_long"
    with pytest.raises(InvalidRequestError) as info:
        limits.check_bytes(101)
    assert info.value.code == "audio_too_large"
