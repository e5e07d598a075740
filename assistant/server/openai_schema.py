"""OpenAI's chat completions and models, as pydantic models: the request the route validates, and
the answers the OpenAPI schema declares. The request's own checks (what this server does not
support) are in ``CompletionRequest.refusal``; the mapping to domain messages in ``messages``.

Accepted and ignored (harmless): ``user`` (unless it names a session, see the routes), ``seed``,
``metadata``, ``store: false``, ``presence_penalty`` / ``frequency_penalty`` of 0,
``parallel_tool_calls``, ``service_tier``, ``logprobs: false``, ``response_format`` ``text``,
an ``image_url``'s ``detail``. Refused with a 400 naming the parameter: ``n`` other than 1,
``tools`` / ``functions`` / ``tool_choice`` / ``function_call``, ``logprobs: true``,
``top_logprobs``, ``logit_bias``, ``response_format`` other than text, ``audio`` output,
``modalities`` other than text, ``prediction``, penalties other than 0, the ``tool`` and
``function`` roles. Any other field: 400 (``extra_forbidden``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assistant.errors import InvalidRequestError
from assistant.messages import ContentPart, Message, PendingAudio, PendingImage, Role, TextPart

#: Audio formats an ``input_audio`` part may name (the decoder reads the file's own header).
AUDIO_FORMATS = ("wav", "mp3", "ogg", "opus", "webm", "flac", "m4a", "aac", "pcm16")
MAX_TOKENS = 8192
TEXT_MAX = 200_000  # characters of one text, as a WebSocket item's input_text


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Request):
    url: str = Field(description="A data URL (data:image/png;base64,...)")
    detail: Literal["auto", "low", "high"] | None = None


class InputAudioData(_Request):
    data: str = Field(description="A whole audio file, base64")
    format: str = Field(description="wav, mp3, ogg, webm, flac, ...")


class ContentPartIn(_Request):
    """One part of a message's content: ``text``, ``image_url`` or ``input_audio``, with the field
    of that name."""

    type: Literal["text", "image_url", "input_audio"]
    text: str | None = Field(None, max_length=TEXT_MAX)
    image_url: ImageURL | None = None
    input_audio: InputAudioData | None = None

    @model_validator(mode="after")
    def _has_its_field(self) -> ContentPartIn:
        if getattr(self, self.type) is None:
            raise ValueError(f"a {self.type!r} part needs its {self.type!r} field")
        return self


class ChatMessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Field(max_length=TEXT_MAX)] | list[ContentPartIn] | None = None
    name: str | None = Field(None, max_length=256)
    refusal: str | None = None
    tool_calls: Any = None
    tool_call_id: Any = None
    function_call: Any = None


class StreamOptions(_Request):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class CompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    model: str | None = Field(None, max_length=256, description="The id of GET /v1/models")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=2_000)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = Field(None, max_length=4)
    n: int | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    service_tier: str | None = None

    def refusal(self) -> InvalidRequestError | None:
        """What this server does not do that the request asks for (the first such thing)."""
        for name in ("tools", "functions", "tool_choice", "function_call", "top_logprobs",
                     "logit_bias", "audio", "prediction", "reasoning_effort"):  # fmt: skip
            if getattr(self, name) is not None:
                return unsupported(name, f"{name} is not supported by this server")
        if self.n not in (None, 1):
            return unsupported_value("n", "n must be 1: this server generates one choice")
        if self.logprobs:
            return unsupported("logprobs", "logprobs are not supported by this server")
        if self.response_format is not None and self.response_format.type != "text":
            return unsupported_value("response_format", "response_format must be text")
        if self.modalities is not None and set(self.modalities) - {"text"}:
            return unsupported_value("modalities", "modalities must be ['text']")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                return unsupported_value(name, f"{name} must be 0 (or absent)")
        if any(not s for s in self.stops()):
            return unsupported_value("stop", "a stop string may not be empty")
        return _message_refusal(self.messages)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def reply_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def problem_param(loc: Sequence[str | int]) -> str | None:
    """A pydantic problem's location in a body as OpenAI's ``param``: ``messages[0].content``
    for ``("body", "messages", 0, "content", "list[ContentPartIn]", 0)``, the union's branch
    names (``str``, ``list[...]``) and what follows them left out; None: the body as a whole."""
    param = ""
    for segment in loc[1:]:
        if isinstance(segment, int):
            if not param:
                break  # a place in a body that is not JSON
            param += f"[{segment}]"
        elif segment.isidentifier() and segment not in _TYPE_NAMES:
            param += f".{segment}" if param else segment
        else:
            break
    return param or None


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def unsupported(param: str, message: str) -> InvalidRequestError:
    """A parameter this server does not take (at all, or not set)."""
    return InvalidRequestError(message, code="unsupported_parameter", param=param)


def unsupported_value(param: str, message: str) -> InvalidRequestError:
    """A value of a parameter this server does not take."""
    return InvalidRequestError(message, code="unsupported_value", param=param)


def _message_refusal(messages: list[ChatMessageIn]) -> InvalidRequestError | None:
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.role in ("tool", "function"):
            return unsupported_value(
                f"{where}.role", f"role {message.role!r} is not supported: this server calls no "
                "tools")  # fmt: skip
        for name in ("tool_calls", "tool_call_id", "function_call"):
            if getattr(message, name) is not None:
                return unsupported(f"{where}.{name}", f"{name} is not supported by this server")
        if message.content is None and message.role != "assistant":
            return InvalidRequestError(
                f"a {message.role} message needs content", param=f"{where}.content"
            )
        if isinstance(message.content, list) and message.role != "user":
            for part_index, part in enumerate(message.content):
                if part.type != "text":
                    return unsupported_value(
                        f"{where}.content[{part_index}].type",
                        f"a {message.role} message holds text parts only")  # fmt: skip
    return None


def to_messages(request: CompletionRequest) -> list[Message]:
    """The request's messages as domain messages (``developer`` is ``system``; images and audio
    as pending parts, for the image pipeline and the speech to text)."""
    out = []
    for index, message in enumerate(request.messages):
        role: Role = "system" if message.role == "developer" else message.role  # type: ignore[assignment]
        out.append(Message(role=role, content=tuple(_parts(message.content, index))))
    return out


def _parts(content: str | list[ContentPartIn] | None, index: int) -> list[ContentPart]:
    if content is None:
        return [TextPart(text="")]
    if isinstance(content, str):
        return [TextPart(text=content)]
    parts: list[ContentPart] = []
    for part_index, part in enumerate(content):
        if part.type == "text":
            parts.append(TextPart(text=part.text or ""))
        elif part.type == "image_url" and part.image_url is not None:
            parts.append(PendingImage(source=part.image_url.url))
        elif part.input_audio is not None:
            if part.input_audio.format not in AUDIO_FORMATS:
                raise InvalidRequestError(
                    f"audio format {part.input_audio.format[:20]!r} is not supported; use one "
                    f"of {', '.join(AUDIO_FORMATS)}", code="unsupported_audio_format",
                    param=f"messages[{index}].content[{part_index}].input_audio.format",
                )  # fmt: skip
            parts.append(PendingAudio(audio=part.input_audio.data))
    return parts or [TextPart(text="")]


# -- answers ----------------------------------------------------------------------------------------


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessageOut
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A whole completion (``stream`` false)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


#: The 200 of ``POST /v1/chat/completions``: JSON, or server-sent events when ``stream``.
COMPLETION_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The completion; with `stream: true`, `chat.completion.chunk` events "
        "(text/event-stream), ending with `data: [DONE]`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}
