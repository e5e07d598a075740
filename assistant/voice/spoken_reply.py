"""Spoken replies: the reply's text deltas are cut into sentences; each sentence is synthesised by
the ``TextToSpeech`` port as soon as it is complete (while the text keeps streaming) and its audio
is handed on in short chunks, in order. The connection sends them as ``response.output_audio.delta``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

import numpy as np

from assistant.errors import AssistantError
from assistant.ports import TextToSpeech

#: A sentence ends at . ! ? ; or : followed by white space (closing quotes/brackets allowed
#: between), or at a line break.
_BOUNDARY = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
#: A "sentence" longer than this is cut at its last comma or space, so speech starts early.
MAX_SENTENCE_CHARS = 240
CHUNK_S = 0.5  # audio per delta


class SentenceSplitter:
    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS) -> None:
        self.max_chars = max_chars
        self._text = ""

    def feed(self, delta: str) -> list[str]:
        """The sentences ``delta`` completes."""
        self._text += delta
        sentences: list[str] = []
        while True:
            match = _BOUNDARY.search(self._text)
            if match is not None:
                cut = match.end()
            elif len(self._text) > self.max_chars:
                cut = _soft_cut(self._text[: self.max_chars])
            else:
                return sentences
            sentence, self._text = self._text[:cut].strip(), self._text[cut:]
            if sentence:
                sentences.append(sentence)

    def flush(self) -> list[str]:
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []


def _soft_cut(head: str) -> int:
    """Where to cut an over-long sentence: after its last comma in the second half, else at its
    last space, else anywhere."""
    comma = head.rfind(", ")
    cut = comma + 1 if comma > len(head) // 2 else head.rfind(" ")
    return cut if cut > 0 else len(head)


class SpokenReply:
    """Speaks one reply. ``feed`` the text deltas; ``finish`` speaks the rest and waits;
    ``cancel`` stops at once. ``emit`` gets float32 16 kHz chunks (N,) in order."""

    def __init__(
        self,
        tts: TextToSpeech,
        emit: Callable[[np.ndarray], None],
        *,
        voice: str | None = None,
        chunk_s: float = CHUNK_S,
    ) -> None:
        self.tts = tts
        self.emit = emit
        self.voice = voice
        self.chunk = max(1, int(chunk_s * tts.capabilities.sample_rate))
        self.samples = 0  # spoken so far
        self.error: AssistantError | None = None
        self._splitter = SentenceSplitter()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._speak())

    def feed(self, delta: str) -> None:
        for sentence in self._splitter.feed(delta):
            self._queue.put_nowait(sentence)

    async def finish(self) -> None:
        for sentence in self._splitter.flush():
            self._queue.put_nowait(sentence)
        self._queue.put_nowait(None)
        await asyncio.gather(self._task, return_exceptions=True)

    def stop(self) -> None:
        """Stop speaking now (barge-in); ``finish`` / ``cancel`` still wait for the task."""
        self._task.cancel()

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _speak(self) -> None:
        while (sentence := await self._queue.get()) is not None:
            try:
                audio = await self.tts.synthesize(sentence, voice=self.voice)  # (N,) float32
            except AssistantError as exc:  # the text goes on; the rest is not spoken
                self.error = exc
                return
            for begin in range(0, audio.shape[0], self.chunk):
                piece = audio[begin : begin + self.chunk]  # (<= chunk,)
                self.samples += piece.shape[0]
                self.emit(piece)
                # A long sentence is many chunks at once: let the connection write each before
                # the next, so only a client that does not read fills its send queue.
                await asyncio.sleep(0)


__all__ = ["SentenceSplitter", "SpokenReply"]
