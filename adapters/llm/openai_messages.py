"""A prompt as OpenAI's chat completions API takes it: ``messages`` with ``content`` a string, or,
for a message with images, a list of ``text`` and ``image_url`` parts in the order of the text's
``IMAGE_MARKER``s, each image a JPEG data URL made from its decoded pixels.

JPEG at quality 90, not PNG: a photo's JPEG is a tenth of its PNG's bytes and takes a tenth of the
time to encode (the remote VLM's processor resizes it to a few hundred pixels anyway). Encoding
runs off the event loop; data URLs are kept by image key (its sha256), so the images of earlier
turns, sent again with the history, are encoded once.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from assistant.errors import ConfigurationError
from assistant.ports import IMAGE_MARKER, PromptImage, PromptMessage

JPEG_QUALITY = 90


def jpeg_data_url(pixels: Any) -> str:
    """``data:image/jpeg;base64,...`` of an (H, W, 3) uint8 RGB array. Blocking."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class DataURLCache:
    """Image key -> data URL, the ``size`` most recently used."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._urls: OrderedDict[str, str] = OrderedDict()

    async def data_url(self, image: PromptImage) -> str:
        url = self._urls.get(image.key)
        if url is None:
            if image.pixels is None:
                raise ConfigurationError(
                    "openai_compatible takes images as pixels (image_url parts), not embeddings"
                )
            url = await asyncio.to_thread(jpeg_data_url, image.pixels)
            self._urls[image.key] = url
            if len(self._urls) > self.size:
                self._urls.popitem(last=False)
        else:
            self._urls.move_to_end(image.key)
        return url


async def chat_messages(
    messages: Sequence[PromptMessage], images: DataURLCache | None
) -> list[dict[str, Any]]:
    """The request's ``messages``. ``images`` None: a model without the image capability (the
    orchestrator sends it descriptions; a stray marker is dropped)."""
    chat: list[dict[str, Any]] = []
    for message in messages:
        if not message.images or images is None:
            chat.append({"role": message.role, "content": message.text.replace(IMAGE_MARKER, "")})
            continue
        pieces = message.text.split(IMAGE_MARKER)
        if len(pieces) - 1 != len(message.images):
            raise ValueError(f"{len(pieces) - 1} image markers for {len(message.images)} images")
        parts: list[dict[str, Any]] = []
        for index, piece in enumerate(pieces):
            if piece.strip():
                parts.append({"type": "text", "text": piece})
            if index < len(message.images):
                url = await images.data_url(message.images[index])
                parts.append({"type": "image_url", "image_url": {"url": url}})
        chat.append({"role": message.role, "content": parts})
    return chat
