"""Image features -> embeddings in the language model's input space (the LLaVA idea).

A projector turns one image's encoder output (``ImageFeatures``: patches (P, D), class posterior
(C,)) into N embeddings of the language model's hidden size H, spliced into the prompt in place of N
image placeholder tokens. Projectors are built by name (``build_projector``), like LLaVA's
``multimodal_projector/builder.py``; an unknown name fails with the known ones listed:

    name              N       weights                                    needs training
    linear            P       Linear(D, H) per patch                     yes
    mlp2x_gelu        P       Linear(D, H) - GELU - Linear(H, H) per patch  yes (LLaVA-1.5's)
    class_embeddings  top_k   the LM's own mean token embedding of each class name  no (default)

``class_embeddings`` keeps the encoder's top-k classes and returns, per class, the mean of the LM's
input embeddings of the class name's tokens (optionally scaled by the class probability), so a small
chat model "reads" the image as a few words. Its table is computed from the LM once, at build time,
and saved with the projector: a saved one needs no LM to load, and its identity changes with the LM.

On disk a projector is a directory: ``projector.safetensors`` (the state dict) and ``projector.json``
(type, config, identity). ``identity`` (type + config + weights hash) is the cache key of projected
embeddings. ``project`` runs on the process's one torch thread (``adapters.torch_thread``).
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

try:
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"image projectors need torch and safetensors ({exc}); "
        "install the extra: pip install 'assistant[vision]'"
    ) from exc

from adapters.torch_thread import on_torch_thread
from assistant.errors import ConfigurationError, UnknownAdapterError
from assistant.ports import (
    EmbeddingTable,
    ImageFeatures,
    ImageProjector,
    VisionEncoderCapabilities,
)

CONFIG_FILE = "projector.json"
WEIGHTS_FILE = "projector.safetensors"
FORMAT_VERSION = 1


class Projector(nn.Module, abc.ABC):
    """``forward(patches (..., P, D), class_probs (..., C) | None) -> (..., N, H)`` float32.

    ``config`` holds the JSON-serialisable constructor arguments: ``type(self)(**config)`` rebuilds
    the module with the right shapes, and the saved state dict fills in its weights."""

    kind: ClassVar[str]
    hidden_size: int

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)

    @classmethod
    def build(cls, **config: Any) -> Projector:
        """A new projector from ``build_projector``'s keyword arguments (random init where trained)."""
        return cls(**config)

    @abc.abstractmethod
    def forward(self, patches: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        """(..., P, D) patch features and (..., C) class posterior -> (..., N, H) embeddings."""

    @abc.abstractmethod
    def num_embeddings(self, num_patches: int) -> int:
        """N: how many embeddings (image placeholder tokens) one image takes."""

    @on_torch_thread
    def project(self, features: ImageFeatures) -> torch.Tensor:
        """One image's features -> (N, H), without gradients, on the projector's device. Blocking;
        runs on the process's torch thread (``adapters.torch_thread``)."""
        ref = next(itertools.chain(self.parameters(), self.buffers()))
        patches = torch.as_tensor(np.asarray(features.patches, dtype=np.float32))  # (P, D)
        patches = patches.to(device=ref.device, dtype=ref.dtype)
        probs = features.class_probs
        if probs is not None:
            probs = torch.as_tensor(np.asarray(probs, dtype=np.float32), device=ref.device)  # (C,)
        with torch.no_grad():
            return self(patches, probs)  # (P, D), (C,) -> (N, H)

    @property
    def identity(self) -> str:
        """``{type}:{hash}``, the hash over the type, the config and every weight (computed on each
        call: a projector in training changes it). The cache key of projected embeddings."""
        digest = hashlib.sha256()
        digest.update(json.dumps({"type": self.kind, "config": self.config}, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy())
        return f"{self.kind}:{digest.hexdigest()[:24]}"


class LinearProjector(Projector):
    """One Linear(D, H) applied to every patch: N = P."""

    kind = "linear"

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__({"in_dim": in_dim, "hidden_size": hidden_size})
        self.in_dim, self.hidden_size = in_dim, hidden_size
        self.proj = nn.Linear(in_dim, hidden_size)

    def forward(self, patches: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        _check_dim(patches, self.in_dim)
        return self.proj(patches)  # (..., P, D) -> (..., P, H)

    def num_embeddings(self, num_patches: int) -> int:
        return num_patches


class MLPProjector(Projector):
    """LLaVA-1.5's ``mlp2x_gelu``: Linear(D, H) - GELU - Linear(H, H) per patch: N = P."""

    kind = "mlp2x_gelu"

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__({"in_dim": in_dim, "hidden_size": hidden_size})
        self.in_dim, self.hidden_size = in_dim, hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, patches: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        _check_dim(patches, self.in_dim)
        return self.mlp(patches)  # (..., P, D) -> (..., P, H) -> (..., P, H)

    def num_embeddings(self, num_patches: int) -> int:
        return num_patches


class ClassEmbeddingProjector(Projector):
    """Training-free: the top-k classes, each as the LM's mean token embedding of its name. N = k.

    Build it from a language model's embedding table (``build_projector("class_embeddings",
    table=..., class_names=...)``); the constructor itself makes an empty table to load into."""

    kind = "class_embeddings"
    table: torch.Tensor  # (C, H)

    def __init__(
        self,
        class_names: Sequence[str],
        hidden_size: int,
        *,
        top_k: int = 5,
        scale_by_probability: bool = False,
        text_template: str = " {}",
    ) -> None:
        if top_k < 1:
            raise ConfigurationError(f"class_embeddings: top_k must be at least 1, got {top_k}")
        super().__init__(
            {
                "class_names": list(class_names),
                "hidden_size": hidden_size,
                "top_k": top_k,
                "scale_by_probability": scale_by_probability,
                "text_template": text_template,
            }
        )
        self.class_names = tuple(class_names)
        self.hidden_size = hidden_size
        self.top_k = min(top_k, len(self.class_names))
        self.scale_by_probability = scale_by_probability
        self.register_buffer("table", torch.zeros(len(self.class_names), hidden_size))  # (C, H)

    @classmethod
    def build(  # type: ignore[override]
        cls,
        *,
        table: EmbeddingTable,
        class_names: Sequence[str],
        top_k: int = 5,
        scale_by_probability: bool = False,
        text_template: str = " {}",
    ) -> ClassEmbeddingProjector:
        """``text_template`` is the text tokenised per class: " {}" gives a BPE vocabulary's
        word-after-a-space tokens, the form a class name takes inside a sentence."""
        rows = class_name_embeddings(table, class_names, text_template)
        projector = cls(
            class_names,
            rows.shape[1],
            top_k=top_k,
            scale_by_probability=scale_by_probability,
            text_template=text_template,
        )
        projector.table.copy_(rows)
        return projector

    def forward(self, patches: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        if class_probs is None:
            raise ValueError("class_embeddings needs the encoder's class probabilities")
        _check_dim(class_probs, self.table.shape[0], what="class_probs")
        probs, index = torch.topk(class_probs.float(), self.top_k, dim=-1)  # (..., k), (..., k)
        out = self.table[index]  # (..., k, H)
        if self.scale_by_probability:
            out = out * probs.unsqueeze(-1)  # (..., k, H) * (..., k, 1)
        return out

    def num_embeddings(self, num_patches: int) -> int:
        return self.top_k

    def project(self, features: ImageFeatures) -> torch.Tensor:
        if features.class_names is not None and tuple(features.class_names) != self.class_names:
            raise ConfigurationError(
                "class_embeddings: the encoder's class names are not the ones this projector was "
                "built for"
            )
        return super().project(features)


@torch.no_grad()
def class_name_embeddings(
    table: EmbeddingTable, class_names: Sequence[str], text_template: str = " {}"
) -> torch.Tensor:
    """(C, H) float32 on the CPU: per class, the mean of the language model's input embeddings
    over the tokens of its name."""
    rows = []
    for name in class_names:
        text = text_template.format(name)
        ids = table.tokenize(text)
        if not ids:
            raise ConfigurationError(f"class_embeddings: {text!r} tokenises to nothing")
        rows.append(table.embed(ids).float().mean(dim=0))  # (T, H) -> (H,)
    return torch.stack(rows).cpu()  # (C, H)


def _check_dim(x: torch.Tensor, size: int, *, what: str = "patches") -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{what}: expected a last dimension of {size}, got shape {tuple(x.shape)}")


# -- the registry ----------------------------------------------------------------------------------

PROJECTORS: dict[str, type[Projector]] = {
    LinearProjector.kind: LinearProjector,
    MLPProjector.kind: MLPProjector,
    ClassEmbeddingProjector.kind: ClassEmbeddingProjector,
}
DEFAULT_PROJECTOR = ClassEmbeddingProjector.kind


def projector_class(name: str) -> type[Projector]:
    try:
        return PROJECTORS[name]
    except KeyError:
        known = ", ".join(sorted(PROJECTORS))
        raise UnknownAdapterError(f"unknown projector {name!r}; known: {known}") from None


@on_torch_thread  # a large copy (the class table) runs a parallel region
def build_projector(name: str, **config: Any) -> Projector:
    """A new projector by name: ``linear`` / ``mlp2x_gelu`` take ``in_dim`` and ``hidden_size``;
    ``class_embeddings`` takes ``table`` (an ``EmbeddingTable``), ``class_names`` (and ``top_k``,
    ``scale_by_probability``, ``text_template``)."""
    cls = projector_class(name)
    try:
        return cls.build(**config).eval()
    except TypeError as exc:  # a missing or unknown argument
        raise ConfigurationError(f"projector {name!r}: {exc}") from exc


def save_projector(projector: Projector, directory: str | Path) -> Path:
    """Write ``projector.safetensors`` and then ``projector.json`` (type, config, identity)."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().to("cpu").contiguous() for name, t in projector.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"type": projector.kind})
    meta = {
        "format_version": FORMAT_VERSION,
        "type": projector.kind,
        "config": projector.config,
        "identity": projector.identity,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder


@on_torch_thread
def load_projector(directory: str | Path, *, device: str = "cpu") -> Projector:
    """A saved projector, in eval mode; its identity is checked against the saved one."""
    folder = Path(directory).expanduser()
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        cls = projector_class(meta["type"])
        projector = cls(**meta["config"])
        projector.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    except UnknownAdapterError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigurationError(f"cannot load the projector in {folder}: {exc}") from exc
    if meta.get("identity") not in (None, projector.identity):
        raise ConfigurationError(f"the projector in {folder} does not match its saved identity")
    return projector.to(device).eval()


class ProjectorAdapter(ImageProjector):
    """A projector behind the core's ``ImageProjector`` port: numpy out, identity computed once."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector.eval()
        self.identity = projector.identity

    @on_torch_thread  # one hop for the projection and the conversion
    def project(self, features: ImageFeatures) -> np.ndarray:
        return self.projector.project(features).float().numpy()  # (N, H)


def build(
    settings: Any,
    *,
    encoder: VisionEncoderCapabilities,
    table: Callable[[], EmbeddingTable],
) -> ProjectorAdapter:
    """The configured projector for a language model that takes embeddings: a directory saved by
    ``save_projector``, or ``class_embeddings`` built from the encoder's class names and the
    language model's embedding ``table`` (asked for only then)."""
    name = settings.vision.projector
    if Path(name).expanduser().is_dir():
        return ProjectorAdapter(load_projector(Path(name).expanduser()))
    if name != "class_embeddings":
        raise ConfigurationError(
            f"projector {name!r}: give 'class_embeddings' or a directory saved by save_projector "
            "(linear and mlp2x_gelu need trained weights)"
        )
    if not encoder.class_names:
        raise ConfigurationError(
            "the class_embeddings projector needs an encoder with class scores; this one has "
            "none: train a projector (assistant train-projector) and set "
            "ASSISTANT_VISION__PROJECTOR to its directory"
        )
    projector = build_projector(
        "class_embeddings",
        table=table(),
        class_names=encoder.class_names,
        top_k=settings.vision.top_k,
    )
    return ProjectorAdapter(projector)


__all__ = [
    "DEFAULT_PROJECTOR",
    "ClassEmbeddingProjector",
    "LinearProjector",
    "MLPProjector",
    "PROJECTORS",
    "Projector",
    "build_projector",
    "class_name_embeddings",
    "load_projector",
    "projector_class",
    "save_projector",
]
