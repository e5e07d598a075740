"""Images in a conversation: validate and store what the client sends, and turn a stored image into
what the language model takes, with the expensive part cached in the store.

    PendingImage --decode/validate (thread)--> blob in the store (by sha256) --> ImagePart
    ImagePart --cache hit?--> embeddings (N, H)
              --miss--> blob --> decode --> VisionEncoder --> ImageProjector --> cache --> (N, H)
    ImagePart --> a short description (top classes), for a model that takes text only
    ImagePart --> blob --> decode --> pixels, for a model that takes images itself (no encoder:
                  a remote or native vision-language model needs none)
"""

from __future__ import annotations

import asyncio
import copy
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from assistant.errors import ConfigurationError, InvalidRequestError
from assistant.messages import ImagePart, PendingImage
from assistant.ports import ImageFeatures, ImageProjector, SessionStore, VisionEncoder
from assistant.vision.images import DecodedImage, ImageLimits, decode_image

#: How long derived data (embeddings, descriptions) stays cached.
CACHE_TTL_S = 7 * 24 * 3600
T = TypeVar("T")


@dataclass
class VisionStats:
    encoder_calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


class ImagePipeline:
    def __init__(
        self,
        encoder: VisionEncoder | None,
        projector: ImageProjector | None,
        store: SessionStore,
        *,
        limits: ImageLimits = ImageLimits(),
        top_k: int = 5,
        decode_concurrency: int = 2,
        min_side: int | None = 448,
    ) -> None:
        """``decode_concurrency``: images decoded at once (a large one takes hundreds of MB while
        it decodes); ``min_side``: pixels handed on are shrunk while their shorter side stays at
        least this (twice what a 224-pixel encoder reads; None keeps them whole)."""
        self.encoder = encoder
        self.projector = projector
        self.store = store
        self.limits = limits
        self.top_k = top_k
        self.stats = VisionStats()
        self.min_side = min_side
        self._decodes = asyncio.Semaphore(decode_concurrency)  # shared by the tenant views
        #: Encodings under way, by (store, cache key): shared by the tenant views too.
        self._encoding: dict[tuple[int, str], asyncio.Task[Any]] = {}

    def with_store(self, store: SessionStore) -> ImagePipeline:
        """The same encoder, projector and counters over another (a tenant's) store."""
        view = copy.copy(self)
        view.store = store
        return view

    async def ingest(self, pending: PendingImage) -> ImagePart:
        """Validate and decode the client's image (refusing bombs before decoding), store its
        bytes by sha256, and return the part the message stores."""
        async with self._decodes:  # validated only: no pixels kept
            decoded = await asyncio.to_thread(
                decode_image, pending.source, self.limits, pixels=False
            )
        await self.store.put_blob(decoded.sha256, decoded.encoded)
        return ImagePart(sha256=decoded.sha256, mime_type=decoded.mime_type)

    async def embeddings(self, part: ImagePart) -> np.ndarray:
        """The image's projected embeddings, (N, H) float32: from the cache, or encoded now."""
        if self.projector is None:
            raise InvalidRequestError(
                "no image projector is configured", code="unsupported_content"
            )
        key = f"emb:{self.projector.identity}:{part.sha256}"
        cached = await self.store.cache_get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return np.load(io.BytesIO(cached), allow_pickle=False)
        return await self._once(key, lambda: self._encode_embeddings(key, part))

    async def _encode_embeddings(self, key: str, part: ImagePart) -> np.ndarray:
        assert self.projector is not None
        self.stats.cache_misses += 1
        features = await self._features(part)
        vectors = await asyncio.to_thread(self.projector.project, features)  # (N, H)
        buffer = io.BytesIO()
        np.save(buffer, vectors.astype(np.float32), allow_pickle=False)
        await self.store.cache_set(key, buffer.getvalue(), CACHE_TTL_S)
        return vectors

    async def describe(self, part: ImagePart) -> str:
        """A short text for a model that takes no images: the encoder's top classes."""
        key = f"desc:{self._encoder().name}:{self.top_k}:{part.sha256}"
        cached = await self.store.cache_get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached.decode()
        return await self._once(key, lambda: self._encode_description(key, part))

    async def _encode_description(self, key: str, part: ImagePart) -> str:
        self.stats.cache_misses += 1
        text = describe_features(await self._features(part), self.top_k)
        await self.store.cache_set(key, text.encode(), CACHE_TTL_S)
        return text

    async def _once(self, key: str, encode: Callable[[], Awaitable[T]]) -> T:
        """``encode()`` (encode, then cache) once for every caller that wants ``key`` meanwhile,
        run as a task of its own: a caller that goes away (its client hung up) does not cancel
        it, so the result is cached all the same. Without this, a busy server started the same
        encoding for every turn showing the image, and each one cancelled was never cached."""
        slot = (id(self.store), key)
        task = self._encoding.get(slot)
        if task is None:
            task = asyncio.create_task(encode())
            self._encoding[slot] = task
            task.add_done_callback(lambda done: self._encoded(slot, done))
        return cast(T, await asyncio.shield(task))

    def _encoded(self, slot: tuple[int, str], task: asyncio.Task[Any]) -> None:
        self._encoding.pop(slot, None)
        if not task.cancelled():
            task.exception()  # retrieved: the callers still waiting get it, or nobody needs it

    async def pixels(self, part: ImagePart) -> np.ndarray:
        """The stored image decoded, (H, W, 3) uint8: for a model that takes images itself."""
        data = await self.store.get_blob(part.sha256)
        if data is None:
            raise InvalidRequestError(
                f"image {part.sha256[:12]}… is no longer stored", code="image_expired"
            )
        async with self._decodes:
            decoded: DecodedImage = await asyncio.to_thread(
                decode_image, data, self.limits, min_side=self.min_side
            )
        assert decoded.pixels is not None
        return decoded.pixels

    async def _features(self, part: ImagePart) -> ImageFeatures:
        pixels = await self.pixels(part)
        encoder = self._encoder()
        self.stats.encoder_calls += 1
        return await encoder.encode(pixels)

    def _encoder(self) -> VisionEncoder:
        if self.encoder is None:
            raise ConfigurationError("no vision encoder is built: the model takes images itself")
        return self.encoder


def describe_features(features: ImageFeatures, top_k: int) -> str:
    """``"an image of: tiger cat (38%), Egyptian cat (37%)"`` from the class posterior."""
    if features.class_probs is None or features.class_names is None:
        return "an image"
    order = np.argsort(features.class_probs)[::-1][:top_k]  # (k,)
    labels = [
        f"{features.class_names[i]} ({features.class_probs[i]:.0%})"
        for i in order
        if features.class_probs[i] >= 0.02 or i == order[0]
    ]
    return "an image of: " + ", ".join(labels)
