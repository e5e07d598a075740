"""The voice pipeline of one connection: the input audio buffer, end-of-turn detection and
streaming transcription. Transport-agnostic: it takes PCM16 audio and commands, and hands domain
events (``VoiceEvent``) to an async sink, which the WebSocket maps to wire events.

    append ──> VoiceActivity (per 32 ms window) ──> TurnDetector ──> SpeechStarted / SpeechStopped
                      │                                                      │
            the utterance so far ──> partial decodes (background) ──> TranscriptDelta
                                                                             │
             commit (VAD or client) ──> final transcript ──────────> TranscriptCompleted

Streaming transcription (``assistant.voice.streaming_transcript``) re-transcribes the growing utterance
in the background, at most every ``partial_interval_s``. As soon as the voice has been silent for
``SETTLE_MS`` (long before the ``silence_duration_ms`` that ends the turn) it transcribes the
utterance up to there; if no more speech comes, that decode *is* the final transcript, ready when
the turn ends or soon after. Only when speech went on past it (or the client committed mid-speech)
is the utterance decoded again. Partial decodes give way when the process's speech model is busy
(``gate``); final ones queue.

Adaptive end of turn: when that settled decode's words look like a finished sentence
(``assistant.voice.end_of_turn``), the detector is hurried (the turn ends after
``eager_silence_ms`` rather than ``silence_duration_ms``) and, with ``early_response``, a
``TurnPaused`` tells the sink it may start the reply; voice coming back before the turn ends
takes both back (``TurnResumed``).

Times (``audio_start_ms`` / ``audio_end_ms``) count from the connection's first audio.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace

import numpy as np

from assistant.config import VoiceSettings, voice_default
from assistant.errors import AssistantError, InvalidRequestError
from assistant.ports import SAMPLE_RATE, SpeechToText, VoiceActivityStream
from assistant.voice.audio import pcm16_to_float
from assistant.voice.end_of_turn import end_of_turn
from assistant.voice.events import (
    BufferCleared,
    BufferCommitted,
    Sink,
    SpeechBegan,
    SpeechEnded,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    TurnPaused,
    TurnResumed,
    VoiceEvent,
)
from assistant.voice.streaming_transcript import SampleBuffer, StreamingTranscriber, Utterance
from assistant.voice.turn_detection import (
    SpeechStarted,
    SpeechStopped,
    TurnDetectionConfig,
    TurnDetector,
)

log = logging.getLogger(__name__)

#: Silence after the last voiced window before the utterance is decoded as a final candidate.
SETTLE_MS = 32
#: A manual commit needs at least this much audio.
MIN_COMMIT_MS = 100
_MS = SAMPLE_RATE // 1000  # samples per millisecond


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceConfig:
    """A connection's voice settings; the defaults are ``VoiceSettings``'s (the one source)."""

    #: None: no server VAD; the client commits the buffer (``input_audio_buffer.commit``).
    turn_detection: TurnDetectionConfig | None = field(default_factory=TurnDetectionConfig)
    create_response: bool = True
    interrupt_response: bool = True
    max_turn_s: float = voice_default("max_turn_s")
    max_chunk_bytes: int = voice_default("max_chunk_bytes")
    partial_interval_s: float = voice_default("partial_interval_s")
    language: str | None = None
    #: ``TurnPaused`` / ``TurnResumed`` are sent (the reply may start before the turn ends).
    early_response: bool = voice_default("early_response")

    @classmethod
    def from_settings(cls, voice: VoiceSettings, language: str | None = None) -> VoiceConfig:
        detection = None
        if voice.turn_detection:
            detection = TurnDetectionConfig(
                threshold=voice.threshold,
                prefix_padding_ms=voice.prefix_padding_ms,
                silence_duration_ms=voice.silence_duration_ms,
                eager_silence_ms=voice.eager_silence_ms,
                min_speech_ms=voice.min_speech_ms,
                max_speech_ms=int(voice.max_turn_s * 1000),
            )
        return cls(
            turn_detection=detection,
            early_response=voice.early_response,
            max_turn_s=voice.max_turn_s,
            max_chunk_bytes=voice.max_chunk_bytes,
            partial_interval_s=voice.partial_interval_s,
            language=language,
        )

    def with_turn_detection(
        self, detection: TurnDetectionConfig | None, *, create_response: bool = True,
        interrupt_response: bool = True, early_response: bool | None = None,
    ) -> VoiceConfig:
        if detection is not None:
            detection = replace(detection, max_speech_ms=int(self.max_turn_s * 1000))
        early = self.early_response if early_response is None else early_response
        return replace(
            self, turn_detection=detection, create_response=create_response,
            interrupt_response=interrupt_response, early_response=early,
        )




# -- the pipeline ----------------------------------------------------------------------------------


class VoicePipeline:
    def __init__(
        self,
        stt: SpeechToText,
        vad: VoiceActivityStream,
        config: VoiceConfig,
        sink: Sink,
        *,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.vad = vad  # this connection's own stream state
        self.config = config
        self.sink = sink
        self.buffer = SampleBuffer()
        self.transcriber = StreamingTranscriber(
            stt, self.buffer, self._on_delta, gate=gate or asyncio.Semaphore(1),
            interval_s=config.partial_interval_s, language=config.language,
            on_settled=self._on_settled,
        )  # fmt: skip
        self._utterance: Utterance | None = None
        self._finals: set[asyncio.Task[None]] = set()
        self._last_final: asyncio.Task[None] | None = None
        self._start_detector()

    # -- commands ---------------------------------------------------------------------------------

    async def append_pcm16(self, data: bytes) -> None:
        """Raw PCM16 little-endian 16 kHz mono. ``InvalidRequestError`` (``audio_too_large``,
        ``invalid_audio_bytes``, ``audio_too_long``) leaves the buffer as it was."""
        await self.append(pcm16_to_float(data, self.config.max_chunk_bytes))

    async def append(self, audio: np.ndarray) -> None:
        """float32 samples (N,), 16 kHz mono (already checked and converted)."""
        if audio.shape[0] == 0:
            return
        if self._detector is None:
            await self._append_manual(audio)
        else:
            await self._append_detected(audio)
        if self._utterance is not None:
            self.transcriber.schedule(self._utterance)

    async def commit(self) -> None:
        """End the user's turn now (``input_audio_buffer.commit``)."""
        if self._detector is not None:
            stopped = self._detector.commit()
            if stopped is None:
                raise _commit_empty("no speech has started since the last turn")
            await self._on_stopped(stopped, by_vad=False)
            return
        utterance = self._utterance
        if utterance is None or len(self.buffer) < MIN_COMMIT_MS * _MS:
            raise _commit_empty(f"the buffer holds less than {MIN_COMMIT_MS} ms of audio")
        audio = self.buffer.slice(utterance.start, self.buffer.end)  # (N,)
        self.buffer.clear()
        await self._close(utterance, audio, by_vad=False)

    async def clear(self) -> None:
        """Drop the buffered audio and any turn in progress (``input_audio_buffer.clear``)."""
        self._abandon()
        await self.sink(BufferCleared())

    def configure(self, config: VoiceConfig) -> None:
        """New settings; a turn in progress is dropped when turn detection changes."""
        changed = config.turn_detection != self.config.turn_detection
        self.config = config
        self.transcriber.interval_s = config.partial_interval_s
        self.transcriber.language = config.language
        if changed:
            self._abandon()

    async def aclose(self) -> None:
        """Stop all background work (the connection is closing)."""
        self._abandon()
        tasks = list(self._finals)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every committed turn has its transcript handed on (tests, benchmarks)."""
        while self._finals:
            await asyncio.gather(*list(self._finals), return_exceptions=True)

    # -- appending --------------------------------------------------------------------------------

    async def _append_manual(self, audio: np.ndarray) -> None:
        limit = int(self.config.max_turn_s * SAMPLE_RATE)
        if len(self.buffer) + audio.shape[0] > limit:
            raise InvalidRequestError(
                f"the audio buffer would pass {self.config.max_turn_s:g} s; commit or clear it",
                code="audio_too_long",
            )
        if self._utterance is None:
            self._utterance = Utterance(start=self.buffer.start)
        self.buffer.append(audio)
        self._utterance.voiced_end = self.buffer.end

    async def _append_detected(self, audio: np.ndarray) -> None:
        assert self._detector is not None
        probs = await self.vad.probabilities(audio)  # (K,)
        width = self.vad.window_samples
        waiting = self.buffer.end - self._origin - self._windows * width  # the detector's tail
        self.buffer.append(audio)
        silence = self._detector.config.silence_threshold
        for k in range(probs.shape[0]):  # window by window, each fed just its own new samples
            piece = audio[max(0, k * width - waiting) : (k + 1) * width - waiting]
            events = self._detector.feed(probs[k : k + 1], piece)
            self._windows += 1
            window_end = self._origin + self._windows * width
            if self._utterance is not None and probs[k] >= silence:
                self._utterance.voiced_end = window_end
                if self._utterance.paused:
                    await self._resumed(self._utterance)
            for event in events:
                if isinstance(event, SpeechStarted):
                    await self._on_started(event, window_end)
                elif isinstance(event, SpeechStopped):
                    await self._on_stopped(event, by_vad=True)
        rest = audio[max(0, probs.shape[0] * width - waiting) :]  # waits for its window
        self._detector.feed(probs[:0], rest)
        if self._utterance is None:  # idle: keep only what a prefix padding may reach back to
            config = self._detector.config
            keep = config.samples(config.prefix_padding_ms + config.min_speech_ms) + 2 * width
            self.buffer.drop_before(self.buffer.end - keep)

    async def _on_started(self, event: SpeechStarted, window_end: int) -> None:
        assert self._detector is not None
        start = self._origin + event.audio_start_ms * _MS
        silence = self._detector.config.samples(self._detector.config.silence_duration_ms)
        self._utterance = Utterance(
            start=start, settle=SETTLE_MS * _MS, tail=silence, voiced_end=window_end
        )
        await self.sink(SpeechBegan(self._utterance.item_id, self._ms(start)))

    async def _on_stopped(self, event: SpeechStopped, *, by_vad: bool) -> None:
        utterance = self._utterance
        if utterance is None:  # cannot happen: a stop follows a start
            return
        end = self._origin + event.audio_end_ms * _MS
        self.buffer.drop_before(end)
        await self.sink(SpeechEnded(utterance.item_id, self._ms(end)))
        await self._close(utterance, event.audio, by_vad=by_vad)

    # -- turns ------------------------------------------------------------------------------------

    async def _close(self, utterance: Utterance, audio: np.ndarray, *, by_vad: bool) -> None:
        """The turn is committed: its transcript is finished in the background, in turn order."""
        utterance.closed = True
        self._utterance = None
        await self.sink(BufferCommitted(utterance.item_id))
        task = asyncio.create_task(self._finish(utterance, audio, by_vad, self._last_final))
        self._last_final = task
        self._finals.add(task)
        task.add_done_callback(self._finals.discard)

    async def _finish(
        self, utterance: Utterance, audio: np.ndarray, by_vad: bool,
        previous: asyncio.Task[None] | None,
    ) -> None:
        duration_s = audio.shape[0] / SAMPLE_RATE
        try:
            text, from_stream = await self.transcriber.final_text(utterance, audio)
            event: VoiceEvent = TranscriptCompleted(
                utterance.item_id, text, duration_s, by_vad=by_vad, from_stream=from_stream
            )
        except AssistantError as exc:
            event = TranscriptFailed(utterance.item_id, exc)
        if previous is not None:  # the previous turn's transcript is handed on first
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await self.sink(event)
        except Exception:  # the sink reports its own errors; a bug must not kill the pipeline
            log.exception("voice: handing on the transcript of %s failed", utterance.item_id)

    async def _on_delta(self, utterance: Utterance, delta: str) -> None:
        await self.sink(TranscriptDelta(utterance.item_id, delta))

    async def _on_settled(self, utterance: Utterance) -> None:
        """A final candidate is ready while the turn waits for its silence."""
        if self._detector is None or utterance is not self._utterance:
            return
        if not end_of_turn(utterance.text).finished:
            return
        self._detector.hurry()
        utterance.paused = True
        if self.config.early_response:
            await self.sink(TurnPaused(utterance.item_id, utterance.text))

    async def _resumed(self, utterance: Utterance) -> None:
        utterance.paused = False
        if self._detector is not None:
            self._detector.hurry(False)
        if self.config.early_response:
            await self.sink(TurnResumed(utterance.item_id))

    def _abandon(self) -> None:
        """Forget the buffer and the turn in progress; detection starts afresh."""
        if self._utterance is not None:
            self.transcriber.cancel(self._utterance)
            self._utterance = None
        self.buffer.clear()
        self._start_detector()

    def _start_detector(self) -> None:
        detection = self.config.turn_detection
        if detection is not None and detection.window_samples != self.vad.window_samples:
            detection = replace(detection, window_samples=self.vad.window_samples)
        self._detector = TurnDetector(detection) if detection is not None else None
        self.vad.reset()
        self._origin = self.buffer.end  # absolute sample of the detector's time 0
        self._windows = 0

    def _ms(self, position: int) -> int:
        return position // _MS


def _commit_empty(why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"nothing to commit: {why}", code="input_audio_buffer_commit_empty"
    )


__all__ = [
    "BufferCleared",
    "BufferCommitted",
    "Sink",
    "SpeechBegan",
    "SpeechEnded",
    "TranscriptCompleted",
    "TranscriptDelta",
    "TranscriptFailed",
    "TurnPaused",
    "TurnResumed",
    "VoiceConfig",
    "VoiceEvent",
    "VoicePipeline",
]
