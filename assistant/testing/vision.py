"""A vision encoder that needs no weights: ``GatedEncoder`` scores two classes and holds each
encoding until ``release`` is set, so a test sees what callers do while an encoding runs."""

from __future__ import annotations

import threading

import numpy as np

from assistant.ports import ImageFeatures, VisionEncoder, VisionEncoderCapabilities


class GatedEncoder(VisionEncoder):
    name = "gated_encoder"

    def __init__(self, wait_s: float = 30.0) -> None:
        self.capabilities = VisionEncoderCapabilities(
            feature_dim=4, patches=1, class_names=("cat", "dog")
        )
        self.release = threading.Event()
        self.started = threading.Event()  # set when an encoding began
        self.calls = 0
        self.wait_s = wait_s

    def _encode_impl(self, image: np.ndarray) -> ImageFeatures:
        self.calls += 1
        self.started.set()
        if not self.release.wait(self.wait_s):
            raise TimeoutError("GatedEncoder was never released")
        return ImageFeatures(
            patches=np.zeros((1, 4), dtype=np.float32),
            class_probs=np.array([0.9, 0.1], dtype=np.float32),
            class_names=self.capabilities.class_names,
        )
