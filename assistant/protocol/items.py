"""The mapping between wire items and domain messages, in both directions, written once.

``wire_item_dict`` is the one definition of how a stored message reads on the wire; the pydantic
``wire_item`` and the hot path's JSON encoders (``protocol.fast_json``) are both built from it.
"""

from __future__ import annotations

from typing import Any

from assistant.errors import InvalidRequestError
from assistant.messages import (
    AudioPart,
    ContentPart,
    ImagePart,
    Message,
    PendingAudio,
    PendingImage,
    TextPart,
)
from assistant.protocol.client import InputAudio, InputImage, InputItem, InputText
from assistant.protocol.server import WireItem


def wire_item_dict(message: Message) -> dict[str, Any]:
    """A stored message as the wire's ``realtime.item``, a plain dict (JSON-ready)."""
    content: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            if message.role == "assistant":
                cited = [c.model_dump() for c in part.annotations] if part.annotations else []
                content.append(_content("output_text", text=part.text, annotations=cited))
            else:
                content.append(_content("input_text", text=part.text))
        elif isinstance(part, ImagePart):
            content.append(_content("input_image", image_sha256=part.sha256))
        elif isinstance(part, AudioPart):
            content.append(_content("input_audio", transcript=part.transcript))
    item = {
        "id": message.id, "object": "realtime.item", "type": "message", "role": message.role,
        "status": message.status, "content": content,
    }  # fmt: skip
    if message.author is not None:
        item["author"] = message.author
    return item


def _content(
    kind: str, text: str | None = None, transcript: str | None = None,
    image_sha256: str | None = None, annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    part = {"type": kind, "text": text, "transcript": transcript, "image_sha256": image_sha256}
    if annotations is not None:  # output_text only
        part["annotations"] = annotations
    return part


def wire_item(message: Message) -> WireItem:
    """``wire_item_dict`` as the pydantic model (for events built as models)."""
    return WireItem.model_validate(wire_item_dict(message))


def message_from_input(item: InputItem) -> Message:
    """A message from a client item. Images arrive as ``PendingImage`` parts (the orchestrator
    validates, decodes and stores them off the event loop); uploaded audio without a transcript
    as ``PendingAudio`` (the server transcribes it before the message is stored)."""
    parts: list[ContentPart] = []
    for part in item.content:
        if isinstance(part, InputText):
            parts.append(TextPart(text=part.text))
        elif isinstance(part, InputImage):
            parts.append(PendingImage(source=part.image_url))
        elif isinstance(part, InputAudio):
            if part.transcript is not None:
                parts.append(AudioPart(transcript=part.transcript))
            else:
                parts.append(PendingAudio(audio=part.audio))
        else:  # a new wire part added without a mapping here
            raise InvalidRequestError(
                f"content part {part.type!r} is not supported by this server",
                code="unsupported_content",
            )
    return Message(role=item.role, content=tuple(parts), turn_id=item.id)
