"""Audio for the voice tests: synthetic signals (float32 16 kHz mono, (N,)) and their PCM16
chunks as a client sends them; real speech made by espeak-ng and sox, WAV reading, WebM/Opus
encoding as a browser records it, and the words of a transcript."""

from __future__ import annotations

import io
import shutil
import string
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.ports import SAMPLE_RATE
from assistant.voice.audio import float_to_pcm16, pcm16_to_float

# -- synthetic signals ------------------------------------------------------------------------------


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    """A 440 Hz sine, (seconds * 16000,): "speech" to the loudness fakes."""
    n = int(seconds * SAMPLE_RATE)
    return (amplitude * np.sin(np.arange(n) * 2 * np.pi * 440 / SAMPLE_RATE)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def with_silence(audio: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """``audio`` followed by ``seconds`` of silence, (N + S,)."""
    return np.concatenate([audio, silence(seconds)])


def chunks(audio: np.ndarray, seconds: float = 0.1) -> Iterator[bytes]:
    """``audio`` as PCM16 chunks of ``seconds`` each (the last may be shorter)."""
    step = int(seconds * SAMPLE_RATE)
    for begin in range(0, audio.shape[0], step):
        yield float_to_pcm16(audio[begin : begin + step])


# -- real speech ------------------------------------------------------------------------------------


#: Sentences tiny.en transcribes word for word from espeak-ng, with the words checked.
SENTENCES = {
    "weather": ("What is the weather like in London today?", ["weather", "london", "today"]),
    "lights": ("Turn on the kitchen lights and play some music.", ["kitchen", "lights", "music"]),
    "table": (
        "I would like to book a table for two people tomorrow evening.",
        ["book", "table", "people", "tomorrow", "evening"],
    ),
    "account": (
        "Hello, my name is Alice and I need help with my account.",
        ["hello", "alice", "help", "account"],
    ),
}


def require_speech_tools() -> None:
    """espeak-ng and sox are part of the set-up: their absence fails a test rather than skips it."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; the set-up installs it (apt-get install {tool})")


def speak(sentence: str, folder: Path, name: str, *espeak_args: str) -> Path:
    """``sentence`` spoken by espeak-ng (its own 22.05 kHz WAV, ``{name}.raw.wav``), converted by
    sox to 16 kHz mono PCM16: the path of ``{name}.wav``."""
    raw, wav = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", *espeak_args, "-w", str(raw), sentence], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav)],
                   check=True, capture_output=True)  # fmt: skip
    return wav


def read_wav(path: Path) -> np.ndarray:
    """A PCM16 16 kHz mono WAV -> float32 (N,)."""
    with wave.open(str(path), "rb") as source:
        assert (source.getframerate(), source.getnchannels(), source.getsampwidth()) == (
            SAMPLE_RATE, 1, 2,
        )
        return pcm16_to_float(source.readframes(source.getnframes()))


def encode_webm_opus(audio: np.ndarray) -> bytes:
    """float32 16 kHz mono (N,) -> a WebM file with one Opus stream, as a browser records it."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        pcm = np.rint(np.clip(audio, -1, 1) * 32767).astype(np.int16)[None, :]  # (1, N)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def words(text: str) -> list[str]:
    """Lowercased words, punctuation stripped."""
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()
