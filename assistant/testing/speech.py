"""Speech fakes: a VAD driven by the audio's loudness, a speech-to-text model whose transcript
grows with the loud audio it hears, a text-to-speech model of tones."""

from __future__ import annotations

import time

import numpy as np

from assistant.ports import (
    SAMPLE_RATE,
    SpeechToText,
    TextToSpeech,
    Transcript,
    VoiceActivity,
    VoiceActivityStream,
)

#: What ``FakeSTT`` hears, a word per ``WORD_S`` of loud audio (a 1 s tone: all 8 words).
SENTENCE = "what is the weather like in london today".split()
WORD_S = 0.11


class FakeVAD(VoiceActivity):
    """Speech probability 0.95 for a window whose RMS is above 0.02, else 0.02."""

    name = "fake_vad"
    window_samples = 512

    def _stream_impl(self) -> FakeVADStream:
        return FakeVADStream(self)


class FakeVADStream(VoiceActivityStream):
    def __init__(self, model: FakeVAD) -> None:
        super().__init__(model)
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)  # (P,) samples short of a window

    def _probabilities_impl(self, audio: np.ndarray) -> np.ndarray:
        width = self.window_samples
        samples = np.concatenate([self._pending, np.asarray(audio, np.float32)])  # (P + N,)
        count = samples.shape[0] // width
        self._pending = samples[count * width :]
        windows = samples[: count * width].reshape(count, width)  # (K, W)
        rms = np.sqrt((windows**2).mean(axis=1)) if count else np.zeros(0)  # (K,)
        return np.where(rms > 0.02, 0.95, 0.02).astype(np.float32)


class FakeSTT(SpeechToText):
    """One word of ``SENTENCE`` per ``WORD_S`` of loud audio, or always ``text``; ``delay_s`` of
    blocking work per call."""

    name = "fake_stt"

    def __init__(self, delay_s: float = 0.0, text: str | None = None) -> None:
        self.delay_s = delay_s
        self.text = text
        self.calls: list[float] = []  # seconds of audio per call

    def _transcribe_impl(
        self, audio: np.ndarray, language: str | None, prompt: str | None
    ) -> Transcript:
        self.calls.append(audio.shape[0] / SAMPLE_RATE)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.text is not None:
            return Transcript(self.text, "en", audio.shape[0] / SAMPLE_RATE)
        loud = int(np.sum(np.abs(audio) > 0.05)) / SAMPLE_RATE  # seconds above the floor
        words = SENTENCE[: int(loud / WORD_S)]  # 89 % of a 0.3 sine's samples are "loud"
        return Transcript(" ".join(words), "en", audio.shape[0] / SAMPLE_RATE)


class FakeTTS(TextToSpeech):
    """``per_char_s`` of a 220 Hz tone per character of text."""

    name = "fake_tts"

    def __init__(self, per_char_s: float = 0.01) -> None:
        self.per_char_s = per_char_s
        self.spoken: list[str] = []

    def _synthesize_impl(self, text: str, voice: str | None) -> np.ndarray:
        self.spoken.append(text)
        n = int(len(text) * self.per_char_s * SAMPLE_RATE)
        return (0.2 * np.sin(np.arange(n) * 2 * np.pi * 220 / SAMPLE_RATE)).astype(np.float32)
