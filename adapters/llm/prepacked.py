"""The local model's linear layers with their weights laid out once for oneDNN (on a CPU).

Every projection, MLP and the LM head of a decoder is an ``nn.Linear``, which multiplies through
MKL's ``sgemm``: for one token a fast matrix-vector product, but from two rows up a general product
that re-packs panels of the weight matrix on every call, so a step over 2 sequences cost 1.7x one
over 1. ``prepack_linears`` makes each a ``PrepackedLinear`` in place: the weight also reordered
once into oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, no batch size
assumed) and multiplied with ``torch.ops.mkldnn._linear_pointwise``. Measured side by side in one
process on the 2-core AMD EPYC here (avx512, avx512_bf16), SmolLM2-135M, one thread, load 2.7-3.1
from other work, medians of 15:

- fp32: a decode step 39.7 -> 32.1 ms alone, 67.6 -> 33.0 ms for 2 and 87.9 -> 45.3 ms for 8
  sequences; a 32-token prefill 126.8 -> 59.7 ms, a 128-token one 338 -> 162 ms. (The LM head's share,
  49,152 x 576, in another run: the layers alone prepacked 54 ms a step for 8, with it 43.) Greedy tokens over
  ``bench.decode``'s 8 prompts x 48 tokens: all 311 the plain fp32 model's own, teacher-forced
  and free running.
- bf16 (``llm.precision=bf16``, where the CPU multiplies bf16 natively), another run: a decode
  step 30 -> 21 ms, a 32-token prefill 49 -> 42 ms; its agreement with fp32 is bf16's (0.987
  teacher-forced).

The cost is memory: the reordered weights are a copy (SmolLM2 in fp32: +0.52 GB of a process's
anonymous memory, the LM head's 113 MB of it), next to weights that are pages of the
memory-mapped checkpoint (which two worker processes share, and which the kernel may drop while
they go unread).

Not every CPU gains for one row. On the 2-core Intel Xeon of another session (avx512 and
avx512_vnni, no avx512_bf16), MKL's matrix-vector product was the faster one for a single
sequence (a one-token pass 46-60 ms plain vs 52-66 prepacked; decoding alone 22.0 vs 17.7
tokens/s through the scheduler) while 8 rows and long prefills still gained (8 rows 77 -> 68 ms,
128 rows 265 -> 228 ms, two threads). So ``choose_one_row_product`` times whole one-token passes
both ways when the model loads (alternating, medians) and keeps MKL's product for one-row inputs
where it is more than 5 % faster (``PrepackedLinear.one_row_plain``); two rows and more always
take the prepacked one.

Left as they are: layers not on the CPU, in another dtype, or in bf16 where the CPU lacks it, and
everything when oneDNN is missing or its product is not the plain one's on a sample. A pass with
gradients (``assistant train-projector`` trains through the frozen model) takes the plain product.
"""

from __future__ import annotations

import statistics
import time
import weakref
from typing import Any

import torch

from adapters.llm import int8_rows
from adapters.llm.precision import native_bf16
from adapters.torch_thread import run_sync
from assistant.errors import ConfigurationError

#: The largest difference from the plain product allowed on the sample ``prepack_linears`` checks.
_TOLERANCE = 1e-3
#: One-token passes timed each way by ``choose_one_row_product`` (after one of each to warm up).
_CALIBRATION_PASSES = 5
_prepared: weakref.WeakSet[Any] = weakref.WeakSet()


class PrepackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` that also holds its weight prepacked (``packed``, set by ``prepack``)
    and multiplies by it in a pass without gradients; a pass with them takes the plain product
    (autograd has no formula for the prepacked one). The module stays the one it was: its
    parameters, its hooks and its place in the model are untouched."""

    #: The weight in oneDNN's layout; None: not reordered (only ``row_int8`` is used).
    packed: torch.Tensor | None = None
    #: A one-row input takes the plain product (``choose_one_row_product``).
    one_row_plain = False
    #: Int8 weights and scales a one-row input is multiplied by (``quantise_one_row_products``).
    row_int8: tuple[torch.Tensor, torch.Tensor] | None = None
    #: The siblings it is multiplied with (``int8_rows.RowGroup``), if any.
    row_group: int8_rows.RowGroup | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return super().forward(x)
        if x.numel() == self.in_features:
            if self.row_group is not None:
                return self.row_group.product(self, x)
            if self.row_int8 is not None:
                return int8_rows.row_product(x, *self.row_int8, self.bias)
            if self.one_row_plain:
                return super().forward(x)
        if self.packed is None:
            return super().forward(x)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def prepack(linear: torch.nn.Linear) -> PrepackedLinear:
    """Make ``linear`` (in place) a ``PrepackedLinear``: its weight reordered once for oneDNN."""
    packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
    linear.__class__ = PrepackedLinear
    linear.packed = packed
    return linear  # type: ignore[return-value]


def quantise_one_row_products(model: Any) -> int:
    """Give every fp32 linear layer of ``model`` on the CPU (prepacked or not) int8 weights for
    one-row inputs (``int8_rows``): a lone sequence's decode steps; how many. 0, and nothing
    changed, where this torch lacks the product or it does not match the plain one on a sample."""
    if not int8_rows.supported() or not _int8_agrees():
        return 0
    swapped = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and _quantisable(module):
            if type(module) is torch.nn.Linear:
                module.__class__ = PrepackedLinear  # packed stays None: the plain product
            module.row_int8 = int8_rows.quantise(module.weight)
            swapped += 1
    for parent in model.modules():  # siblings fed the same input: one product for them all
        for names in int8_rows.SIBLINGS:
            layers = [getattr(parent, name, None) for name in names]
            if all(isinstance(layer, PrepackedLinear) and layer.row_int8 is not None
                   for layer in layers):  # fmt: skip
                group = int8_rows.RowGroup(layers)  # type: ignore[arg-type]
                for layer in layers:
                    layer.row_group = group  # type: ignore[union-attr]
    return swapped


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
    """Make the ``nn.Linear`` layers of ``model`` ``PrepackedLinear`` (see the module docstring
    for which); how many. Once per model: a second call, or a model where it does not apply,
    changes nothing and returns 0."""
    if model in _prepared:
        return 0
    _prepared.add(model)
    if not supported() or not _agrees():
        return 0
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and _packable(module):
            prepack(module)
            swapped += 1
    return swapped


def choose_one_row_product(model: Any) -> bool:
    """Time one-token passes of ``model`` with its ``PrepackedLinear`` layers taking one-row
    inputs prepacked and plain, alternating; keep plain (True) where it is more than 5 % faster
    by the medians. False, and nothing changed, for a model without such layers or whose pass
    fails here."""
    layers = [m for m in model.modules() if isinstance(m, PrepackedLinear)]
    if not layers:
        return False
    x = torch.zeros(1, 1, model.get_input_embeddings().embedding_dim, dtype=layers[0].weight.dtype)
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        with torch.inference_mode():
            for i in range(2 * _CALIBRATION_PASSES + 2):
                plain = bool(i % 2)
                for layer in layers:
                    layer.one_row_plain = plain
                started = time.perf_counter()
                model(inputs_embeds=x, use_cache=False)
                if i >= 2:  # the first of each: warm-up
                    times[plain].append(time.perf_counter() - started)
        chosen = statistics.median(times[True]) < 0.95 * statistics.median(times[False])
    except Exception:  # noqa: BLE001 - a model this pass does not fit: keep the prepacked one
        chosen = False
    for layer in layers:
        layer.one_row_plain = chosen
    return chosen


def _packable(linear: torch.nn.Linear) -> bool:
    weight = linear.weight
    if weight.device.type != "cpu" or not weight.is_contiguous():
        return False
    return weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and native_bf16())


def lay_out_products(model: Any, *, prepack: bool, int8_decode: bool, name: str) -> None:
    """How the local model's layers multiply, settled when it is built, not on a first request:
    prepacked (``prepack``; then one-row inputs timed both ways), with int8 one-row weights
    (``int8_decode``; a ``ConfigurationError`` where they cannot be had), both, or neither."""
    prepacked = prepack and prepack_linears(model)
    if int8_decode and not quantise_one_row_products(model):
        raise ConfigurationError(f"{name}: int8-decode needs fp32 weights and torch's int8 product")
    if prepacked and not int8_decode:
        run_sync(choose_one_row_product, model)  # on the torch thread, as every pass


def _quantisable(linear: torch.nn.Linear) -> bool:
    weight = linear.weight
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.dim() == 2


def _int8_agrees() -> bool:
    """The int8 one-row product against the plain one on a sample (within int8's rounding)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator)
    x = torch.randn(1, 64, generator=generator)
    try:
        with torch.inference_mode():
            got = int8_rows.row_product(x, *int8_rows.quantise(weight), None)
        expected = x @ weight.T
        return bool((got - expected).abs().max() < 0.05 * expected.abs().max())
    except RuntimeError:  # pragma: no cover - a build whose kernel refuses these inputs
        return False


def _agrees() -> bool:
    """A prepacked product against the plain one, on a small sample."""
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(32, 48, bias=False).requires_grad_(False)
    x = torch.randn(3, 32, generator=generator)
    try:
        with torch.inference_mode():
            expected = linear(x)
            return bool((prepack(linear)(x) - expected).abs().max() < _TOLERANCE)
    except RuntimeError:  # pragma: no cover - oneDNN refused the layout on this CPU
        return False


__all__ = [
    "PrepackedLinear", "choose_one_row_product", "lay_out_products", "prepack", "prepack_linears",
    "quantise_one_row_products", "supported",
]
