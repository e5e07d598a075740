"""The number format a local transformers model is loaded in (``LLMSettings.precision``).

- ``fp32`` (the default, and the baseline of the ``ttft_by_turn`` bench): the weights as prepared.
- ``bf16``: weights, activations and the KV cache in bfloat16 (logits are turned back to fp32
  before a token is picked). A decode step of a 135M model on a CPU is bound by reading the weights
  (540 MB per token in fp32); bf16 halves that, and on a CPU with ``avx512_bf16`` (or AMX) oneDNN
  multiplies bf16 matrices natively. Where the CPU lacks them, bf16 products are emulated:
  ``native_bf16()`` says whether oneDNN takes bf16 at all (it also does on avx512 without
  avx512_bf16, emulating). Decoding one sequence, bf16 against fp32 with the plain products
  (``ttft_by_turn``'s baseline): 1.96x on a 2-core AMD EPYC with avx512_bf16 (1.5x fp32 with
  its layers prepacked); 0.96-1.15x on a 2-core Intel Xeon with avx512 but no avx512_bf16 (the
  emulated products cost what the halved reads save).

Greedy outputs change a little in bf16. Measured on SmolLM2-135M-Instruct over 8 prompts x 48
greedy tokens (313 tokens; ``bench.decode``): 98.7 % of the tokens are the fp32 model's own choice
when both are fed the fp32 reply (teacher-forced agreement), and 71 % of the tokens come before the
first token that differs (``identical_prefix_share``): once one token differs, the replies go
separate, equally plausible ways. The tolerance the tests hold bf16 to: ``BF16_MIN_AGREEMENT``.

- ``int8-decode``: the fp32 model, and int8 copies of its weights (one scale per output row) that
  a single sequence's decode steps multiply by, their inputs in bf16 (``adapters.llm.int8_rows``);
  prompts and batched steps of several sequences stay fp32. For CPUs without avx512_bf16, where
  bf16 saves nothing: on the 2-core Intel Xeon of 2026-12-03, decoding 1.72x plain fp32
  through ``stream()`` side by side (per repeat 1.68-1.85; Llama models' lone decode steps run
  through ``adapters.llm.lean_decode``, 1.29-1.48x through transformers' modules); on a 2-core
  AMD EPYC with AVX2 only (2026-12-04) 2.17x (per repeat 2.04-2.50); 96.8-97.1 % of the greedy
  tokens agreeing (teacher-forced, one-row passes), +135 MB for SmolLM2. The
  tolerance the tests hold it to: ``INT8_DECODE_MIN_AGREEMENT``. A sequence decoding alone and the
  same one in a batch take different products here: their tokens may differ (in fp32 and bf16
  they are the same).

Measured and not offered (figures in the README's performance section): int8 dynamic quantisation
of the Linear layers (``torch.ao.quantization.quantize_dynamic``, per-tensor or per-channel) is
the fastest, but only 41-47 % of its tokens agree with fp32 (78 % with ``down_proj`` left in
fp32): SmolLM2's activations have outliers that one int8 scale per row cannot hold; int8
weights alone (``torch._weight_int8pack_mm``) with fp32 inputs keep 97.4 % agreement but decode
at half fp32's speed (with bf16 inputs they are ``int8-decode``); ``eager`` attention instead of
SDPA is no faster for one sequence; ``torch.compile`` (dynamic shapes) did not finish compiling the model within 15 minutes on the loaded 2-core
machine.
"""

from __future__ import annotations

from typing import Any

from assistant.errors import ConfigurationError

PRECISIONS = ("fp32", "bf16", "int8-decode")
#: The share of greedy tokens a bf16 model must agree on with fp32, teacher-forced (measured:
#: 0.987 over 313 tokens); what ``tests/integration/test_smollm2_precision.py`` asserts.
BF16_MIN_AGREEMENT = 0.95
#: The same for ``int8-decode`` (measured: 0.971 over 311 tokens, its one-row passes).
INT8_DECODE_MIN_AGREEMENT = 0.95


def torch_dtype(precision: str) -> Any:
    """The ``torch.dtype`` a model is loaded in; a clear error for anything but ``PRECISIONS``."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8-decode": torch.float32}
    if precision not in dtypes:
        raise ConfigurationError(
            f"unknown precision {precision!r} for the local language model; "
            f"use one of: {', '.join(PRECISIONS)}"
        )
    return dtypes[precision]


def precision_of(model: Any) -> str:
    """``fp32``, ``bf16`` or ``int8-decode`` (fp32 layers holding int8 one-row weights): how the
    model multiplies (``other`` for anything else)."""
    import torch

    names = {torch.float32: "fp32", torch.bfloat16: "bf16"}
    name = names.get(getattr(model, "dtype", None), "other")
    modules = model.modules() if hasattr(model, "modules") else ()
    if name == "fp32" and any(getattr(m, "row_int8", None) is not None for m in modules):
        return "int8-decode"
    return name


def native_bf16() -> bool:
    """Whether oneDNN takes bf16 matrices on this CPU: natively with avx512_bf16 or AMX, and also
    on avx512 without them, emulating (``bf16_in_hardware`` tells the two apart)."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def bf16_in_hardware() -> bool:
    """Whether the CPU multiplies bf16 itself (``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo``; False where that file is missing: not Linux). ``native_bf16`` says only
    whether oneDNN takes bf16, which it also does on avx512 without them, emulating."""
    from pathlib import Path

    try:
        with Path("/proc/cpuinfo").open() as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


__all__ = [
    "BF16_MIN_AGREEMENT", "INT8_DECODE_MIN_AGREEMENT", "PRECISIONS", "bf16_in_hardware",
    "native_bf16", "precision_of", "torch_dtype",
]
