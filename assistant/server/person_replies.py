"""``PersonReplies``: a person's replies spoken on one voice connection (an agent who holds the
conversation types; the caller hears it with the session's TTS voice).

Each reply is spoken after the one before it, as ``response.output_audio.delta`` /
``.done`` under a response id of its own (there is no model response: no ``response.created`` or
``response.done``), addressed to the agent's item (``item_id``), so a client plays it as it plays
the bot's speech. ``stop`` (barge-in) cuts the one being spoken; ``close`` ends them all."""

from __future__ import annotations

import asyncio

import numpy as np

from assistant.messages import new_id
from assistant.ports import TextToSpeech
from assistant.protocol import ResponseOutputAudioDelta, ResponseOutputAudioDone
from assistant.server.outbox import Outbox
from assistant.voice.audio import float_to_base64_pcm16
from assistant.voice.spoken_reply import SpokenReply


class PersonReplies:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._last: asyncio.Task[None] | None = (
            None  # the latest reply's task (each awaits the one before)
        )
        self._speaking: SpokenReply | None = None

    def say(self, item_id: str, text: str, tts: TextToSpeech, voice: str | None) -> None:
        self._last = asyncio.create_task(self._speak(item_id, text, tts, voice, self._last))

    def stop(self) -> None:
        if self._speaking is not None:
            self._speaking.stop()

    def close(self) -> None:
        if self._last is not None:
            self._last.cancel()
        self.stop()

    async def _speak(
        self, item_id: str, text: str, tts: TextToSpeech, voice: str | None,
        before: asyncio.Task[None] | None,
    ) -> None:  # fmt: skip
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        response_id = new_id("resp")
        emit = self._outbox.emit

        def send(pcm: np.ndarray) -> None:
            delta = float_to_base64_pcm16(pcm)
            emit(ResponseOutputAudioDelta(response_id=response_id, item_id=item_id, delta=delta))

        spoken = self._speaking = SpokenReply(tts, send, voice=voice)
        spoken.feed(text)
        try:
            await spoken.finish()
        finally:
            if self._speaking is spoken:
                self._speaking = None
        if spoken.samples:
            emit(ResponseOutputAudioDone(response_id=response_id, item_id=item_id))
        if spoken.error is not None:
            self._outbox.emit_error(spoken.error)
