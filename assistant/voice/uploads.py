"""Uploaded audio files (``input_audio`` parts, ``POST /v1/audio/transcriptions``, ``assistant
transcribe``): decoded with their limits and transcribed, off the event loop."""

from __future__ import annotations

import asyncio

from assistant.messages import AudioPart, ContentPart, Message, PendingAudio
from assistant.ports import SpeechToText, Transcript
from assistant.voice.audio import AudioLimits, decode_audio_file, decode_base64
from assistant.voice.models import SpeechModels


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


def has_pending_audio(message: Message) -> bool:
    return any(isinstance(part, PendingAudio) for part in message.content)


async def transcribe_pending(models: SpeechModels, message: Message) -> Message:
    """``message`` with every uploaded audio file (``PendingAudio``) transcribed into an
    ``AudioPart`` carrying its transcript and duration."""
    if not has_pending_audio(message):
        return message
    parts: list[ContentPart] = []
    for part in message.content:
        if isinstance(part, PendingAudio):
            stt = await models.stt()
            data = decode_base64(part.audio)
            transcript = await transcribe_file(stt, data, limits=models.limits)
            part = AudioPart(transcript=transcript.text, duration_s=round(transcript.duration_s, 3))
        parts.append(part)
    return message.model_copy(update={"content": tuple(parts)})
