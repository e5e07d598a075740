"""Vision ports: an image encoder and a projector into a language model's embedding space."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.ports.blocking import call_off_loop

if TYPE_CHECKING:
    import numpy as np


# --------------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFeatures:
    patches: "np.ndarray"  # (N, D) float32: N patch features of D dims
    class_probs: "np.ndarray | None" = None  # (C,) float32 posterior, when the encoder classifies
    class_names: tuple[str, ...] | None = None  # (C,) names of the classes


@dataclass(frozen=True)
class VisionEncoderCapabilities:
    feature_dim: int
    patches: int
    image_size: int = 224
    #: (C,) the names of the classes it scores, in order; None: no class scores.
    class_names: tuple[str, ...] | None = None

    @property
    def class_scores(self) -> bool:
        return bool(self.class_names)


class ImageProjector(abc.ABC):
    """Maps an encoder's features to embeddings in a language model's input space."""

    #: Names the projector's type, configuration and weights: the embedding cache's key.
    identity: str

    @abc.abstractmethod
    def project(self, features: ImageFeatures) -> "np.ndarray":
        """Blocking: (N, H) float32 embeddings for one image."""


class VisionEncoder(abc.ABC):
    """Turns a decoded RGB image into patch features (and class scores, where it has them)."""

    name: str = "vision_encoder"
    capabilities: VisionEncoderCapabilities
    timeout_s: float = 60.0

    async def encode(self, image: "np.ndarray") -> ImageFeatures:
        """``image``: uint8 RGB, shape (H, W, 3). Runs off the event loop."""
        return await call_off_loop(self.name, self.timeout_s, "features", self._encode_impl, image)

    @abc.abstractmethod
    def _encode_impl(self, image: "np.ndarray") -> ImageFeatures:
        """Blocking: encode one uint8 RGB (H, W, 3) image."""
