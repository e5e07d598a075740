"""Streaming transcription of the utterance being spoken, on a model that only transcribes whole
utterances (Whisper): the growing audio is re-transcribed in the background.

- A *partial* decode runs at most every ``interval_s`` while the user speaks (and only when the
  process's speech model is free: ``gate``). Words two successive decodes agree on are handed on
  as deltas (local agreement), never taken back.
- A *final candidate* decode starts as soon as the voice has been silent for ``settle`` samples,
  with zeros in place of the ``tail`` of silence the turn still waits for, so the model hears what
  it would hear once the turn ends. If no voiced audio came after it, it is the final transcript.
- ``final_text`` returns that, waiting for it if it is still running; otherwise (speech went on, or
  the client committed mid-speech) it decodes the committed audio once more.
- When a final candidate is ready while the turn still waits for its silence, ``on_settled`` hears
  of it (the pipeline then judges whether the words look finished: adaptive wait, early reply).

Positions are absolute sample indices of the connection's audio (see ``SampleBuffer``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from assistant.errors import AssistantError
from assistant.messages import new_id
from assistant.ports import SAMPLE_RATE, SpeechToText

log = logging.getLogger(__name__)

#: A partial decode needs at least this much new audio since the previous one.
MIN_NEW_SAMPLES = SAMPLE_RATE // 4


class SampleBuffer:
    """float32 samples addressed by absolute position: it holds ``[start, end)``."""

    def __init__(self) -> None:
        self._data = np.zeros(0, np.float32)  # (end - start - pending,)
        self._pending: list[np.ndarray] = []
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, audio: np.ndarray) -> None:
        self._pending.append(audio)
        self.end += audio.shape[0]

    def slice(self, begin: int, stop: int) -> np.ndarray:
        """A copy of samples ``[begin, stop)`` (clipped to what is held), shape (stop - begin,)."""
        self._compact()
        begin, stop = max(begin, self.start), min(stop, self.end)
        return self._data[begin - self.start : max(begin, stop) - self.start].copy()

    def drop_before(self, position: int) -> None:
        if position <= self.start:
            return
        self._compact()
        position = min(position, self.end)
        self._data = self._data[position - self.start :].copy()
        self.start = position

    def clear(self) -> None:
        self._data, self._pending, self.start = np.zeros(0, np.float32), [], self.end

    def _compact(self) -> None:
        if self._pending:
            self._data = np.concatenate([self._data, *self._pending])
            self._pending = []


@dataclass(eq=False)
class Utterance:
    """A turn being spoken: its audio from ``start``; what the decodes made of it so far."""

    start: int  # absolute sample
    settle: int = 0  # silence after ``voiced_end`` that makes a decode a final candidate (0: none)
    tail: int = 0  # silence that ends the turn (a final candidate is padded with as many zeros)
    item_id: str = field(default_factory=lambda: new_id("msg"))
    voiced_end: int = 0  # end of the last window that was not silence
    opened_at: float = field(default_factory=time.monotonic)
    last_decode_at: float = 0.0
    covered: int = 0  # end of the audio the newest finished decode took (0: none yet)
    text: str = ""  # that decode's transcript
    words: list[str] = field(default_factory=list)  # its words, for the agreement of the next
    emitted: list[str] = field(default_factory=list)  # words sent as deltas
    task: asyncio.Task[None] | None = None  # the decode in flight
    closed: bool = False
    #: A final candidate looked finished at this pause (until voice comes again).
    paused: bool = False

    def __post_init__(self) -> None:
        self.voiced_end = max(self.voiced_end, self.start)

    def final_ready(self) -> bool:
        """The newest decode took all the voiced audio and the silence after it."""
        return self.covered > self.start and self.covered >= self.voiced_end + self.settle


DeltaSink = Callable[[Utterance, str], Awaitable[None]]
SettledSink = Callable[[Utterance], Awaitable[None]]


class StreamingTranscriber:
    def __init__(
        self,
        stt: SpeechToText,
        buffer: SampleBuffer,
        on_delta: DeltaSink,
        *,
        gate: asyncio.Semaphore,
        interval_s: float = 1.0,
        language: str | None = None,
        on_settled: SettledSink | None = None,
    ) -> None:
        self.stt = stt
        self.buffer = buffer
        self.on_delta = on_delta
        self.on_settled = on_settled
        self.gate = gate
        self.interval_s = interval_s
        self.language = language

    def schedule(self, utterance: Utterance) -> None:
        """Start a background decode of the utterance so far when one is due."""
        if utterance.closed or utterance.task is not None:
            return
        end = self.buffer.end
        settled = utterance.settle > 0 and end - utterance.voiced_end >= utterance.settle
        if settled and not utterance.final_ready():
            pass  # the voice went quiet: decode now, it may be the final transcript
        elif settled or not self._partial_due(utterance, end):
            return
        utterance.task = asyncio.create_task(self._decode(utterance, end, candidate=settled))

    async def final_text(self, utterance: Utterance, audio: np.ndarray) -> tuple[str, bool]:
        """The committed utterance's transcript, and whether a decode made while it was spoken
        gave it. ``audio``: the committed samples (N,), decoded when no earlier decode fits."""
        utterance.closed = True
        if utterance.task is not None:  # a decode in flight may be the final one
            await asyncio.gather(utterance.task, return_exceptions=True)
        if utterance.final_ready():
            return utterance.text, True
        async with self.gate:
            transcript = await self.stt.transcribe(audio, language=self.language)
        return transcript.text, False

    def cancel(self, utterance: Utterance) -> None:
        utterance.closed = True
        if utterance.task is not None:
            utterance.task.cancel()

    def _partial_due(self, utterance: Utterance, end: int) -> bool:
        since = utterance.last_decode_at or utterance.opened_at
        return (
            time.monotonic() - since >= self.interval_s
            and end - max(utterance.covered, utterance.start) >= MIN_NEW_SAMPLES
            and not self.gate.locked()  # partials give way to other turns' decodes
        )

    async def _decode(self, utterance: Utterance, end: int, *, candidate: bool) -> None:
        utterance.last_decode_at = time.monotonic()
        audio = self.buffer.slice(utterance.start, end)  # (end - start,)
        missing = utterance.voiced_end + utterance.tail - end  # silence the turn still waits for
        if candidate and missing > 0:
            audio = np.concatenate([audio, np.zeros(missing, np.float32)])  # (N + missing,)
        try:
            async with self.gate:
                transcript = await self.stt.transcribe(audio, language=self.language)
        except AssistantError as exc:  # best effort: the final decode tries again
            log.warning("voice: partial transcription of %s failed: %s", utterance.item_id, exc)
            return
        finally:
            utterance.task = None
        utterance.covered, utterance.text = end, transcript.text
        delta = agreed_delta(utterance, transcript.text)
        if utterance.closed:
            return
        if delta:
            await self.on_delta(utterance, delta)
        if candidate and self.on_settled is not None and utterance.final_ready():
            await self.on_settled(utterance)
        self.schedule(utterance)


def agreed_delta(utterance: Utterance, text: str) -> str:
    """Local agreement: the words two successive decodes agree on are stable; those not sent yet
    are the delta. Words sent are never taken back."""
    words = text.split()
    agreed = 0
    for old, new in zip(utterance.words, words):
        if _norm(old) != _norm(new):
            break
        agreed += 1
    utterance.words = words
    sent = len(utterance.emitted)
    if agreed <= sent or [_norm(w) for w in words[:sent]] != [_norm(w) for w in utterance.emitted]:
        return ""
    fresh = words[sent:agreed]
    utterance.emitted.extend(fresh)
    return (" " if sent else "") + " ".join(fresh)


def _norm(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


__all__ = ["SampleBuffer", "StreamingTranscriber", "Utterance", "agreed_delta"]
