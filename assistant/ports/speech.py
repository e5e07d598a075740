"""Speech ports: speech to text, voice activity, text to speech (float32 mono 16 kHz)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.errors import InvalidRequestError
from assistant.ports.blocking import call_off_loop

if TYPE_CHECKING:
    import numpy as np


# --------------------------------------------------------------------------------------------------
# Speech to text and voice activity (audio is float32 mono at 16 kHz, in [-1, 1])
# --------------------------------------------------------------------------------------------------

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    duration_s: float = 0.0  # of the audio transcribed


@dataclass(frozen=True)
class SpeechToTextCapabilities:
    languages: tuple[str, ...] | None = None  # None: multilingual
    #: Longest audio one call takes; longer audio is refused by the port.
    max_audio_s: float = 600.0


class SpeechToText(abc.ABC):
    """Transcribes a whole utterance. Streaming partials are built on top by re-transcribing the
    growing buffer (see the voice pipeline), so adapters only implement one blocking call."""

    name: str = "speech_to_text"
    capabilities: SpeechToTextCapabilities = SpeechToTextCapabilities()
    timeout_s: float = 120.0

    async def transcribe(
        self, audio: "np.ndarray", *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """``audio``: float32 samples, mono, 16 kHz. Runs off the event loop. Audio longer than
        ``capabilities.max_audio_s`` is refused (``audio_too_long``) before the model sees it."""
        limit_s = self.capabilities.max_audio_s
        if audio.shape[0] > limit_s * SAMPLE_RATE:
            raise InvalidRequestError(
                f"{self.name} takes at most {limit_s:g} s of audio per call, got "
                f"{audio.shape[0] / SAMPLE_RATE:.1f} s",
                code="audio_too_long",
            )
        return await call_off_loop(
            self.name, self.timeout_s, "transcript", self._transcribe_mono, audio, language, prompt
        )

    def _transcribe_mono(
        self, audio: "np.ndarray", language: str | None, prompt: str | None
    ) -> Transcript:
        import numpy as np

        samples = np.ascontiguousarray(audio, dtype=np.float32)  # (N,)
        if samples.ndim != 1:
            raise ValueError(f"audio must be mono (N,), got shape {samples.shape}")
        return self._transcribe_impl(samples, language, prompt)

    @abc.abstractmethod
    def _transcribe_impl(
        self, audio: "np.ndarray", language: str | None, prompt: str | None
    ) -> Transcript:
        """Blocking: transcribe float32 16 kHz mono samples, shape (N,), C-contiguous (the port
        has converted and checked them)."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what the adapter holds."""


class VoiceActivity(abc.ABC):
    """A voice activity model (e.g. Silero VAD: a speech probability per 512 samples at 16 kHz),
    loaded once per process. Each audio stream gets its own state from ``stream()``: the model and
    the state of one use of it are two types, as LiveKit's ``VAD.stream()`` -> ``VADStream``."""

    name: str = "voice_activity"
    window_samples: int = 512
    timeout_s: float = 10.0

    def stream(self) -> VoiceActivityStream:
        """A new stream with its own state over this (shared, thread-safe) model."""
        return self._stream_impl()

    @abc.abstractmethod
    def _stream_impl(self) -> VoiceActivityStream:
        """A fresh stream state over the loaded model."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what the adapter holds."""


class VoiceActivityStream(abc.ABC):
    """One audio stream's voice activity state over a ``VoiceActivity`` model."""

    def __init__(self, model: VoiceActivity) -> None:
        self.model = model

    @property
    def window_samples(self) -> int:
        return self.model.window_samples

    async def probabilities(self, audio: "np.ndarray") -> "np.ndarray":
        """One probability in [0, 1] per whole window of ``audio`` (float32 (N,), 16 kHz) and of
        what earlier calls left over; a trailing partial window waits for the next call. Runs off
        the event loop, within the model's ``timeout_s``, failures mapped to ``model_error``."""
        model = self.model
        return await call_off_loop(
            model.name, model.timeout_s, "speech probabilities", self._probabilities_impl, audio
        )

    @abc.abstractmethod
    def _probabilities_impl(self, audio: "np.ndarray") -> "np.ndarray":
        """Blocking: (N,) float32 -> (K,) float32 probabilities, one per completed window."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the stream's state (a new stream of audio starts)."""


# --------------------------------------------------------------------------------------------------
# Text to speech (spoken replies): float32 mono at 16 kHz out, like the audio in
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextToSpeechCapabilities:
    sample_rate: int = SAMPLE_RATE  # of what ``synthesize`` returns
    #: Longest text one call takes; the spoken-reply streamer sends a sentence at a time.
    max_text_chars: int = 2_000
    #: Voice names a session may ask for; None: not listed.
    voices: tuple[str, ...] | None = None


class TextToSpeech(abc.ABC):
    """Speaks a piece of text (a sentence of a reply). One blocking call per piece; streaming is
    built on top, sentence by sentence."""

    name: str = "text_to_speech"
    capabilities: TextToSpeechCapabilities = TextToSpeechCapabilities()
    timeout_s: float = 30.0

    async def synthesize(self, text: str, *, voice: str | None = None) -> "np.ndarray":
        """float32 samples (N,), mono, at ``capabilities.sample_rate``. Runs off the event loop."""
        text = text[: self.capabilities.max_text_chars]
        return await call_off_loop(
            self.name, self.timeout_s, "speech", self._synthesize_impl, text, voice
        )

    @abc.abstractmethod
    def _synthesize_impl(self, text: str, voice: str | None) -> "np.ndarray":
        """Blocking: speak ``text`` with ``voice`` (None: the adapter's default)."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what the adapter holds."""
