"""CLIP / SigLIP vision towers from transformers behind the ``VisionEncoder`` port.

The model is a local directory or a hub id: a vision-only checkpoint (``CLIPVisionModel``,
``SiglipVisionModel``) or a full CLIP / SigLIP one, of which only the vision tower is loaded.
Output per image: the patch features of one hidden layer, LLaVA style (the penultimate by default,
CLIP's CLS token dropped; SigLIP has none), as (N, D) float32 with N = (image_size / patch_size)^2.
No class scores: pair this encoder with a trained ``linear`` / ``mlp2x_gelu`` projector.

Preprocessing uses the checkpoint's image processor in its PIL variant (``CLIPImageProcessorPil``,
``SiglipImageProcessorPil``; the default variants want torchvision), or, when none loads, our own:
resize (shorter side + centre crop for CLIP, a square resize otherwise), /255, mean/std.
Encoding runs on the process's one torch thread (``adapters.torch_thread``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, AutoModel
    from transformers.image_processing_base import ImageProcessingMixin
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the hf_vision encoder needs torch, transformers, numpy and pillow ({exc}); "
        "install the extra: pip install 'assistant[vision]'"
    ) from exc

from adapters.torch_thread import on_torch_thread
from assistant.config import Settings
from assistant.errors import ConfigurationError
from assistant.ports import ImageFeatures, VisionEncoder, VisionEncoderCapabilities

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class SimplePreprocessor:
    """The fallback image processor: uint8 RGB (H, W, 3) -> {"pixel_values": (1, 3, S, S)}."""

    def __init__(self, size: int, mean: Any, std: Any, *, crop: bool) -> None:
        self.size, self.crop = size, crop
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)  # (3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)  # (3, 1, 1)

    def __call__(self, images: Image.Image, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        w, h, s = *images.size, self.size
        box = None
        if self.crop:  # the centre square, in source pixels: shorter side to S, then crop S x S
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        pil = images.convert("RGB").resize((s, s), Image.Resampling.BICUBIC, box=box)
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)  # (S, S, 3)
        x = (x.permute(2, 0, 1) - self.mean) / self.std  # (3, S, S)
        return {"pixel_values": x.unsqueeze(0)}  # (1, 3, S, S)


class HFVisionEncoder(VisionEncoder):
    """Patch features of one hidden layer of an already built CLIP / SigLIP vision tower."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        feature_layer: int = -2,
        drop_cls: bool = True,
        name: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if hasattr(model.config, "vision_config") and hasattr(model, "vision_model"):
            model = model.vision_model  # a full CLIPModel / SiglipModel: its vision tower
        config = model.config
        layers = config.num_hidden_layers
        if not -(layers + 1) <= feature_layer <= layers:
            raise ConfigurationError(
                f"feature_layer {feature_layer} is out of range for {layers} layers "
                f"(hidden_states has {layers + 1} entries: the embeddings, then each layer)"
            )
        self.model = model.eval()
        self.processor = processor
        self.feature_layer = feature_layer
        has_cls = hasattr(model.embeddings, "class_embedding")  # CLIP: yes, SigLIP: no
        self.skip = 1 if drop_cls and has_cls else 0  # leading tokens dropped
        grid = config.image_size // config.patch_size
        self.name = name or f"hf_vision:{config.model_type}"
        self.timeout_s = timeout_s
        self.capabilities = VisionEncoderCapabilities(
            feature_dim=config.hidden_size,
            patches=grid * grid + int(has_cls) - self.skip,
            image_size=config.image_size,
        )

    @classmethod
    @on_torch_thread
    def from_path(
        cls,
        path_or_hub_id: str,
        *,
        feature_layer: int = -2,
        drop_cls: bool = True,
        dtype: torch.dtype = torch.float32,
        **kw: Any,
    ) -> HFVisionEncoder:
        """Load the vision tower and its image processor; a directory is read with
        ``local_files_only`` (never a download), anything else is a hub id. On the torch thread,
        like the forward passes."""
        local = Path(path_or_hub_id).expanduser()
        source, offline = (str(local), True) if local.is_dir() else (path_or_hub_id, False)
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=offline)
            vision_config = getattr(config, "vision_config", None) or config
            if not hasattr(vision_config, "patch_size"):
                kind = config.model_type
                raise ConfigurationError(f"{path_or_hub_id}: {kind!r} is not a vision tower")
            # A full checkpoint loads into the vision-only class (its text tower stays on disk).
            model, info = AutoModel.from_pretrained(
                source, config=vision_config, local_files_only=offline, dtype=dtype,
                output_loading_info=True,
            )
        except ConfigurationError:
            raise
        except Exception as exc:  # not found, not a transformers checkpoint, unknown type, ...
            raise ConfigurationError(
                f"cannot load a vision model from {path_or_hub_id}: {exc}"
            ) from exc
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ConfigurationError(f"{path_or_hub_id}: weights missing for {missing[:5]} ...")
        processor = _load_processor(source, offline, vision_config)
        return cls(model, processor, feature_layer=feature_layer, drop_cls=drop_cls, **kw)

    def _encode_impl(self, image: np.ndarray) -> ImageFeatures:
        """Blocking; runs on the process's torch thread (the preprocessing, which may be torch ops
        too, included)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        return self._encode(image)

    @on_torch_thread
    def _encode(self, image: np.ndarray) -> ImageFeatures:
        ref = next(self.model.parameters())
        pixels = self.processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(device=ref.device, dtype=ref.dtype)  # (1, 3, S, S)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels, output_hidden_states=True)
            hidden = out.hidden_states[self.feature_layer]  # (1, T, D), T = P (+1 CLS for CLIP)
            patches = hidden[0, self.skip :]  # (P, D)
        return ImageFeatures(patches=np.ascontiguousarray(patches.float().cpu().numpy()))


def _load_processor(source: str, offline: bool, vision_config: Any) -> Any:
    """The checkpoint's image processor, PIL variant; else ``SimplePreprocessor`` with the saved
    mean/std (or the family's defaults) and the model's image size."""
    try:
        return AutoImageProcessor.from_pretrained(source, local_files_only=offline, backend="pil")
    except Exception:  # no preprocessor_config.json, or no PIL variant of its class
        pass
    try:
        saved, _ = ImageProcessingMixin.get_image_processor_dict(source, local_files_only=offline)
    except Exception:
        saved = {}
    is_clip = "clip" in vision_config.model_type
    default_mean, default_std = (CLIP_MEAN, CLIP_STD) if is_clip else ((0.5,) * 3, (0.5,) * 3)
    return SimplePreprocessor(
        vision_config.image_size,
        saved.get("image_mean", default_mean),
        saved.get("image_std", default_std),
        crop=is_clip,
    )


# -- the registry's entry point --------------------------------------------------------------------


def build(settings: Settings) -> HFVisionEncoder:
    """The vision tower at ``settings.vision.model`` (a local directory or hub id; required)."""
    model = settings.vision.model
    if not model:
        raise ConfigurationError(
            "the hf_vision encoder needs vision.model: a local CLIP / SigLIP directory or a hub id "
            "(ASSISTANT_VISION__MODEL)"
        )
    return HFVisionEncoder.from_path(model)


__all__ = ["HFVisionEncoder", "SimplePreprocessor", "build"]
