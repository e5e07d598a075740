"""Speech around the conversation: the process's speech models (built on first use, shared by all
connections), transcription of uploaded audio files, and a session's voice settings from the wire.

The per-connection streaming pipeline is ``assistant.voice``; spoken replies are
``assistant.spoken_reply``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from assistant.audio import AudioLimits, decode_audio_file, decode_base64
from assistant.config import Settings, VoiceSettings
from assistant.errors import InvalidRequestError
from assistant.messages import AudioPart, Message
from assistant.ports import SpeechToText, TextToSpeech, Transcript, VoiceActivity
from assistant.protocol import InputAudio, InputItem, WireTurnDetection
from assistant.turn_detection import TurnDetectionConfig
from assistant.voice import VoiceConfig


class SpeechModels:
    """Speech to text, voice activity and text to speech for one process. Each is built from the
    settings the first time it is asked for (off the event loop), unless one was handed in;
    ``gate`` bounds the speech-to-text decodes running at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        stt: SpeechToText | None = None,
        vad: VoiceActivity | None = None,
        tts: TextToSpeech | None = None,
    ) -> None:
        self.settings = settings
        self._models: dict[str, Any] = {"stt": stt, "vad": vad, "tts": tts}
        self._built: list[Any] = []  # built here, so closed here
        self._locks = {name: asyncio.Lock() for name in self._models}
        self.gate = asyncio.Semaphore(settings.voice.transcribe_concurrency)

    @property
    def enabled(self) -> bool:
        return self.settings.voice.enabled

    @property
    def limits(self) -> AudioLimits:
        """What an uploaded audio file may be."""
        return upload_limits(self.settings.voice)

    async def stt(self) -> SpeechToText:
        from assistant.registry import build_speech_to_text

        return await self._get("stt", build_speech_to_text)

    async def tts(self) -> TextToSpeech:
        from assistant.registry import build_text_to_speech

        return await self._get("tts", build_text_to_speech)

    async def vad_stream(self) -> VoiceActivity:
        """A voice activity stream of its own (one per connection) over the one loaded model."""
        from assistant.registry import build_voice_activity

        vad = await self._get("vad", build_voice_activity)
        new_stream = getattr(vad, "new_stream", None)
        if new_stream is not None:
            return new_stream()
        return await asyncio.to_thread(build_voice_activity, self.settings)

    async def preload(self) -> None:
        await self.stt()
        await self.vad_stream()

    async def aclose(self) -> None:
        for model in self._built:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()

    async def _get(self, name: str, build: Callable[[Settings], Any]) -> Any:
        if self._models[name] is None:
            async with self._locks[name]:
                if self._models[name] is None:
                    model = await asyncio.to_thread(build, self.settings)
                    self._built.append(model)
                    self._models[name] = model
        return self._models[name]


# -- uploaded audio --------------------------------------------------------------------------------


def upload_limits(voice: VoiceSettings) -> AudioLimits:
    return AudioLimits(max_seconds=voice.max_upload_s, max_bytes=voice.max_upload_bytes)


async def transcribe_file(
    stt: SpeechToText,
    data: bytes,
    *,
    limits: AudioLimits,
    language: str | None = None,
    prompt: str | None = None,
) -> Transcript:
    """A whole audio file (WAV, WebM/Opus, OGG, MP3, ...) -> its transcript. Decoding (PyAV) and
    transcribing run off the event loop; a file that does not decode is ``invalid_audio``."""
    audio = await asyncio.to_thread(decode_audio_file, data, limits=limits)  # (N,) float32 16 kHz
    return await stt.transcribe(audio, language=language, prompt=prompt)


async def transcribe_item_audio(
    models: SpeechModels, item: InputItem
) -> tuple[InputItem, list[Transcript | None]]:
    """The item with a transcript in every ``input_audio`` part, and per audio part (in order) the
    transcript made here (None where the client gave one)."""
    content: list[Any] = []
    made: list[Transcript | None] = []
    for part in item.content:
        if isinstance(part, InputAudio):
            transcript = None
            if part.transcript is None:
                stt = await models.stt()
                data = decode_base64(part.audio)
                transcript = await transcribe_file(stt, data, limits=models.limits)
                part = part.model_copy(update={"transcript": transcript.text})
            made.append(transcript)
        content.append(part)
    return item.model_copy(update={"content": content}), made


def with_audio_durations(message: Message, made: list[Transcript | None]) -> Message:
    """``message`` with the durations of the audio transcribed here on its audio parts."""
    if not made:  # nothing was transcribed here (a text turn): nothing to copy
        return message
    durations = iter(made)
    parts = []
    for part in message.content:
        if isinstance(part, AudioPart):
            transcript = next(durations, None)
            if transcript is not None:
                part = part.model_copy(update={"duration_s": round(transcript.duration_s, 3)})
        parts.append(part)
    return message.model_copy(update={"content": tuple(parts)})


def has_audio(item: InputItem) -> bool:
    return any(isinstance(part, InputAudio) for part in item.content)


# -- a session's voice settings from the wire ------------------------------------------------------


def check_audio_format(name: str | None) -> None:
    """Only ``pcm16`` (16 kHz mono little-endian) is spoken here: anything else, including other
    sample widths (``pcm24``, ``float32``), is ``unsupported_audio_format``."""
    if name is not None and name != "pcm16":
        raise InvalidRequestError(
            f"audio format {name!r} is not supported; use 'pcm16' (16-bit little-endian, "
            "16 kHz, mono)",
            code="unsupported_audio_format",
        )


def check_voice(tts: TextToSpeech, voice: str) -> str:
    voices = tts.capabilities.voices
    if voices is not None and voice.split("+", 1)[0].lower() not in voices:
        raise InvalidRequestError(
            f"{tts.name} has no voice {voice!r}", code="unsupported_voice"
        )
    return voice


def voice_config_from_wire(
    current: VoiceConfig, defaults: VoiceConfig, wire: WireTurnDetection | None
) -> VoiceConfig:
    """``session.update`` ``turn_detection``: None turns server VAD off; fields left out take the
    server's defaults."""
    if wire is None:
        return current.with_turn_detection(None)
    base = defaults.turn_detection or TurnDetectionConfig()
    detection = TurnDetectionConfig(
        threshold=wire.threshold if wire.threshold is not None else base.threshold,
        prefix_padding_ms=(
            wire.prefix_padding_ms if wire.prefix_padding_ms is not None else base.prefix_padding_ms
        ),
        silence_duration_ms=(
            wire.silence_duration_ms
            if wire.silence_duration_ms is not None
            else base.silence_duration_ms
        ),
        min_speech_ms=base.min_speech_ms,
    )
    return current.with_turn_detection(
        detection, create_response=wire.create_response, interrupt_response=wire.interrupt_response
    )


def voice_config_to_wire(config: VoiceConfig) -> WireTurnDetection | None:
    detection = config.turn_detection
    if detection is None:
        return None
    return WireTurnDetection(
        threshold=detection.threshold,
        prefix_padding_ms=detection.prefix_padding_ms,
        silence_duration_ms=detection.silence_duration_ms,
        create_response=config.create_response,
        interrupt_response=config.interrupt_response,
    )


__all__ = [
    "SpeechModels",
    "check_audio_format",
    "check_voice",
    "has_audio",
    "transcribe_file",
    "transcribe_item_audio",
    "upload_limits",
    "voice_config_from_wire",
    "voice_config_to_wire",
    "with_audio_durations",
]
