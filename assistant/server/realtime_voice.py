"""The voice half of a ``/v1/realtime`` connection, as a mixin of ``RealtimeConnection``: audio in
(binary PCM16 frames, ``input_audio_buffer.*``) through the connection's ``VoicePipeline``, its
domain events mapped to wire events, spoken turns stored and answered, barge-in, uploaded audio
transcribed, the session's voice settings, and spoken replies (``response.output_audio.delta``).

It uses the connection's ``emit`` / ``emit_error``, ``orchestrator``, ``session``, ``_lease``,
``_run`` / ``_run_task`` and ``_start_response``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from assistant.audio import decode_base64, float_to_base64_pcm16
from assistant.errors import AssistantError, InvalidEventError
from assistant.messages import AudioPart, Message
from assistant.orchestrator import ResponseRun
from assistant.ports import TextToSpeech
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
    InputItem,
    ResponseConfig,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    SessionConfig,
    WireError,
    message_from_input,
    wire_item,
)
from assistant.speech import (
    SpeechModels,
    check_audio_format,
    check_voice,
    has_audio,
    transcribe_item_audio,
    voice_config_from_wire,
    voice_config_to_wire,
    with_audio_durations,
)
from assistant.spoken_reply import SpokenReply
from assistant.voice import (
    BufferCleared,
    BufferCommitted,
    SpeechBegan,
    SpeechEnded,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    VoiceConfig,
    VoiceEvent,
    VoicePipeline,
    check_pcm16_chunk,
)

if TYPE_CHECKING:
    from assistant.orchestrator import Orchestrator
    from assistant.server.metrics import Metrics
    from assistant.turn_lease import TurnLease


class VoiceMixin:
    # provided by RealtimeConnection
    orchestrator: Orchestrator
    metrics: Metrics
    session: Any
    _lease: TurnLease
    _run: ResponseRun | None
    _run_task: asyncio.Task[None] | None

    def emit(self, event: object) -> None: ...
    def emit_error(self, exc: AssistantError, event_id: str | None = None) -> None: ...
    def _start_response(self, config: ResponseConfig, event_id: str | None) -> None: ...

    def _init_voice(self, speech: SpeechModels | None) -> None:
        """The pipeline is built on the first audio; these are the session's voice settings."""
        self.speech = speech if speech is not None and speech.enabled else None
        self._voice: VoicePipeline | None = None
        self._voice_defaults = (
            VoiceConfig.from_settings(speech.settings.voice, speech.settings.asr.language)
            if speech is not None
            else VoiceConfig(turn_detection=None)
        )
        self._voice_config = self._voice_defaults
        self._modalities: list[str] = ["text"]
        self._tts: TextToSpeech | None = None
        self._tts_voice: str | None = None
        self._spoken: SpokenReply | None = None
        self._barged_in: set[str] = set()  # ids of responses cut by the user's speech

    def _voice_session_fields(self) -> dict[str, Any]:
        """The voice fields of the wire session (``session.created`` / ``.updated``)."""
        return {
            "modalities": self._modalities,
            "voice": self._tts_voice,
            "turn_detection": voice_config_to_wire(self._voice_config) if self.speech else None,
        }

    async def _dispatch_voice(self, event: object) -> bool:
        """Handle an ``input_audio_buffer.*`` event; False when ``event`` is not one."""
        if isinstance(event, InputAudioBufferAppend):
            await self._append_audio(decode_base64(event.audio))
        elif isinstance(event, InputAudioBufferCommit):
            await (await self._voice_pipeline()).commit()
        elif isinstance(event, InputAudioBufferClear):
            await (await self._voice_pipeline()).clear()
        else:
            return False
        return True

    async def _close_voice(self) -> None:
        if self._voice is not None:
            await self._voice.aclose()

    async def _message_from_item(self, item: InputItem) -> Message:
        """A client item as a message; uploaded audio files are transcribed into it first."""
        made: list[Any] = []
        if self.speech is not None and has_audio(item):
            item, made = await transcribe_item_audio(self.speech, item)
        return with_audio_durations(message_from_input(item), made)

    def _emit_upload_transcripts(self, message: Message) -> None:
        for index, part in enumerate(message.content):
            if isinstance(part, AudioPart):
                self.emit(
                    InputAudioTranscriptionCompleted(
                        item_id=message.id, content_index=index, transcript=part.transcript
                    )
                )

    async def _handle_bytes(self, data: bytes) -> None:
        """A binary frame: raw PCM16 little-endian 16 kHz mono, appended to the audio buffer."""
        if self.speech is None:
            self.emit_error(
                InvalidEventError("binary frames are not accepted here", code="unsupported_frame")
            )
            return
        self.metrics.event_in("input_audio_buffer.append")
        try:
            await self._append_audio(data)
        except AssistantError as exc:
            self.emit_error(exc)

    def _require_speech(self) -> SpeechModels:
        if self.speech is None:
            raise InvalidEventError("audio is not enabled on this server", code="unsupported_content")
        return self.speech

    async def _voice_pipeline(self) -> VoicePipeline:
        """The connection's voice pipeline, built with the first audio (the speech models load on
        first use in the process)."""
        if self._voice is None:
            speech = self._require_speech()
            stt, vad = await speech.stt(), await speech.vad_stream()
            if self._voice is None:
                self._voice = VoicePipeline(
                    stt, vad, self._voice_config, self._on_voice_event, gate=speech.gate
                )
        return self._voice

    async def _append_audio(self, data: bytes) -> None:
        check_pcm16_chunk(data, self._voice_config.max_chunk_bytes)  # before any model loads
        await (await self._voice_pipeline()).append_pcm16(data)

    async def _update_voice_settings(self, config: SessionConfig) -> None:
        """The voice fields of ``session.update``, checked before anything changes."""
        check_audio_format(config.input_audio_format)
        check_audio_format(config.output_audio_format)
        voice_fields = {"modalities", "turn_detection", "voice"} & config.model_fields_set
        if not voice_fields:
            return
        speech = self._require_speech()
        if (config.modalities and "audio" in config.modalities) or config.voice:
            self._tts = await speech.tts()
            if config.voice:
                self._tts_voice = check_voice(self._tts, config.voice)
        if config.modalities:
            self._modalities = list(dict.fromkeys(config.modalities))
        if "turn_detection" in config.model_fields_set:
            self._voice_config = voice_config_from_wire(
                self._voice_config, self._voice_defaults, config.turn_detection
            )
            if self._voice is not None:
                self._voice.configure(self._voice_config)

    async def _on_voice_event(self, event: VoiceEvent) -> None:
        """The voice pipeline's sink: domain events to wire events; a finished turn is stored."""
        if isinstance(event, SpeechBegan):
            started = InputAudioBufferSpeechStarted(
                audio_start_ms=event.audio_start_ms, item_id=event.item_id
            )
            self.emit(started)
            if self._voice_config.interrupt_response:
                self._barge_in()
        elif isinstance(event, SpeechEnded):
            self.emit(
                InputAudioBufferSpeechStopped(audio_end_ms=event.audio_end_ms, item_id=event.item_id)
            )
        elif isinstance(event, BufferCommitted):
            self.emit(InputAudioBufferCommitted(item_id=event.item_id))
        elif isinstance(event, BufferCleared):
            self.emit(InputAudioBufferCleared())
        elif isinstance(event, TranscriptDelta):
            self.emit(InputAudioTranscriptionDelta(item_id=event.item_id, delta=event.delta))
        elif isinstance(event, TranscriptFailed):
            exc = event.error
            wire = WireError(type=exc.type, code=exc.code, message=exc.message)
            self.emit(InputAudioTranscriptionFailed(item_id=event.item_id, error=wire))
            self.emit_error(exc)
        elif isinstance(event, TranscriptCompleted):
            self.emit(
                InputAudioTranscriptionCompleted(item_id=event.item_id, transcript=event.transcript)
            )
            await self._add_spoken_turn(event)

    def _barge_in(self) -> None:
        """The user started speaking: the response streaming now stops (it is stored as
        ``interrupted``) and so does its speech."""
        if self._run is not None:
            self._barged_in.add(self._run.id)
            self._run.cancel()
        if self._spoken is not None:
            self._spoken.stop()

    async def _add_spoken_turn(self, event: TranscriptCompleted) -> None:
        """Store the transcript as the user's message; answer it when the server VAD ended it."""
        if not event.transcript.strip():
            return  # noise the VAD took for speech: nothing to store or answer
        try:
            task = self._run_task
            if task is not None and not task.done():  # a reply still running is stored first
                await asyncio.wait({task})  # (not cancelled with us, unlike a plain await)
            part = AudioPart(transcript=event.transcript, duration_s=round(event.duration_s, 3))
            message = Message(id=event.item_id, role="user", content=(part,))
            result = await self.orchestrator.add_item(self.session.id, message, self._lease)
        except AssistantError as exc:
            self.emit_error(exc)
            return
        self.emit(ConversationItemCreated(item=wire_item(result.message)))
        if event.by_vad and self._voice_config.create_response and self._run is None:
            self._start_response(ResponseConfig(), None)

    def _speaker(self, run: ResponseRun) -> SpokenReply | None:
        if self._tts is None:
            return None

        def emit(pcm: object) -> None:
            delta = float_to_base64_pcm16(pcm)  # type: ignore[arg-type]
            self.emit(ResponseOutputAudioDelta(response_id=run.id, item_id=run.item_id, delta=delta))

        self._spoken = SpokenReply(self._tts, emit, voice=self._tts_voice)
        return self._spoken

    async def _end_speech(self, run: ResponseRun, spoken: SpokenReply) -> None:
        """Speak the rest of the reply (or stop, when it was cancelled), then close the audio."""
        if run.cancelled:
            await spoken.cancel()
        else:
            await spoken.finish()
        self._spoken = None
        if spoken.samples:
            self.emit(ResponseOutputAudioDone(response_id=run.id, item_id=run.item_id))
        if spoken.error is not None:
            self.emit_error(spoken.error)

    def _cancel_reason(self, run: ResponseRun) -> str:
        """Why a cancelled response stopped: the user spoke over it, or the client cancelled it."""
        if run.id in self._barged_in:
            self._barged_in.discard(run.id)
            return "turn_detected"
        return "client_cancelled"
