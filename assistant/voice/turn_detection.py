"""Server-side end-of-turn detection, as the OpenAI Realtime API's ``server_vad`` does it.

A ``TurnDetector`` is fed, window by window, the speech probabilities a ``VoiceActivity`` port
computes (Silero: one per 512 samples = 32 ms at 16 kHz) together with the audio they were computed
on. It is a small state machine over the windows:

    idle ──p >= threshold──> pending ──speech lasts min_speech_ms──> speaking   (SpeechStarted)
    pending ──a window below neg_threshold──> idle                               (a blip: ignored)
    speaking ──silence lasts silence_duration_ms──> idle                        (SpeechStopped)
    speaking, hurried ──silence lasts eager_silence_ms──> idle                  (SpeechStopped)
    speaking ──speech lasts max_speech_ms──> idle                               (SpeechStopped)

Hysteresis as Silero's own segmentation: speech starts at ``threshold`` and only a window below
``neg_threshold`` counts as silence; a window in between neither starts nor ends anything.

The silence needed is adaptive: the caller (the pipeline, once the transcript of the words so far
looks like a finished sentence: ``assistant.voice.end_of_turn``) may ``hurry`` the detector during
a silence, which then ends the turn after ``eager_silence_ms`` instead; speech (a window at or
above ``threshold``) takes the hurry back.

Times are milliseconds since the detector was created or reset, as Realtime's ``audio_start_ms`` /
``audio_end_ms``: the start includes ``prefix_padding_ms`` of audio before the first speech window,
the end includes the ``silence_duration_ms`` of silence that ended the turn. ``SpeechStopped.audio``
is exactly the samples between the two. Pure: no I/O, no clock, deterministic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from assistant.config import voice_default

StopReason = Literal["silence", "max_duration", "commit"]


@dataclass(frozen=True)
class TurnDetectionConfig:
    threshold: float = voice_default("threshold")
    #: Below this a window is silence; None: ``max(threshold - 0.15, 0.01)`` (Silero's default).
    neg_threshold: float | None = None
    #: Audio kept before the first speech window and handed over with the utterance.
    prefix_padding_ms: int = voice_default("prefix_padding_ms")
    #: Silence that ends a turn (the long wait: the words so far may go on).
    silence_duration_ms: int = voice_default("silence_duration_ms")
    #: Silence that ends a turn once ``hurry`` was called in it (the words so far look finished).
    #: None, or not below ``silence_duration_ms``: no short wait.
    eager_silence_ms: int | None = voice_default("eager_silence_ms")
    #: Speech shorter than this (a cough, a click) does not start a turn.
    min_speech_ms: int = voice_default("min_speech_ms")
    #: A turn is cut here even while speech goes on (matches ``AudioLimits.max_seconds``).
    max_speech_ms: int | None = int(voice_default("max_turn_s") * 1000)
    sample_rate: int = 16_000
    window_samples: int = 512

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.silence_threshold > self.threshold:
            raise ValueError("neg_threshold must not exceed threshold")
        durations = (self.prefix_padding_ms, self.silence_duration_ms, self.min_speech_ms)
        if min(*durations, self.eager_silence_ms or 0) < 0:
            raise ValueError("durations must not be negative")
        if self.window_samples <= 0 or self.sample_rate <= 0:
            raise ValueError("window_samples and sample_rate must be positive")

    @property
    def silence_threshold(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)

    @property
    def adaptive(self) -> bool:
        """A short wait exists (``hurry`` can change anything)."""
        eager = self.eager_silence_ms
        return eager is not None and eager < self.silence_duration_ms

    def samples(self, ms: int) -> int:
        return ms * self.sample_rate // 1000

    def windows(self, ms: int) -> int:
        """How many whole windows it takes to last at least ``ms`` (at least 1)."""
        return max(1, math.ceil(self.samples(ms) / self.window_samples))


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # includes the prefix padding


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int  # includes the trailing silence
    audio_start_ms: int = 0
    reason: StopReason = "silence"
    #: float32 (N,): the utterance from ``audio_start_ms`` to ``audio_end_ms``.
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False,
                              compare=False)

    @property
    def duration_ms(self) -> int:
        return self.audio_end_ms - self.audio_start_ms


TurnEvent = SpeechStarted | SpeechStopped
_State = Literal["idle", "pending", "speaking"]


class TurnDetector:
    """Feed it ``(probabilities, audio)``; it returns the turn events those windows cause.

    Positions are counted in samples: window ``k`` covers samples ``[k*W, (k+1)*W)``. Audio fed
    beyond the windows given probabilities waits for the next call, so the caller can pass a
    ``VoiceActivity`` the very chunks it passes here (the VAD keeps partial windows the same way).
    """

    def __init__(self, config: TurnDetectionConfig | None = None) -> None:
        self.config = config or TurnDetectionConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything; times start again at 0."""
        self._state: _State = "idle"
        self._position = 0  # samples consumed by windows so far
        self._tail = np.zeros(0, np.float32)  # (T,) samples waiting for their probability
        self._kept: deque[tuple[int, np.ndarray]] = deque()  # (first sample, window (W,))
        self._speech_start = 0  # first sample of the first speech window (pending / speaking)
        self._run = 0  # pending: speech windows in a row
        self._silence_start: int | None = None  # speaking: first sample of the current silence
        self._floor = 0  # the end of the last utterance: a prefix padding never reaches before it
        self._hurried = False  # this silence ends after eager_silence_ms

    @property
    def in_speech(self) -> bool:
        """True between ``SpeechStarted`` and ``SpeechStopped``."""
        return self._state == "speaking"

    @property
    def position_ms(self) -> int:
        """The end of the last window processed."""
        return self._ms(self._position)

    @property
    def retained_samples(self) -> int:
        """Samples held: about the prefix padding while idle, the utterance while speaking."""
        return sum(window.shape[0] for _, window in self._kept) + self._tail.shape[0]

    def feed(
        self, probabilities: Sequence[float] | np.ndarray, audio: np.ndarray
    ) -> list[TurnEvent]:
        """``probabilities``: (K,) one per window; ``audio``: (N,) float32 samples that continue the
        stream. The K windows are taken from the samples fed so far and not yet consumed."""
        probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)  # (K,)
        samples = np.concatenate([self._tail, np.asarray(audio, np.float32).reshape(-1)])  # (T+N,)
        width = self.config.window_samples
        if probs.shape[0] * width > samples.shape[0]:
            raise ValueError(
                f"{probs.shape[0]} probabilities need {probs.shape[0] * width} samples; "
                f"only {samples.shape[0]} were fed"
            )
        events: list[TurnEvent] = []
        for k, prob in enumerate(probs):
            window = samples[k * width : (k + 1) * width]  # (W,)
            event = self._step(float(prob), window)
            if event is not None:
                events.append(event)
        self._tail = samples[probs.shape[0] * width :].copy()  # (T',)
        return events

    @property
    def silence_ms(self) -> int:
        """How long the current silence of a turn has lasted (0 while speech goes on)."""
        if self._state != "speaking" or self._silence_start is None:
            return 0
        return self._ms(self._position - self._silence_start)

    def hurry(self, hurried: bool = True) -> None:
        """The words so far look finished (or, ``False``: no longer): this silence of the turn ends
        after ``eager_silence_ms``. Speech takes it back by itself; a no-op while not speaking."""
        self._hurried = hurried and self._state == "speaking" and self.config.adaptive

    def commit(self) -> SpeechStopped | None:
        """End the turn now (``input_audio_buffer.commit``, or the stream ended): the utterance so
        far, or None when no speech has started."""
        if self._state != "speaking":
            return None
        return self._stop(self._position, "commit")

    # -- the state machine ------------------------------------------------------------------------

    def _step(self, prob: float, window: np.ndarray) -> TurnEvent | None:
        start = self._position
        self._position += window.shape[0]
        self._kept.append((start, window))
        if self._state == "idle":
            if prob >= self.config.threshold:
                self._state, self._speech_start, self._run = "pending", start, 0
                return self._pending(prob)
            self._trim(self._position)
            return None
        if self._state == "pending":
            return self._pending(prob)
        return self._speaking(prob, start)

    def _pending(self, prob: float) -> SpeechStarted | None:
        """Speech seen, not yet long enough to be a turn."""
        if prob < self.config.silence_threshold:  # a blip: back to idle
            self._state = "idle"
            self._trim(self._position)
            return None
        self._run += 1
        if self._run < self.config.windows(self.config.min_speech_ms):
            return None
        self._state, self._silence_start = "speaking", None
        return SpeechStarted(audio_start_ms=self._ms(self._audio_start()))

    def _speaking(self, prob: float, start: int) -> SpeechStopped | None:
        cfg = self.config
        if prob >= cfg.threshold:
            self._silence_start, self._hurried = None, False
        elif prob < cfg.silence_threshold and self._silence_start is None:
            self._silence_start = start
        if self._silence_start is not None:
            wait = cfg.silence_duration_ms
            if self._hurried and cfg.eager_silence_ms is not None:
                wait = min(wait, cfg.eager_silence_ms)
            if self._position - self._silence_start >= cfg.samples(wait):
                return self._stop(self._position, "silence")
        if cfg.max_speech_ms is not None:
            if self._position - self._audio_start() >= cfg.samples(cfg.max_speech_ms):
                return self._stop(self._position, "max_duration")
        return None

    def _stop(self, end: int, reason: StopReason) -> SpeechStopped:
        begin = self._audio_start()
        audio = self._kept_audio(begin, end)  # (end - begin,)
        self._state, self._silence_start, self._floor = "idle", None, end
        self._hurried = False
        self._kept.clear()
        return SpeechStopped(
            audio_end_ms=self._ms(end), audio_start_ms=self._ms(begin), reason=reason, audio=audio
        )

    # -- the audio kept ---------------------------------------------------------------------------

    def _audio_start(self) -> int:
        """The utterance's first sample: the speech start minus the prefix padding, but never
        before the end of the previous utterance (its audio was handed over already)."""
        padding = self.config.samples(self.config.prefix_padding_ms)
        return max(self._floor, self._speech_start - padding)

    def _trim(self, speech_start: int) -> None:
        """While idle keep only the windows a prefix padding before ``speech_start`` may need."""
        keep_from = speech_start - self.config.samples(self.config.prefix_padding_ms)
        while self._kept and self._kept[0][0] + self._kept[0][1].shape[0] <= keep_from:
            self._kept.popleft()

    def _kept_audio(self, begin: int, end: int) -> np.ndarray:
        if not self._kept:
            return np.zeros(0, np.float32)
        first = self._kept[0][0]
        audio = np.concatenate([w for _, w in self._kept])  # (sum W,)
        return audio[begin - first : end - first].astype(np.float32, copy=True)  # (end - begin,)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.config.sample_rate


__all__ = [
    "SpeechStarted",
    "SpeechStopped",
    "TurnDetectionConfig",
    "TurnDetector",
    "TurnEvent",
]
