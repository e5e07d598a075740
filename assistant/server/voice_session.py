"""The voice side of one ``/v1/realtime`` connection, a collaborator the connection holds:
audio in (binary PCM16 frames, ``input_audio_buffer.*``) through the connection's
``VoicePipeline`` (built on the first audio), its domain events mapped to wire events, spoken
turns stored and answered, barge-in, the session's voice settings, and spoken replies
(``response.output_audio.delta``).

Early replies: at a pause whose words look finished (``TurnPaused``) the reply starts at once into
a buffer (``Responses.speculate``); when the turn ends with the same transcript and its message
is stored, that reply becomes the turn's response (``Responses.adopt``); if voice comes back, the
buffer is cleared, or the final transcript differs, it is dropped: nothing sent, nothing stored.

Handed to a person: while an agent holds the conversation (status ``human``) a spoken turn is
stored (the agent reads it live) and not answered; the agent's replies reach this connection on
the session's stream (``speak_added``) and are spoken with the session's voice, as
``response.output_audio.*`` under a response id of their own (no model response), one after the
other, stopped by barge-in as the bot's are.

What it needs from the connection is passed in: the outbox to emit into, the responses to start
and interrupt, and a way to store a message as the session's writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from assistant.errors import AssistantError, InvalidEventError, InvalidRequestError
from assistant.messages import AudioPart, Message
from assistant.orchestrator import ResponseRun
from assistant.ports import AppendResult, TextToSpeech
from assistant.protocol import (
    ConversationItemCreated,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCleared,
    InputAudioBufferCommit,
    InputAudioBufferCommitted,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioTranscriptionCompleted,
    InputAudioTranscriptionDelta,
    InputAudioTranscriptionFailed,
    ResponseConfig,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    SessionConfig,
    WireError,
    wire_item,
)
from assistant.server.metrics import Metrics
from assistant.server.outbox import Outbox
from assistant.server.person_replies import PersonReplies
from assistant.server.responses import Responses
from assistant.server.voice_settings import (
    check_audio_format,
    check_voice,
    voice_config_from_wire,
    voice_config_to_wire,
)
from assistant.voice.audio import decode_base64, float_to_base64_pcm16, pcm16_to_float
from assistant.voice.models import SpeechModels
from assistant.voice.pipeline import (
    BufferCleared,
    BufferCommitted,
    SpeechBegan,
    SpeechEnded,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    TurnPaused,
    TurnResumed,
    VoiceConfig,
    VoiceEvent,
    VoicePipeline,
)
from assistant.voice.speculation import Speculation
from assistant.voice.spoken_reply import SpokenReply
from assistant.voice.uploads import has_pending_audio, transcribe_pending

AddMessage = Callable[[Message], Awaitable[AppendResult]]
VOICE_EVENTS = (InputAudioBufferAppend, InputAudioBufferCommit, InputAudioBufferClear)


class VoiceSession:
    def __init__(
        self,
        speech: SpeechModels | None,
        outbox: Outbox,
        responses: Responses,
        add_message: AddMessage,
        metrics: Metrics,
    ) -> None:
        self.speech = speech if speech is not None and speech.enabled else None
        self._outbox = outbox
        self._responses = responses
        self._add_message = add_message
        self._metrics = metrics
        self._pipeline: VoicePipeline | None = None
        self._defaults = (
            VoiceConfig.from_settings(speech.settings.voice, speech.settings.asr.language)
            if speech is not None
            else VoiceConfig(turn_detection=None)
        )
        self.config = self._defaults
        self.modalities: list[str] = ["text"]
        self._tts: TextToSpeech | None = None
        self._tts_voice: str | None = None
        self._spoken: SpokenReply | None = None
        self._early: Speculation | None = None  # the early reply to the turn being spoken
        self._dropped: set[Speculation] = set()  # dropped, their generation still ending
        self._people = PersonReplies(outbox)  # an agent's replies, spoken
        responses.voice = self

    # -- the connection's side ---------------------------------------------------------------------

    def session_fields(self) -> dict[str, Any]:
        """The voice fields of the wire session (``session.created`` / ``.updated``)."""
        return {
            "modalities": self.modalities,
            "voice": self._tts_voice,
            "turn_detection": voice_config_to_wire(self.config) if self.speech else None,
        }

    async def handle(self, event: object) -> None:
        """An ``input_audio_buffer.*`` event (one of ``VOICE_EVENTS``)."""
        if isinstance(event, InputAudioBufferAppend):
            await self._append(decode_base64(event.audio))
        elif isinstance(event, InputAudioBufferCommit):
            await (await self._voice()).commit()
        elif isinstance(event, InputAudioBufferClear):
            await (await self._voice()).clear()

    async def handle_bytes(self, data: bytes) -> None:
        """A binary frame: raw PCM16 little-endian 16 kHz mono, appended to the audio buffer."""
        if self.speech is None:
            raise InvalidEventError("binary frames are not accepted here", code="unsupported_frame")
        self._metrics.event_in("input_audio_buffer.append")
        await self._append(data)

    async def update(self, config: SessionConfig) -> None:
        """The voice fields of ``session.update``, checked before anything changes."""
        check_audio_format(config.input_audio_format)
        check_audio_format(config.output_audio_format)
        if not {"modalities", "turn_detection", "voice"} & config.model_fields_set:
            return
        speech = self._require_speech()
        if (config.modalities and "audio" in config.modalities) or config.voice:
            self._tts = await speech.tts()
            if config.voice:
                self._tts_voice = check_voice(self._tts, config.voice)
        if config.modalities:
            self.modalities = list(dict.fromkeys(config.modalities))
        if "turn_detection" in config.model_fields_set:
            self.config = voice_config_from_wire(self.config, self._defaults, config.turn_detection)
            if self._pipeline is not None:
                self._drop_early()
                self._pipeline.configure(self.config)

    async def transcribe_uploads(self, message: Message) -> Message:
        """Uploaded audio files in a client item, transcribed (refused when audio is off)."""
        if not has_pending_audio(message):
            return message
        return await transcribe_pending(self._require_speech(), message)

    async def aclose(self) -> None:
        self._people.close()
        if self._pipeline is not None:
            await self._pipeline.aclose()
        self._drop_early()
        for speculation in list(self._dropped):
            await speculation.wait()

    # -- spoken replies (``Responses.voice``) ------------------------------------------------------

    def start(self, run: ResponseRun) -> _Speaker | None:
        if self._tts is None or "audio" not in self.modalities:
            return None
        emit = self._outbox.emit

        def send(pcm: np.ndarray) -> None:
            delta = float_to_base64_pcm16(pcm)
            emit(ResponseOutputAudioDelta(response_id=run.id, item_id=run.item_id, delta=delta))

        self._spoken = SpokenReply(self._tts, send, voice=self._tts_voice)
        return _Speaker(self._spoken, self._outbox, self._spoken_ended)

    def _spoken_ended(self, spoken: SpokenReply) -> None:
        if self._spoken is spoken:
            self._spoken = None

    def speak_added(self, item: dict[str, Any]) -> None:
        """An item on the session's stream (``SessionFeed.on_item``): a person's reply is spoken
        when this connection speaks, after the one before it."""
        if self._tts is None or "audio" not in self.modalities:
            return
        if item.get("role") != "assistant" or not item.get("author"):
            return
        text = " ".join(part.get("text") or "" for part in item.get("content") or ()).strip()
        if text:
            self._people.say(str(item["id"]), text, self._tts, self._tts_voice)

    def _person_answers(self) -> bool:
        turns = self._responses.turns
        return turns is not None and turns.status == "human"

    # -- audio in ----------------------------------------------------------------------------------

    def _require_speech(self) -> SpeechModels:
        if self.speech is None:
            raise InvalidRequestError(
                "audio is not enabled on this server", code="unsupported_content"
            )
        return self.speech

    async def _voice(self) -> VoicePipeline:
        """The connection's voice pipeline, built with the first audio (the speech models load on
        first use in the process)."""
        if self._pipeline is None:
            speech = self._require_speech()
            stt, vad = await speech.stt(), await speech.vad_stream()
            if self._pipeline is None:
                self._pipeline = VoicePipeline(
                    stt, vad, self.config, self._on_event, gate=speech.gate
                )
        return self._pipeline

    async def _append(self, data: bytes) -> None:
        audio = pcm16_to_float(data, self.config.max_chunk_bytes)  # checked before models load
        await (await self._voice()).append(audio)

    async def _on_event(self, event: VoiceEvent) -> None:
        """The voice pipeline's sink: domain events to wire events; a finished turn is stored."""
        emit = self._outbox.emit
        if isinstance(event, SpeechBegan):
            emit(InputAudioBufferSpeechStarted(audio_start_ms=event.audio_start_ms, item_id=event.item_id))  # fmt: skip
            if self.config.interrupt_response:
                self._barge_in()
        elif isinstance(event, SpeechEnded):
            emit(InputAudioBufferSpeechStopped(audio_end_ms=event.audio_end_ms, item_id=event.item_id))  # fmt: skip
        elif isinstance(event, BufferCommitted):
            emit(InputAudioBufferCommitted(item_id=event.item_id))
        elif isinstance(event, TurnPaused):
            self._speculate(event)
        elif isinstance(event, TurnResumed):
            self._drop_early()
        elif isinstance(event, BufferCleared):
            self._drop_early()
            emit(InputAudioBufferCleared())
        elif isinstance(event, TranscriptDelta):
            emit(InputAudioTranscriptionDelta(item_id=event.item_id, delta=event.delta))
        elif isinstance(event, TranscriptFailed):
            exc = event.error
            wire = WireError(type=exc.type, code=exc.code, message=exc.message)
            emit(InputAudioTranscriptionFailed(item_id=event.item_id, error=wire))
            self._drop_early()
            self._outbox.emit_error(exc)
        elif isinstance(event, TranscriptCompleted):
            emit(InputAudioTranscriptionCompleted(item_id=event.item_id, transcript=event.transcript))  # fmt: skip
            await self._add_spoken_turn(event)

    def _barge_in(self) -> None:
        """The user started speaking: the response streaming now stops (it is stored as
        ``interrupted``) and so does its speech."""
        self._responses.interrupt()
        if self._spoken is not None:
            self._spoken.stop()
        self._people.stop()

    async def _add_spoken_turn(self, event: TranscriptCompleted) -> None:
        """Store the transcript as the user's message; answer it when the server VAD ended it
        (with the early reply when it was made from this very transcript)."""
        early, self._early = self._early, None
        same = (event.item_id, event.transcript)
        if early is not None and (early.message.id, early.transcript) != same:
            self._drop(early)
            early = None
        if not event.transcript.strip():
            return  # noise the VAD took for speech: nothing to store or answer
        try:
            await self._responses.wait()  # a reply still running is stored first
            message = _spoken(event.item_id, event.transcript, event.duration_s)
            result = await self._add_message(message)
        except AssistantError as exc:
            if early is not None:
                self._drop(early)
            self._outbox.emit_error(exc)
            return
        self._outbox.emit(ConversationItemCreated(item=wire_item(result.message)))
        answer = event.by_vad and self.config.create_response and not self._person_answers()
        if not (answer and self._responses.running is None):
            if early is not None:
                self._drop(early)
            return
        if early is not None and early.outcome == "pending" and early.matches_store():
            try:
                await self._responses.adopt(early)
                self._metrics.early_response("committed")
                return
            except AssistantError:
                pass  # refused (the key's limits): the normal start says why
        if early is not None:
            self._drop(early)
        await self._responses.start(ResponseConfig())

    def _speculate(self, event: TurnPaused) -> None:
        """The words so far look finished: start the reply, into a buffer."""
        self._drop_early()
        if not self.config.create_response or self._responses.running is not None:
            return
        if self._responses.held:  # a person has the conversation: the gate answers the turn
            return
        message = _spoken(event.item_id, event.transcript, None)
        self._early = self._responses.speculate(message)
        self._metrics.early_response("started")

    def _drop_early(self) -> None:
        early, self._early = self._early, None
        if early is not None:
            self._drop(early)

    def _drop(self, early: Speculation) -> None:
        """Nothing of it is sent or stored; its generation ends in the background."""
        if early.outcome != "pending":
            return
        early.drop()
        self._metrics.early_response("dropped")
        self._dropped.add(early)
        task = asyncio.ensure_future(early.wait())
        task.add_done_callback(lambda _: self._dropped.discard(early))


def _spoken(item_id: str, transcript: str, duration_s: float | None) -> Message:
    duration = None if duration_s is None else round(duration_s, 3)
    part = AudioPart(transcript=transcript, duration_s=duration)
    return Message(id=item_id, role="user", content=(part,))


class _Speaker:
    """One response's spoken reply (``ReplySpeech``)."""

    def __init__(
        self, spoken: SpokenReply, outbox: Outbox, ended: Callable[[SpokenReply], None]
    ) -> None:
        self._spoken = spoken
        self._outbox = outbox
        self._ended = ended

    def feed(self, delta: str) -> None:
        self._spoken.feed(delta)

    async def end(self, run: ResponseRun) -> None:
        spoken = self._spoken
        if run.cancelled:
            await spoken.cancel()
        else:
            await spoken.finish()
        self._ended(spoken)
        if spoken.samples:
            self._outbox.emit(ResponseOutputAudioDone(response_id=run.id, item_id=run.item_id))
        if spoken.error is not None:
            self._outbox.emit_error(spoken.error)
