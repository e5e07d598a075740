"""A CTranslate2 Whisper model (``model.bin``, as faster-whisper loads it) read back into PyTorch:
the variables of the file, then the same weights under transformers' names for a
``WhisperForConditionalGeneration`` (with the ``WhisperConfig`` fields that size it).

The reader follows the layout CTranslate2's own writer produces (``ctranslate2.specs.model_spec``,
binary version 6): a header, then for each variable its name, shape, type and bytes, then the
aliases. Weights quantised to int8 / int16 are scaled back to float32. The mapping is the inverse
of CTranslate2's ``WhisperLoader``: self-attention's fused ``linear_0`` is split into q, k, v,
cross-attention's ``linear_1`` into k, v; the key projections' bias (zeros there: transformers'
``k_proj`` has none) is dropped. No network, no ctranslate2 import: numpy and torch only.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import torch
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"reading a CTranslate2 Whisper model needs numpy and torch ({exc}); "
        "install the extra: pip install 'assistant[local-llm]'"
    ) from exc

from assistant.errors import ConfigurationError

#: The ``model.bin`` layouts this reader knows (CTranslate2 4.x writes 6).
BINARY_VERSIONS = (6,)
#: Type ids in the order of CTranslate2's ``DataType`` enum.
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")


def read_ct2_variables(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` by its name (``encoder/conv1/weight``, ...),
    aliases included, quantised weights scaled back to float32 (their ``*_scale`` dropped)."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    reader = _Reader(data, path)
    version = reader.unpack("I")
    if version not in BINARY_VERSIONS:
        raise ConfigurationError(
            f"{path}: CTranslate2 binary version {version}; this reader knows {BINARY_VERSIONS}"
        )
    reader.string()  # the spec's name, e.g. WhisperSpec
    reader.unpack("I")  # its revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        type_id, size = reader.unpack("B"), reader.unpack("I")
        variables[name] = _array(reader.take(size), type_id, shape, path, name)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return _dequantized(variables)


class _Reader:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, size: int) -> memoryview:
        if self.offset + size > len(self.data):
            raise ConfigurationError(f"{self.path}: truncated CTranslate2 model file")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.unpack("H"))[:-1]).decode("utf-8")  # NUL-terminated


def _array(raw: memoryview, type_id: int, shape: tuple[int, ...], path: Path, name: str):
    if type_id >= len(_DTYPES):
        raise ConfigurationError(f"{path}: {name} has an unknown CTranslate2 type id {type_id}")
    dtype = _DTYPES[type_id]
    if dtype == "bfloat16":  # the upper half of a float32
        halves = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _dequantized(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(variables)
    for name in [n for n in variables if n.endswith("_scale")]:
        weight_name = name[: -len("_scale")]
        weight, scale = variables[weight_name], variables[name].astype(np.float32)
        if weight.dtype in (np.int8, np.int16):
            shape = (-1,) + (1,) * (weight.ndim - 1) if scale.ndim else ()
            out[weight_name] = weight.astype(np.float32) / scale.reshape(shape)
        del out[name]
    return out


# -- CTranslate2 names -> transformers names ----------------------------------------------------------


def transformers_whisper_weights(
    variables: dict[str, np.ndarray],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config_fields, state_dict)`` for a transformers ``WhisperForConditionalGeneration``:
    ``WhisperConfig(**config_fields)`` has its sizes, and the state dict loads into it with
    ``strict=True`` (``proj_out.weight`` is the token embedding, as the model ties them)."""
    config = _config_fields(variables)
    state: dict[str, torch.Tensor] = {}

    def put(name: str, value: np.ndarray) -> None:
        state[name] = torch.from_numpy(np.array(value))  # a writable copy

    def linear(target: str, source: str) -> None:
        put(f"{target}.weight", variables[f"{source}/weight"])
        put(f"{target}.bias", variables[f"{source}/bias"])

    def norm(target: str, source: str) -> None:
        put(f"{target}.weight", variables[f"{source}/gamma"])
        put(f"{target}.bias", variables[f"{source}/beta"])

    def split(targets: list[str], source: str, d_model: int) -> None:
        weight, bias = variables[f"{source}/weight"], variables[f"{source}/bias"]
        for i, target in enumerate(targets):
            put(f"{target}.weight", weight[i * d_model : (i + 1) * d_model])
            if not target.endswith("k_proj"):  # transformers' key projection has no bias
                put(f"{target}.bias", bias[i * d_model : (i + 1) * d_model])

    d = config["d_model"]
    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        put(f"{prefix}.embed_positions.weight", variables[f"{side}/position_encodings/encodings"])
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        for n in range(config[f"{side}_layers"]):
            ours, theirs = f"{prefix}.layers.{n}", f"{side}/layer_{n}"
            attn = f"{ours}.self_attn"
            split([f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"],
                  f"{theirs}/self_attention/linear_0", d)  # fmt: skip
            linear(f"{attn}.out_proj", f"{theirs}/self_attention/linear_1")
            norm(f"{ours}.self_attn_layer_norm", f"{theirs}/self_attention/layer_norm")
            if side == "decoder":
                cross = f"{ours}.encoder_attn"
                linear(f"{cross}.q_proj", f"{theirs}/attention/linear_0")
                split([f"{cross}.k_proj", f"{cross}.v_proj"], f"{theirs}/attention/linear_1", d)
                linear(f"{cross}.out_proj", f"{theirs}/attention/linear_2")
                norm(f"{ours}.encoder_attn_layer_norm", f"{theirs}/attention/layer_norm")
            linear(f"{ours}.fc1", f"{theirs}/ffn/linear_0")
            linear(f"{ours}.fc2", f"{theirs}/ffn/linear_1")
            norm(f"{ours}.final_layer_norm", f"{theirs}/ffn/layer_norm")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    put("model.decoder.embed_tokens.weight", variables["decoder/embeddings/weight"])
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return config, state


def _config_fields(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """The ``WhisperConfig`` sizes, read off the shapes (and the two ``num_heads`` scalars)."""
    try:
        vocab_size, d_model = variables["decoder/embeddings/weight"].shape
        return {
            "vocab_size": int(vocab_size),
            "d_model": int(d_model),
            "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
            "encoder_layers": _count_layers(variables, "encoder"),
            "decoder_layers": _count_layers(variables, "decoder"),
            "encoder_attention_heads": int(variables["encoder/num_heads"]),
            "decoder_attention_heads": int(variables["decoder/num_heads"]),
            "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
            "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        }
    except KeyError as exc:
        raise ConfigurationError(f"not a CTranslate2 Whisper model: no variable {exc}") from None


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    count = 0
    while f"{side}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    return count


__all__ = ["BINARY_VERSIONS", "read_ct2_variables", "transformers_whisper_weights"]
