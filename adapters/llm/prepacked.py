"""The local model's linear layers with their weights laid out once for oneDNN (on a CPU).

Every projection and MLP of a decoder layer is an ``nn.Linear``, which multiplies through MKL's
``sgemm``: for one token a fast matrix-vector product, but from two rows up a general product that
re-packs panels of the weight matrix on every call, so a step over 2 sequences cost 1.6x one over
1 (SmolLM2-135M, one thread: 43 ms alone, 70 ms for 2, 83 ms for 8). ``prepack_linears`` swaps
each for ``PrepackedLinear``: the weight reordered once into oneDNN's blocked layout
(``torch.ops.mkldnn._reorder_linear_weight``, no batch size assumed) and multiplied with
``torch.ops.mkldnn._linear_pointwise``. Measured side by side on the 2-core AMD EPYC here
(avx512, avx512_bf16), one thread, load 2-3 from other work:

- fp32: a decode step 42-43 -> 32-34 ms alone and 83 -> 59 ms for 8 sequences, a 32-token
  prefill 121-123 -> 66-69 ms, a 128-token one 364 -> 181 ms. Greedy tokens over
  ``bench.decode``'s 8 prompts x 48 tokens: all 311 the plain fp32 model's own, teacher-forced
  and free running.
- bf16 (``llm.precision=bf16``, where the CPU multiplies bf16 natively): a decode step 30 -> 21
  ms, a 32-token prefill 49 -> 42 ms; its agreement with fp32 is bf16's (0.987 teacher-forced).

The cost is memory: the reordered weights are a copy (SmolLM2 in fp32: +409 MB of a process's
anonymous memory), while the weights they replace were pages of the memory-mapped checkpoint
that the kernel may drop once unused (and that two worker processes share).

Left as they are: the LM head (tied to the token embeddings, which the prompt's embedding and
``input_embeddings`` read; tests hook it), layers not on the CPU, in another dtype, or in bf16
where the CPU lacks it, and everything when oneDNN is missing or its product is not the plain
one's on a sample (then nothing changes). A pass with gradients (``assistant train-projector``
trains through the frozen model) multiplies by the weight unpacked again, through autograd.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from adapters.llm.precision import native_bf16

#: The largest difference from ``F.linear`` allowed on the sample ``prepack_linears`` checks.
_TOLERANCE = 1e-3
_prepared: weakref.WeakSet[Any] = weakref.WeakSet()


class PrepackedLinear(torch.nn.Module):
    """An ``nn.Linear`` (weight ``(out, in)``, optional bias) with its weight prepacked."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)  # opaque layout
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if torch.is_grad_enabled() and x.requires_grad:  # autograd needs the plain product
            return torch.nn.functional.linear(x, self.packed.to_dense(), self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prepacked"


def supported() -> bool:
    """Whether this torch has oneDNN's prepacked linear product."""
    ops = torch.ops.mkldnn
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):  # pragma: no cover - a build without the ops
        return False


def prepack_linears(model: Any) -> int:
    """Swap the ``nn.Linear`` layers of ``model`` (all but its output embeddings, the LM head)
    for ``PrepackedLinear``; how many were swapped. Once per model: a second call, or a model
    where it does not apply (see the module docstring), changes nothing and returns 0."""
    if model in _prepared:
        return 0
    _prepared.add(model)
    if not supported() or not _agrees():
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child is not head and _packable(child):
                setattr(parent, name, PrepackedLinear(child))
                swapped += 1
    return swapped


def _packable(linear: torch.nn.Linear) -> bool:
    weight = linear.weight
    if weight.device.type != "cpu" or not weight.is_contiguous():
        return False
    return weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and native_bf16())


def _agrees() -> bool:
    """A prepacked product against the plain one, on a small sample."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 32, generator=generator)
    x = torch.randn(3, 32, generator=generator)
    try:
        with torch.inference_mode():
            linear = torch.nn.Linear(32, 48, bias=False)
            linear.weight.data.copy_(weight)
            out = PrepackedLinear(linear)(x)
            return bool((out - x @ weight.T).abs().max() < _TOLERANCE)
    except RuntimeError:  # pragma: no cover - oneDNN refused the layout on this CPU
        return False


__all__ = ["PrepackedLinear", "prepack_linears", "supported"]
