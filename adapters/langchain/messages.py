"""Messages between LangChain and this project's prompts, both ways, and stop sequences.

- ``to_langchain``: a ``Prompt`` -> LangChain messages (``LangChainLanguageModel``); an image's
  pixels become a standard ``image`` content block (PNG, base64) where its marker stood;
- ``from_langchain``: LangChain messages -> a ``Prompt`` (``AssistantChatModel``); images are read
  through ``message.content_blocks`` (standard ``image`` blocks with base64 data or a data URL,
  and OpenAI ``image_url`` blocks, which LangChain turns into the same), decoded and checked with
  the server's own limits, and handed on as pixels (a model that takes images) or as a text
  description (a ``describe`` callable, e.g. the configured vision encoder's top classes);
- ``to_domain``: LangChain messages -> the server's ``Message`` objects (text parts, pending
  images) for ``assistant.completions``, the path ``POST /v1/chat/completions`` takes.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from assistant.errors import InvalidRequestError
from assistant.messages import Message, PendingImage, TextPart
from assistant.ports import IMAGE_MARKER, Prompt, PromptImage, PromptMessage, PromptRole
from assistant.vision.images import DEFAULT_LIMITS, ImageLimits, decode_image

#: pixels (H, W, 3) uint8 -> a short text saying what the image shows.
Describe = Callable[[np.ndarray], Awaitable[str]]

_ROLES: dict[str, PromptRole] = {"system": "system", "human": "user", "ai": "assistant"}


# -- a prompt -> LangChain -------------------------------------------------------------------------


def png_block(pixels: np.ndarray) -> dict[str, Any]:
    """A standard image content block holding ``pixels`` as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image", "base64": data, "mime_type": "image/png"}


def _content(message: PromptMessage, image_input: bool) -> str | list[dict[str, Any]]:
    if not message.images or not image_input:
        return message.text.replace(IMAGE_MARKER, "")
    pieces = message.text.split(IMAGE_MARKER)
    blocks: list[dict[str, Any]] = []
    for index, piece in enumerate(pieces):
        if piece:
            blocks.append({"type": "text", "text": piece})
        image = message.images[index] if index < len(pieces) - 1 else None
        if image is not None and image.pixels is not None:
            blocks.append(png_block(image.pixels))
    return blocks


def to_langchain(prompt: Prompt, *, image_input: bool = False) -> list[BaseMessage]:
    """LangChain's messages for ``prompt``; its images as content blocks when ``image_input``,
    else left out (a text-only model was given their descriptions as text already)."""
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m.role](content=_content(m, image_input)) for m in prompt.messages]


# -- LangChain -> a prompt -------------------------------------------------------------------------


def _image_source(block: dict[str, Any]) -> str | bytes:
    if block.get("base64"):
        try:
            return base64.b64decode(block["base64"], validate=True)
        except ValueError as exc:
            raise InvalidRequestError(
                f"an image block's base64 is not valid ({exc})", code="invalid_base64"
            ) from exc
    if block.get("url"):
        return str(block["url"])  # a data URL (an http(s) one is refused: nothing is fetched)
    raise InvalidRequestError(
        "an image block needs base64 data or a data URL (a file_id is not supported)",
        code="unsupported_content",
    )


def _role(message: BaseMessage) -> PromptRole:
    role = _ROLES.get(message.type)
    if role is None:
        raise InvalidRequestError(
            f"a {message.type!r} message is not supported: system, human and ai messages are "
            "(this model calls no tools)",
            code="unsupported_content",
        )
    return role


def _unsupported_block(kind: object) -> InvalidRequestError:
    return InvalidRequestError(
        f"a {kind!r} content block is not supported: text and image blocks are",
        code="unsupported_content",
    )


async def _message(
    message: BaseMessage, *, pixels: bool, describe: Describe | None, limits: ImageLimits
) -> PromptMessage:
    role = _role(message)
    texts: list[str] = []
    images: list[PromptImage] = []
    for block in message.content_blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])  # type: ignore[typeddict-item]
        elif kind == "image":
            decoded = await asyncio.to_thread(decode_image, _image_source(dict(block)), limits)
            if pixels:
                images.append(PromptImage(key=decoded.sha256, pixels=decoded.pixels))
                texts.append(IMAGE_MARKER)
            elif describe is not None:
                texts.append(f"[Image: {await describe(decoded.pixels)}]\n")
            else:
                texts.append("[an image not shown]\n")
        elif kind != "reasoning":
            raise _unsupported_block(kind)
    return PromptMessage(role, "".join(texts), tuple(images))


async def from_langchain(
    messages: Sequence[BaseMessage],
    *,
    pixels: bool = False,
    describe: Describe | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Prompt:
    """The prompt for ``messages``. ``pixels``: images go as pixels (the model takes images);
    else each is described by ``describe``, or noted as not shown when there is none."""
    rendered = [
        await _message(m, pixels=pixels, describe=describe, limits=limits) for m in messages
    ]
    return Prompt(tuple(rendered))


# -- LangChain -> the server's messages (the in-process ``Completions`` path) ---------------------


def _data_url(block: dict[str, Any]) -> str:
    if block.get("base64"):
        return f"data:{block.get('mime_type') or 'image/png'};base64,{block['base64']}"
    if block.get("url"):
        return str(block["url"])  # a data URL (the image pipeline refuses an http(s) one)
    raise InvalidRequestError(
        "an image block needs base64 data or a data URL (a file_id is not supported)",
        code="unsupported_content",
    )


def to_domain(messages: Sequence[BaseMessage]) -> list[Message]:
    """The server's ``Message`` objects for ``messages``: text parts and pending images (data
    URLs, validated and decoded by the image pipeline as a client's are)."""
    found = []
    for message in messages:
        role = _role(message)
        parts: list[Any] = []
        for block in message.content_blocks:
            kind = block.get("type")
            if kind == "text":
                parts.append(TextPart(text=block["text"]))  # type: ignore[typeddict-item]
            elif kind == "image":
                parts.append(PendingImage(source=_data_url(dict(block))))
            elif kind != "reasoning":
                raise _unsupported_block(kind)
        found.append(Message(role=role, content=tuple(parts or [TextPart(text="")])))
    return found
