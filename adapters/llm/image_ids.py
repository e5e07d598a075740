"""A prompt with images for a language model that takes their embeddings: the rendered text's ids
with each image's embedding rows standing in at its ``IMAGE_MARKER`` as negative pseudo-ids unique
to the image (so KV-cache reuse tells two images apart), and the table of those rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

from assistant.errors import ConfigurationError
from assistant.ports import IMAGE_MARKER, PromptImage


def image_prompt(
    text: str,
    images: Sequence[PromptImage],
    token_ids: Callable[[str], list[int]],
    hidden: int,
    name: str,
) -> tuple[list[int], dict[int, torch.Tensor]]:
    """The ids of a rendered prompt ``text``, each ``IMAGE_MARKER`` replaced by its image's N
    embedding rows as negative pseudo-ids unique to the image, and the table of those rows."""
    pieces = text.split(IMAGE_MARKER)
    if len(pieces) - 1 != len(images):
        raise ValueError(f"{len(pieces) - 1} image markers for {len(images)} images")
    ids: list[int] = []
    rows: dict[int, torch.Tensor] = {}
    for index, piece in enumerate(pieces):
        ids.extend(token_ids(piece))
        if index == len(images):
            break
        if images[index].embeddings is None:
            raise ConfigurationError(f"{name} takes images as embeddings, not pixels")
        vectors = torch.from_numpy(images[index].embeddings).float()  # (N, H)
        if vectors.ndim != 2 or vectors.shape[1] != hidden:
            raise ConfigurationError(
                f"image embeddings of shape {tuple(vectors.shape)} do not fit hidden size {hidden}"
            )
        base = int(hashlib.sha256(images[index].key.encode()).hexdigest()[:12], 16)
        for row in range(vectors.shape[0]):
            pseudo_id = -(base * 4096 + row + 1)
            ids.append(pseudo_id)
            rows[pseudo_id] = vectors[row]  # (H,)
    return ids, rows


__all__ = ["image_prompt"]
