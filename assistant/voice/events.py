"""What a connection's voice pipeline tells its sink (``assistant.voice.pipeline``): domain events,
mapped to wire events by the WebSocket (``assistant.server.voice_session``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from assistant.errors import AssistantError


@dataclass(frozen=True)
class SpeechBegan:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechEnded:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class BufferCommitted:
    item_id: str


@dataclass(frozen=True)
class BufferCleared:
    pass


@dataclass(frozen=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True)
class TranscriptCompleted:
    item_id: str
    transcript: str
    duration_s: float
    #: The server VAD ended the turn (rather than the client's commit).
    by_vad: bool
    #: A decode made while the user spoke was the final one (no decode after the turn ended).
    from_stream: bool = False


@dataclass(frozen=True)
class TranscriptFailed:
    item_id: str
    error: AssistantError


@dataclass(frozen=True)
class TurnPaused:
    """The user paused and the words so far look finished: the turn will likely end with this
    ``transcript`` (the final one, unless voice comes again)."""

    item_id: str
    transcript: str


@dataclass(frozen=True)
class TurnResumed:
    """Voice came again after a ``TurnPaused``, before the turn ended."""

    item_id: str


VoiceEvent = (
    SpeechBegan
    | SpeechEnded
    | BufferCommitted
    | BufferCleared
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | TurnPaused
    | TurnResumed
)
Sink = Callable[[VoiceEvent], Awaitable[None]]


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
    "VoiceEvent",
]
