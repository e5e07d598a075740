"""Int8 weights for one-row products: what ``llm.precision=int8-decode`` multiplies a single
sequence's decode steps by (``prepacked.quantise_one_row_products`` puts them on the layers).

A decode step of one sequence multiplies one row by every weight matrix: on a CPU it is bound by
reading the weights (SmolLM2-135M in fp32: 540 MB a token). Each matrix here also gets an int8
copy with one scale per output row (symmetric, ``round(w / s)``, ``s = max|w_row| / 127``), and a
one-row input is multiplied by that copy with ``torch.ops.aten._weight_int8pack_mm`` (the input in
bf16, the scales in bf16, the result back in the layer's dtype): a quarter of the bytes.
Everything with two rows or more (a prompt's prefill, a batched step of several sequences) keeps
the fp32 product, so prompts are read exactly and batching is unchanged.

Measured on the 2-core Intel Xeon of 2026-12-03 (avx512, avx512_vnni, no avx512_bf16, where bf16
is no faster than fp32): the LM head's product 1.19 vs 4.06 ms (fp32); greedy decoding in bare
passes 36.6 vs 27.4 tokens/s; 97.1 % of the fp32 model's greedy tokens picked when fed its reply
(311 tokens, ``bench.decode``, one-row passes as decoding runs them; bf16 everywhere: 98.7 %).
The activations have to go in as bf16: with fp32 inputs the kernel was 6x slower than fp32's
product (the measure an earlier session took for "int8 weights at half fp32's speed").
"""

from __future__ import annotations

import torch

#: Largest |w| maps to this (symmetric, one scale per output row).
_LEVELS = 127


def supported() -> bool:
    """Whether this torch has the int8-weight product."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def quantise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in)`` float weights -> the int8 copy ``(out, in)`` and the scales ``(out,)`` bf16."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / _LEVELS).clamp(min=torch.finfo(torch.float32).tiny)
    ints = torch.round(w / scales[:, None]).clamp(-_LEVELS, _LEVELS).to(torch.int8).contiguous()
    return ints, scales.to(torch.bfloat16)


def row_product(
    x: torch.Tensor, ints: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (ints * scales).T + bias`` for ``x`` holding one row, ``(..., in) -> (..., out)``."""
    out = torch.ops.aten._weight_int8pack_mm(x.reshape(1, -1).to(torch.bfloat16), ints, scales)
    out = out.to(x.dtype).reshape(*x.shape[:-1], ints.shape[0])
    return out if bias is None else out + bias


class RowGroup:
    """Sibling layers a module feeds the same input one after the other (``q_proj``, ``k_proj``,
    ``v_proj``; ``gate_proj``, ``up_proj``), multiplied together: one int8 product over their
    rows stacked, on the first one's call, and the others' shares handed back when they are
    called with that same tensor. Each layer's own weights are views of the stacked ones; a call
    in another order or with another input multiplies that layer alone."""

    def __init__(self, layers: list[torch.nn.Linear]) -> None:
        quantised = [getattr(layer, "row_int8", None) or quantise(layer.weight) for layer in layers]
        self.ints = torch.cat([ints for ints, _ in quantised]).contiguous()
        self.scales = torch.cat([scales for _, scales in quantised]).contiguous()
        self.sizes = [int(ints.shape[0]) for ints, _ in quantised]
        self.layers = layers
        self._input: torch.Tensor | None = None  # the input whose shares wait (held: no id reuse)
        self._waiting: dict[int, torch.Tensor] = {}  # id(layer) -> its share of that product
        start = 0
        for layer, size in zip(layers, self.sizes):
            layer.row_int8 = (self.ints[start : start + size], self.scales[start : start + size])
            start += size

    def product(self, layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if layer is self.layers[0]:
            out = row_product(x, self.ints, self.scales, None)
            shares = out.split(self.sizes, dim=-1)
            self._input = x
            self._waiting = {
                id(other): share if other.bias is None else share + other.bias
                for other, share in zip(self.layers[1:], shares[1:])
            }
            return shares[0] if layer.bias is None else shares[0] + layer.bias
        share = self._waiting.pop(id(layer), None) if self._input is x else None
        if not self._waiting:
            self._input = None
        if share is not None:
            return share
        ints, scales = layer.row_int8  # type: ignore[misc]
        return row_product(x, ints, scales, layer.bias)


#: Sibling layers grouped by ``RowGroup``, by their names in their parent module.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


__all__ = ["SIBLINGS", "RowGroup", "quantise", "row_product", "supported"]
