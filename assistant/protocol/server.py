"""The server's events of the wire protocol (``protocol.client`` has the client's). Pydantic models
define the format; ``protocol.fast_json`` writes the hot path's events straight to JSON, equal to
these.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from assistant.errors import AssistantError
from assistant.messages import ResponseStatus, new_id

# Server-side turn detection, in both directions.


class WireTurnDetection(BaseModel):
    """``server_vad`` settings; a field left out keeps the server's default. In a session
    ``null`` means no turn detection: the client commits the audio buffer itself."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"] = "server_vad"
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=5_000)
    #: Silence that ends a turn whose words so far may go on ("I'd like to order a").
    silence_duration_ms: int | None = Field(None, ge=100, le=10_000)
    #: Silence that ends a turn whose streaming transcript looks finished ("What time do you
    #: open?"); not below ``silence_duration_ms``: one wait for all turns.
    eager_silence_ms: int | None = Field(None, ge=0, le=10_000)
    #: Start the reply at the first pause of a turn that looks finished, before the silence wait
    #: ends; nothing of it is sent or stored unless the turn ends there.
    early_response: bool | None = None
    #: Answer each turn the VAD ends with a response of its own.
    #: Silence that ends a turn whose streaming transcript looks finished ("What time do you
    #: open?"); not below ``silence_duration_ms``: one wait for all turns.
    eager_silence_ms: int | None = Field(None, ge=0, le=10_000)
    #: Start the reply at the first pause of a turn that looks finished, before the silence wait
    #: ends; nothing of it is sent or stored unless the turn ends there.
    early_response: bool | None = None
    create_response: bool = True
    #: Speech that starts while a response streams cancels it (barge-in).
    interrupt_response: bool = True


# --------------------------------------------------------------------------------------------------
# Server events
# --------------------------------------------------------------------------------------------------


class _ServerEvent(BaseModel):
    event_id: str = Field(
        default_factory=lambda: new_id("event"), description="the server's id of this event"
    )


class WireSession(BaseModel):
    """The session's settings as they are now."""

    id: str
    object: Literal["realtime.session"] = "realtime.session"
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    modalities: list[str] = Field(["text"], description='["text", "audio"]: spoken replies')
    # voice: audio in and out is PCM16 little-endian mono at ``audio_sample_rate``
    voice: str | None = Field(None, description="the spoken replies' voice; null: the default")
    input_audio_format: str = "pcm16"
    output_audio_format: str = "pcm16"
    audio_sample_rate: int = Field(16_000, description="of audio in and out (PCM16 mono)")
    turn_detection: WireTurnDetection | None = Field(
        None, description="server VAD's settings; null: the client commits the audio buffer"
    )
    status: Literal["bot", "waiting_human", "human", "resolved"] = Field(
        "bot", description="who answers: the bot, a person soon (waiting_human), a person (human)"
    )
    last_seq: str | None = Field(
        None, description="the session's event stream position when the connection opened: "
        "reconnect with ?after=<the last seq seen> to get every event since, once",
    )


class SessionCreated(_ServerEvent):
    """The first event on every connection: the new or resumed session."""

    type: Literal["session.created"] = "session.created"
    session: WireSession


class SessionUpdated(_ServerEvent):
    """The answer to ``session.update``: the settings now."""

    type: Literal["session.updated"] = "session.updated"
    session: WireSession


class WireCitation(BaseModel):
    """A source a support bot's reply was answered from (OpenAI's ``file_citation``
    annotation), with where it is in the document and the quoted span."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str = Field(description="the knowledge base's document id")
    filename: str
    index: int = Field(
        description="offset in the text of the reply's [number] marker (else the text's end)"
    )
    number: int = Field(description="the source's number: the reply cites it as [number]")
    title: str = ""
    heading: str = Field("", description='heading path, such as "Returns > Refund times"')
    page: int | None = Field(None, description="1-based page of a PDF")
    quote: str = Field("", description="the start of the passage the reply was given")


class WireContent(BaseModel):
    """A stored content part; an image is its sha256 (the blob stays on the server)."""

    type: Literal["input_text", "output_text", "input_image", "input_audio"]
    text: str | None = None
    transcript: str | None = None
    image_sha256: str | None = None
    annotations: list[WireCitation] | None = Field(
        None,
        description="output_text only: the reply's sources (empty for a reply with none)",
        exclude_if=lambda value: value is None,
    )


class WireItem(BaseModel):
    """A stored message."""

    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    role: Literal["system", "user", "assistant"]
    status: Literal["completed", "incomplete", "interrupted", "in_progress", "unanswered"] = Field(
        "completed",
        description="unanswered: a support bot's fallback reply (nothing in its knowledge base "
        "was relevant; no model was asked)",
    )
    content: list[WireContent]
    author: str | None = Field(
        None, description="an assistant message a person wrote: agent:<key id> (absent: the bot)",
        exclude_if=lambda value: value is None,
    )


class ConversationItemCreated(_ServerEvent):
    """A message is stored (the client's, or a spoken turn's transcript)."""

    type: Literal["conversation.item.created"] = "conversation.item.created"
    previous_item_id: str | None = Field(None, description="the client's, echoed")
    item: WireItem


class WireUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


#: On the wire a response is ``in_progress`` until it ends with one of the domain statuses.
WireResponseStatus = Literal["in_progress"] | ResponseStatus


class WireResponse(BaseModel):
    """A response: ``in_progress``, then how it ended, its output and usage."""

    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: WireResponseStatus = "in_progress"
    status_details: dict[str, Any] | None = Field(
        None, description='why it ended so: {"type", "reason"} or {"type": "failed", "error"}'
    )
    output: list[WireItem] = Field([], description="the reply as stored (response.done)")
    usage: WireUsage | None = None


class ResponseCreated(_ServerEvent):
    """A response started."""

    type: Literal["response.created"] = "response.created"
    response: WireResponse


class _OutputTextEvent(_ServerEvent):
    response_id: str
    item_id: str = Field(description="the assistant message being written")
    output_index: int = Field(0, description="always 0: one message per response")
    content_index: int = Field(0, description="always 0: one text part per message")


class ResponseOutputTextDelta(_OutputTextEvent):
    """The next piece of the reply's text."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class ResponseOutputTextDone(_OutputTextEvent):
    """The reply's whole text (also when it was cut short)."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class ResponseDone(_ServerEvent):
    """The response ended: ``completed``, ``incomplete`` (max tokens), ``cancelled`` or
    ``failed``, with its stored output."""

    type: Literal["response.done"] = "response.done"
    response: WireResponse


class WireError(BaseModel):
    """What went wrong: ``code`` is stable, ``type`` groups the codes."""

    type: str
    code: str
    message: str
    event_id: str | None = Field(None, description="the client event's id that caused it")
    param: str | None = Field(None, description="the field or parameter at fault, when one is")
    #: ``rate_limit_error``: seconds until the limit lets the request through again.
    retry_after_s: float | None = Field(
        None, description="rate_limit_error: seconds until the limit lets it through again"
    )


class ErrorEvent(_ServerEvent):
    """A client event was refused, or something failed; the socket stays open (except
    ``slow_client``)."""

    type: Literal["error"] = "error"
    error: WireError

    @classmethod
    def from_exception(cls, exc: AssistantError, event_id: str | None = None) -> ErrorEvent:
        echo = event_id or exc.event_id
        retry = getattr(exc, "retry_after_s", None)  # RateLimitError's
        error = WireError(
            type=exc.type, code=exc.code, message=exc.message, event_id=echo,
            param=getattr(exc, "param", None), retry_after_s=retry,
        )  # fmt: skip
        return cls(error=error)


# -- the input audio buffer, transcription and spoken replies ------------------------------------


class InputAudioBufferSpeechStarted(_ServerEvent):
    """Server VAD heard speech start (a reply streaming now is interrupted)."""

    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int = Field(
        description="since the connection's first audio, prefix padding included"
    )
    item_id: str = Field(description="the user item the utterance will become")


class InputAudioBufferSpeechStopped(_ServerEvent):
    """Server VAD heard the speech end."""

    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int = Field(description="trailing silence included")
    item_id: str


class InputAudioBufferCommitted(_ServerEvent):
    """The buffered audio became a user turn (by server VAD or ``input_audio_buffer.commit``)."""

    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(_ServerEvent):
    """The answer to ``input_audio_buffer.clear``."""

    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class _TranscriptionEvent(_ServerEvent):
    item_id: str = Field(description="the user message the audio becomes")
    content_index: int = Field(0, description="the audio part's place in that message")


class InputAudioTranscriptionDelta(_TranscriptionEvent):
    """Words of the partial transcript that two successive decodes agree on, appended in order;
    ``.completed`` has the final transcript, which may differ slightly."""

    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    delta: str


class InputAudioTranscriptionCompleted(_TranscriptionEvent):
    """The final transcript of a spoken turn or an uploaded audio part."""

    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    transcript: str


class InputAudioTranscriptionFailed(_TranscriptionEvent):
    """The spoken turn could not be transcribed (an ``error`` event follows)."""

    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    error: WireError


class ResponseOutputAudioDelta(_OutputTextEvent):  # the same addressing fields as text
    """The next piece of the spoken reply, sentence by sentence."""

    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str = Field(description="base64 of PCM16 little-endian, 16 kHz, mono")


class ResponseOutputAudioDone(_OutputTextEvent):
    """The spoken reply is complete (or was cut short)."""

    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class ConversationItemAdded(_ServerEvent):
    """A message another connection or an agent added to this session (from the session's event
    stream: every connection on every worker sees it, in order, ``seq`` growing)."""

    type: Literal["conversation.item.added"] = "conversation.item.added"
    seq: str = Field(description="the event's sequence number in the session's stream")
    item: WireItem


class ConversationStatusUpdated(_ServerEvent):
    """The conversation's status changed (handed to a person, claimed, handed back, resolved)."""

    type: Literal["conversation.status.updated"] = "conversation.status.updated"
    seq: str = Field(description="the event's sequence number in the session's stream")
    status: Literal["bot", "waiting_human", "human", "resolved"]
    reason: str | None = Field(None, description="why it was handed off")
    agent: str | None = Field(None, description="the agent holding it (status human)")


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
    ConversationItemAdded,
    ConversationStatusUpdated,
]
