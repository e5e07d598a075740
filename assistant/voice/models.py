"""The process's speech models: speech to text, voice activity and text to speech, each built on
first use and shared by every connection of the process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from assistant.config import Settings
from assistant.ports import SpeechToText, TextToSpeech, VoiceActivity, VoiceActivityStream
from assistant.voice.audio import AudioLimits


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
        return AudioLimits.uploads(self.settings.voice)

    async def stt(self) -> SpeechToText:
        from assistant.registry import build_speech_to_text

        return await self._get("stt", build_speech_to_text)

    async def tts(self) -> TextToSpeech:
        from assistant.registry import build_text_to_speech

        return await self._get("tts", build_text_to_speech)

    async def vad_stream(self) -> VoiceActivityStream:
        """A voice activity stream of its own (one per connection) over the one loaded model."""
        from assistant.registry import build_voice_activity

        vad: VoiceActivity = await self._get("vad", build_voice_activity)
        return vad.stream()

    async def preload(self) -> None:
        await self.stt()
        await self.vad_stream()

    async def aclose(self) -> None:
        for model in self._built:
            await model.aclose()  # every speech port has one

    async def _get(self, name: str, build: Callable[[Settings], Any]) -> Any:
        if self._models[name] is None:
            async with self._locks[name]:
                if self._models[name] is None:
                    model = await asyncio.to_thread(build, self.settings)
                    self._built.append(model)
                    self._models[name] = model
        return self._models[name]
