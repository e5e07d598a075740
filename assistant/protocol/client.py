"""The wire protocol: JSON events over one WebSocket, named after the OpenAI Realtime API's events.

Client events and server events are separate discriminated unions (on ``type``); every event may
carry an ``event_id``, and an ``error`` event echoes the id of the event that caused it.
``parse_client_event`` turns a text frame into a typed event or raises an ``InvalidRequestError``
with a stable code: ``invalid_json``, ``unknown_event`` or ``invalid_event``.

This module holds the client's events and their parsing; the server's events are in
``protocol.server``, the mapping between wire items and domain messages in ``protocol.items``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from assistant.errors import (
    InvalidEventError,
    InvalidJSONError,
    UnknownEventError,
    shown,
)
from assistant.protocol.server import WireTurnDetection

# --------------------------------------------------------------------------------------------------
# Content parts on the wire
# --------------------------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Wire):
    """Typed text."""

    type: Literal["input_text"]
    text: str = Field(max_length=200_000)


class InputImage(_Wire):
    """An image, inline: PNG, JPEG, WebP or the first frame of a GIF (the server never fetches
    a URL)."""

    type: Literal["input_image"]
    image_url: str = Field(description="a data URL: data:image/png;base64,...")


class InputAudio(_Wire):
    """An uploaded audio file, transcribed by the server and stored as the user's words."""

    type: Literal["input_audio"]
    audio: str = Field(description="base64 of a whole audio file (WAV, WebM/Opus, OGG, MP3)")
    transcript: str | None = Field(None, description="given: stored as is, not transcribed")


InputContent = Annotated[InputText | InputImage | InputAudio, Field(discriminator="type")]


class InputItem(_Wire):
    """A message the client adds to the conversation."""

    id: str | None = Field(
        None, min_length=1, max_length=128,
        description="the client's turn id: a retried send with the same id is stored once",
    )  # fmt: skip
    type: Literal["message"] = "message"
    role: Literal["user", "system"] = "user"
    content: list[InputContent] = Field(min_length=1, max_length=64)


# --------------------------------------------------------------------------------------------------
# Client events
# --------------------------------------------------------------------------------------------------


#: The longest ``event_id`` a client may give (and an error echoes).
EVENT_ID_MAX = 128


class _ClientEvent(_Wire):
    event_id: str | None = Field(
        None, max_length=EVENT_ID_MAX, description="the client's id; an error it causes echoes it"
    )


class SessionConfig(_Wire):
    """The session's settings to change; a field left out keeps its value."""

    instructions: str | None = Field(None, max_length=100_000)
    max_output_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    # voice: ``["text"]`` or ``["text", "audio"]`` (spoken replies); only "pcm16" (16 kHz mono
    # little-endian) is taken as audio format; ``turn_detection: null`` turns server VAD off.
    modalities: list[Literal["text", "audio"]] | None = Field(
        None, min_length=1, max_length=2, description='["text", "audio"]: spoken replies too'
    )
    input_audio_format: str | None = Field(None, max_length=64, description='only "pcm16"')
    output_audio_format: str | None = Field(None, max_length=64, description='only "pcm16"')
    turn_detection: WireTurnDetection | None = Field(
        None, description="server VAD settings; null: the client commits the audio buffer"
    )
    voice: str | None = Field(
        None, min_length=1, max_length=64, description="the spoken replies' voice (en-us, ...)"
    )


class SessionUpdate(_ClientEvent):
    """Change the session's settings; answered with ``session.updated``."""

    type: Literal["session.update"]
    session: SessionConfig


class ConversationItemCreate(_ClientEvent):
    """Add a message to the conversation (stored before any reply); answered with
    ``conversation.item.created``."""

    type: Literal["conversation.item.create"]
    item: InputItem
    previous_item_id: str | None = Field(
        None, description="echoed in conversation.item.created; the item is appended either way"
    )


class ResponseConfig(_Wire):
    """This response's settings, over the session's."""

    instructions: str | None = Field(None, max_length=100_000)
    max_output_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)


class ResponseCreate(_ClientEvent):
    """Generate a reply to the conversation so far; streams ``response.*`` events."""

    type: Literal["response.create"]
    response: ResponseConfig = Field(default_factory=ResponseConfig)


class ResponseCancel(_ClientEvent):
    """Stop the response in progress (within one token); it ends with ``response.done``,
    status ``cancelled``."""

    type: Literal["response.cancel"]
    response_id: str | None = Field(None, description="left out: whichever is in progress")


# The input audio buffer (binary frames of raw PCM16 append to it too).


class InputAudioBufferAppend(_ClientEvent):
    """Audio for the input buffer (a binary frame of raw PCM16 does the same)."""

    type: Literal["input_audio_buffer.append"]
    audio: str = Field(description="base64 of PCM16 little-endian, 16 kHz, mono")


class InputAudioBufferCommit(_ClientEvent):
    """End the spoken turn by hand (without server VAD): the buffer is transcribed and stored."""

    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_ClientEvent):
    """Drop the audio buffered so far."""

    type: Literal["input_audio_buffer.clear"]


class ConversationHandoffRequest(_ClientEvent):
    """Ask for a person: the conversation waits for an agent (``conversation.status.updated``);
    the bot stays silent until one hands it back."""

    type: Literal["conversation.handoff.request"]
    reason: str | None = Field(None, max_length=500, description="the customer's words, if any")


ClientEvent = Annotated[
    SessionUpdate
    | ConversationItemCreate
    | ResponseCreate
    | ResponseCancel
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationHandoffRequest,
    Field(discriminator="type"),
]
_client_adapter: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset(
    model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for model in (
        SessionUpdate,
        ConversationItemCreate,
        ResponseCreate,
        ResponseCancel,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationHandoffRequest,
    )
)


def parse_client_event(frame: str | bytes) -> ClientEvent:
    """Parse one text frame. Raises ``InvalidRequestError`` subclasses; their ``event_id`` attribute
    holds the client's id when the frame had one, so the error can echo it."""
    try:  # a valid event: parsed and validated in one pass, in pydantic-core
        return _client_adapter.validate_json(frame)
    except ValidationError:
        pass  # find out what is wrong, and the event id to echo, the slow way
    try:
        raw = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"the frame is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEventError("an event must be a JSON object")
    event_id = raw.get("event_id")
    if not isinstance(event_id, str) or len(event_id) > EVENT_ID_MAX:
        event_id = None  # not an id the client could have meant: nothing to echo
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_TYPES:  # a list or object: unhashable
        known = ", ".join(sorted(CLIENT_EVENT_TYPES))
        raise UnknownEventError(
            f"unknown event type {shown(kind)}; known: {known}", event_id=event_id
        )
    try:
        return _client_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidEventError(f"invalid {kind}: {_describe(exc)}", event_id=event_id) from None


def _describe(exc: ValidationError) -> str:
    return describe_problems(exc.errors(include_url=False), whole="event")


def describe_problems(problems: Sequence[Mapping[str, Any]], *, whole: str) -> str:
    """The first three of pydantic's problems as a message: where (past the first part of the
    location, or ``whole``) and what, both cut short (they may quote the client)."""
    parts = []
    for problem in problems[:3]:
        where = ".".join(str(p) for p in problem.get("loc", ())[1:]) or whole
        parts.append(f"{_cut(where, 80)}: {_cut(str(problem.get('msg', 'invalid')), 200)}")
    return "; ".join(parts)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
