"""The wire protocol: JSON events over one WebSocket, named after the OpenAI Realtime API's events.

Client events and server events are separate discriminated unions (on ``type``); every event may
carry an ``event_id``, and an ``error`` event echoes the id of the event that caused it.
``parse_client_event`` turns a text frame into a typed event or raises an ``InvalidRequestError``
with a stable code: ``invalid_json``, ``unknown_event`` or ``invalid_event``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from assistant.errors import (
    AssistantError,
    InvalidEventError,
    InvalidJSONError,
    UnknownEventError,
)
from assistant.messages import (
    AudioPart,
    ContentPart,
    ImagePart,
    Message,
    PendingImage,
    TextPart,
    new_id,
)

# --------------------------------------------------------------------------------------------------
# Content parts on the wire
# --------------------------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Wire):
    type: Literal["input_text"]
    text: str = Field(max_length=200_000)


class InputImage(_Wire):
    type: Literal["input_image"]
    image_url: str


class InputAudio(_Wire):
    type: Literal["input_audio"]
    audio: str  # base64 of a whole audio file
    transcript: str | None = None


InputContent = Annotated[Union[InputText, InputImage, InputAudio], Field(discriminator="type")]


class InputItem(_Wire):
    """A message the client adds to the conversation."""

    id: str | None = Field(None, min_length=1, max_length=128)  # the client's turn id
    type: Literal["message"] = "message"
    role: Literal["user", "system"] = "user"
    content: list[InputContent] = Field(min_length=1, max_length=64)


# --------------------------------------------------------------------------------------------------
# Client events
# --------------------------------------------------------------------------------------------------


class _ClientEvent(_Wire):
    event_id: str | None = Field(None, max_length=128)


# -- voice: server-side turn detection, in both directions ----------------------------------------


class WireTurnDetection(_Wire):
    """``server_vad`` settings; a field left out keeps the server's default. In a session
    ``null`` means no turn detection: the client commits the audio buffer itself."""

    type: Literal["server_vad"] = "server_vad"
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=5_000)
    silence_duration_ms: int | None = Field(None, ge=100, le=10_000)
    #: Answer each turn the VAD ends with a response of its own.
    create_response: bool = True
    #: Speech that starts while a response streams cancels it (barge-in).
    interrupt_response: bool = True


# -- end voice --------------------------------------------------------------------------------------


class SessionConfig(_Wire):
    instructions: str | None = Field(None, max_length=100_000)
    max_output_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    # voice: ``["text"]`` or ``["text", "audio"]`` (spoken replies); only "pcm16" (16 kHz mono
    # little-endian) is taken as audio format; ``turn_detection: null`` turns server VAD off.
    modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1, max_length=2)
    input_audio_format: str | None = Field(None, max_length=64)
    output_audio_format: str | None = Field(None, max_length=64)
    turn_detection: WireTurnDetection | None = None
    voice: str | None = Field(None, min_length=1, max_length=64)


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    session: SessionConfig


class ConversationItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"]
    item: InputItem
    previous_item_id: str | None = None


class ResponseConfig(_Wire):
    instructions: str | None = Field(None, max_length=100_000)
    max_output_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"]
    response: ResponseConfig = Field(default_factory=ResponseConfig)


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


# -- voice: the input audio buffer (binary frames of raw PCM16 append to it too) -------------------


class InputAudioBufferAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str  # base64 of PCM16 little-endian, 16 kHz, mono


class InputAudioBufferCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


# -- end voice --------------------------------------------------------------------------------------


ClientEvent = Annotated[
    Union[
        SessionUpdate,
        ConversationItemCreate,
        ResponseCreate,
        ResponseCancel,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
    ],
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
    event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    kind = raw.get("type")
    if kind not in CLIENT_EVENT_TYPES:
        known = ", ".join(sorted(CLIENT_EVENT_TYPES))
        raise UnknownEventError(f"unknown event type {kind!r}; known: {known}", event_id=event_id)
    try:
        return _client_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidEventError(f"invalid {kind}: {_describe(exc)}", event_id=event_id) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for problem in exc.errors()[:3]:
        where = ".".join(str(p) for p in problem["loc"][1:]) or "event"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# Server events
# --------------------------------------------------------------------------------------------------


class _ServerEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: new_id("event"))


class WireSession(BaseModel):
    id: str
    object: Literal["realtime.session"] = "realtime.session"
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    modalities: list[str] = ["text"]
    # voice: audio in and out is PCM16 little-endian mono at ``audio_sample_rate``
    voice: str | None = None
    input_audio_format: str = "pcm16"
    output_audio_format: str = "pcm16"
    audio_sample_rate: int = 16_000
    turn_detection: WireTurnDetection | None = None


class SessionCreated(_ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: WireSession


class SessionUpdated(_ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: WireSession


class WireContent(BaseModel):
    type: Literal["input_text", "output_text", "input_image", "input_audio"]
    text: str | None = None
    transcript: str | None = None
    image_sha256: str | None = None


class WireItem(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    role: Literal["system", "user", "assistant"]
    status: Literal["completed", "incomplete", "interrupted", "in_progress"] = "completed"
    content: list[WireContent]


class ConversationItemCreated(_ServerEvent):
    type: Literal["conversation.item.created"] = "conversation.item.created"
    previous_item_id: str | None = None
    item: WireItem


class WireUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


ResponseStatus = Literal["in_progress", "completed", "cancelled", "incomplete", "failed"]


class WireResponse(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[WireItem] = []
    usage: WireUsage | None = None


class ResponseCreated(_ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: WireResponse


class _OutputTextEvent(_ServerEvent):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ResponseOutputTextDelta(_OutputTextEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class ResponseOutputTextDone(_OutputTextEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class ResponseDone(_ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: WireResponse


class WireError(BaseModel):
    type: str
    code: str
    message: str
    event_id: str | None = None


class ErrorEvent(_ServerEvent):
    type: Literal["error"] = "error"
    error: WireError

    @classmethod
    def from_exception(cls, exc: AssistantError, event_id: str | None = None) -> "ErrorEvent":
        echo = event_id or exc.event_id
        return cls(error=WireError(type=exc.type, code=exc.code, message=exc.message, event_id=echo))


# -- voice: server events -------------------------------------------------------------------------


class InputAudioBufferSpeechStarted(_ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int  # since the connection's first audio, prefix padding included
    item_id: str  # the user item the utterance will become


class InputAudioBufferSpeechStopped(_ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int  # trailing silence included
    item_id: str


class InputAudioBufferCommitted(_ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(_ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class _TranscriptionEvent(_ServerEvent):
    item_id: str
    content_index: int = 0


class InputAudioTranscriptionDelta(_TranscriptionEvent):
    """Words of the partial transcript that two successive decodes agree on, appended in order;
    ``.completed`` has the final transcript, which may differ slightly."""

    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    delta: str


class InputAudioTranscriptionCompleted(_TranscriptionEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    transcript: str


class InputAudioTranscriptionFailed(_TranscriptionEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    error: WireError


class ResponseOutputAudioDelta(_OutputTextEvent):  # the same addressing fields as text
    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str  # base64 of PCM16 little-endian, 16 kHz, mono


class ResponseOutputAudioDone(_OutputTextEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


# -- end voice --------------------------------------------------------------------------------------


ServerEvent = Union[
    SessionCreated,
    SessionUpdated,
    ConversationItemCreated,
    ResponseCreated,
    ResponseOutputTextDelta,
    ResponseOutputTextDone,
    ResponseDone,
    ErrorEvent,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioBufferCommitted,
    InputAudioBufferCleared,
    InputAudioTranscriptionDelta,
    InputAudioTranscriptionCompleted,
    InputAudioTranscriptionFailed,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
]


# --------------------------------------------------------------------------------------------------
# Mapping between wire and storage shapes
# --------------------------------------------------------------------------------------------------


def wire_item(message: Message) -> WireItem:
    content: list[WireContent] = []
    for part in message.content:
        if isinstance(part, TextPart):
            kind = "output_text" if message.role == "assistant" else "input_text"
            content.append(WireContent(type=kind, text=part.text))
        elif isinstance(part, ImagePart):
            content.append(WireContent(type="input_image", image_sha256=part.sha256))
        elif isinstance(part, AudioPart):
            content.append(WireContent(type="input_audio", transcript=part.transcript))
    return WireItem(id=message.id, role=message.role, status=message.status, content=content)


def message_from_input(item: InputItem) -> Message:
    """A message from a client item. Images arrive as ``PendingImage`` parts: the orchestrator
    validates, decodes and stores them (off the event loop) before the message is stored."""
    parts: list[ContentPart] = []
    for part in item.content:
        if isinstance(part, InputText):
            parts.append(TextPart(text=part.text))
        elif isinstance(part, InputImage):
            parts.append(PendingImage(source=part.image_url))
        elif isinstance(part, InputAudio) and part.transcript is not None:
            # voice: the server transcribed the uploaded audio into ``transcript`` before this
            parts.append(AudioPart(transcript=part.transcript))
        else:
            raise InvalidEventError(
                f"content part {part.type!r} is not supported by this server yet",
                code="unsupported_content",
            )
    return Message(role=item.role, content=tuple(parts), turn_id=item.id)
