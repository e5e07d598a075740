"""A session's voice settings between the wire (``session.update``, ``session.created``) and the
voice pipeline's ``VoiceConfig``: formats, voices and ``server_vad`` turn detection."""

from __future__ import annotations

from typing import TypeVar

from assistant.errors import InvalidRequestError
from assistant.ports import TextToSpeech
from assistant.protocol import WireTurnDetection
from assistant.voice.pipeline import VoiceConfig
from assistant.voice.turn_detection import TurnDetectionConfig

_T = TypeVar("_T")


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
        raise InvalidRequestError(f"{tts.name} has no voice {voice!r}", code="unsupported_voice")
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
        threshold=_given(wire.threshold, base.threshold),
        prefix_padding_ms=_given(wire.prefix_padding_ms, base.prefix_padding_ms),
        silence_duration_ms=_given(wire.silence_duration_ms, base.silence_duration_ms),
        eager_silence_ms=_given(wire.eager_silence_ms, base.eager_silence_ms),
        min_speech_ms=base.min_speech_ms,
    )
    return current.with_turn_detection(
        detection, create_response=wire.create_response, interrupt_response=wire.interrupt_response,
        early_response=_given(wire.early_response, defaults.early_response),
    )


def voice_config_to_wire(config: VoiceConfig) -> WireTurnDetection | None:
    detection = config.turn_detection
    if detection is None:
        return None
    return WireTurnDetection(
        threshold=detection.threshold,
        prefix_padding_ms=detection.prefix_padding_ms,
        silence_duration_ms=detection.silence_duration_ms,
        eager_silence_ms=detection.eager_silence_ms,
        early_response=config.early_response,
        create_response=config.create_response,
        interrupt_response=config.interrupt_response,
    )


def _given(value: _T | None, default: _T) -> _T:
    return default if value is None else value
