"""Tiny random Whisper models for tests, built offline in well under a second: a transformers
``WhisperForConditionalGeneration`` saved with its processor (tiny.en's own tokenizer, so the
vocabulary and special tokens are the real ones), and an openai-whisper ``.pt`` checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: openai-whisper needs a 30 s window (1500 audio positions) and a feed-forward 4 x the width.
TINY_SIZES: dict[str, Any] = {
    "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "max_source_positions": 1500, "max_target_positions": 64,
}  # fmt: skip


def save_tiny_transformers_whisper(folder: Path, *, seed: int = 0, **sizes: Any) -> Path:
    """A random ``WhisperForConditionalGeneration`` (``TINY_SIZES`` updated by ``sizes``) and a
    ``WhisperProcessor``, saved with ``save_pretrained`` into ``folder``."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    from adapters.asr.bundled import default_model_dir

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(default_model_dir() / "tokenizer.json"))
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), decoder_start_token_id=start,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, **{**TINY_SIZES, **sizes},
    )  # fmt: skip
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():  # layer norms start as ones and zeros: make every weight distinct
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(), tokenizer).save_pretrained(folder)
    return Path(folder)


def save_tiny_openai_whisper(path: Path, *, seed: int = 0, n_text_ctx: int = 16) -> Path:
    """A random English-only ``whisper.model.Whisper`` (width 16, one layer each side, tiny.en's
    vocabulary) saved as openai-whisper saves its checkpoints: ``{"dims", "model_state_dict"}``.
    A random decoder runs to its length limit: ``n_text_ctx`` keeps that short."""
    from dataclasses import asdict

    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
        n_vocab=51864, n_text_ctx=n_text_ctx, n_text_state=16, n_text_head=2, n_text_layer=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():  # left uninitialised (torch.empty) by openai-whisper
        model.decoder.positional_embedding.normal_(0.0, 0.02)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return Path(path)


__all__ = ["TINY_SIZES", "save_tiny_openai_whisper", "save_tiny_transformers_whisper"]
