"""A lone sequence's decode step written out for a Llama model in ``llm.precision=int8-decode``:
the same products as the model's own pass, with far fewer Python calls around them.

A decode step of SmolLM2-135M in int8-decode took ~30 ms through transformers' modules, of which
the 121 int8 products were ~15 ms and the 5,730 other operator calls and the Python that makes
them the rest (2-core Intel Xeon, 2026-12-03, on the torch thread, two threads). Here one step is
a loop over the layers' weights, gathered once:

- the residual stream stays fp32; each RMSNorm is one ``torch.rms_norm`` and its output goes to
  the int8 product as bf16 once (the layers' ``row_int8`` / ``RowGroup`` weights: q/k/v and
  gate/up stacked, one product each);
- the rotary embedding is applied to the queries and keys together, from one cos/sin per step
  (the model's own ``rotary_emb``);
- the keys and values go through the cache layer's own ``update`` (``kv_cache.GrowingLayer``), so
  the cache stays the one every other pass reads and cross-turn reuse is unchanged;
- attention is SDPA over every cached position with the key/value heads as they are
  (``enable_gqa``): one query at the last position needs no mask.

Only one-token steps of one sequence take it (``TransformersLocalLM.step``): decode steps, and
a prompt's last token when all before it was cached (which the model's pass multiplied by the same
int8 weights); longer prompts and batched steps keep the model's pass with its fp32 products. A
step it cannot vouch for goes through the model too: with gradients on, with a forward hook on any
of the model's modules (or a global one), or on a cache that is not the model's layers holding
just the sequence's ids. ``LeanDecoder.build`` returns None for any model it does not cover: not
``model_type == "llama"``, biases, an activation other than SiLU, or layers without the int8
weights. Its logits match the model's own int8-decode pass (on SmolLM2 bitwise, over 40 steps;
the unit tests allow float rounding), so its greedy agreement with fp32 is int8-decode's, held to
``precision.INT8_DECODE_MIN_AGREEMENT`` by the SmolLM2 tests.

Measured side by side on that Xeon (medians of 20 steps, 5 rounds): a step 19-25 ms here, 23-36
ms through the model's modules, 33-47 ms for plain fp32. ``assistant bench --only ttft_by_turn``
through ``stream()``: 45.7 vs 26.2 tokens/s, decode_speedup 1.72 (per repeat 1.68-1.85; before,
1.29 in the full bench of 2026-12-03 evening).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adapters.llm.packed import Part

_int8_mm = (
    torch.ops.aten._weight_int8pack_mm if hasattr(torch.ops.aten, "_weight_int8pack_mm") else None
)


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's weights, as the lean step uses them."""

    attention_norm: torch.Tensor  # (H,)
    qkv: tuple[torch.Tensor, torch.Tensor]  # int8 (Q + 2 KV, H), scales bf16
    output: tuple[torch.Tensor, torch.Tensor]  # int8 (H, Q), scales
    mlp_norm: torch.Tensor  # (H,)
    gate_up: tuple[torch.Tensor, torch.Tensor]  # int8 (2 I, H), scales
    down: tuple[torch.Tensor, torch.Tensor]  # int8 (H, I), scales


class LeanDecoder:
    """``logits(cache, position, token_id)``: one decode step of a lone sequence, ``(1, V)``."""

    def __init__(self, model: Any, layers: list[_Layer]) -> None:
        config = model.config
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or self.hidden // self.heads)
        self.intermediate = int(config.intermediate_size)
        self.eps = float(config.rms_norm_eps)
        self.scaling = float(model.model.layers[0].self_attn.scaling)
        self.embedding = model.get_input_embeddings().weight  # (V, H)
        self.rotary = model.model.rotary_emb
        self.final_norm = model.model.norm.weight  # (H,)
        self.head = model.lm_head.row_int8  # int8 (V, H), scales
        self.layers = layers
        # The hook tables of every module a step skips (dicts filled in place by register_*).
        self._hooks = tuple(
            table for m in model.modules() for table in (m._forward_hooks, m._forward_pre_hooks)
        )

    @classmethod
    def build(cls, model: Any) -> LeanDecoder | None:
        """The lean step for ``model``, or None where it does not apply (module docstring)."""
        config = getattr(model, "config", None)
        if _int8_mm is None or getattr(config, "model_type", None) != "llama":
            return None
        if getattr(config, "hidden_act", None) != "silu" or getattr(config, "attention_bias", True):
            return None
        if getattr(config, "mlp_bias", True) or getattr(model.lm_head, "row_int8", None) is None:
            return None
        layers = []
        for layer in model.model.layers:
            gathered = _gather(layer)
            if gathered is None:
                return None
            layers.append(gathered)
        return cls(model, layers)

    def step(self, parts: Sequence[Part]) -> torch.Tensor | None:
        """``TransformersLocalLM.step`` for one part feeding one token (not an image row): its
        logits ``(1, V)``, the part's ``prefix.ids`` extended; None for any other step."""
        if len(parts) != 1 or len(parts[0].ids) != 1 or parts[0].ids[0] < 0:
            return None
        prefix = parts[0].prefix
        if not self._vouches_for(prefix.cache, len(prefix.ids)):
            return None
        logits = self.logits(prefix.cache, len(prefix.ids), parts[0].ids[0])
        prefix.ids.extend(parts[0].ids)
        return logits

    def _vouches_for(self, cache: Any, position: int) -> bool:
        """Whether this step is the model's pass: no gradients, no forward hooks to run, and a
        cache of the model's layers holding ``position`` positions."""
        if torch.is_grad_enabled() or _hooked(self._hooks):
            return False
        layers = getattr(cache, "layers", None) or ()
        return len(layers) == len(self.layers) and layers[0].get_seq_length() == position

    def logits(self, cache: Any, position: int, token_id: int) -> torch.Tensor:
        """Feed ``token_id`` at ``position`` (the cache's length), extending ``cache``; the
        logits of that position, ``(1, V)`` fp32. Call it under ``torch.inference_mode()``."""
        hidden = self.embedding[token_id].view(1, self.hidden).float()  # (1, H)
        cos, sin = self.rotary(hidden.view(1, 1, -1), torch.tensor([[position]]))  # (1, 1, D)
        cos, sin = cos.view(1, self.head_dim), sin.view(1, self.head_dim)
        for layer, cached in zip(self.layers, cache.layers):
            hidden = hidden + self._attention(layer, cached, hidden, cos, sin)
            hidden = hidden + self._mlp(layer, hidden)
        x = self._normed(hidden, self.final_norm)
        return _int8_mm(x, *self.head).float()  # (1, V)

    def _normed(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.rms_norm(hidden, (self.hidden,), weight, self.eps).to(torch.bfloat16)

    def _attention(
        self, layer: _Layer, cached: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        qkv = _int8_mm(self._normed(hidden, layer.attention_norm), *layer.qkv).float()  # (1, ...)
        rotated = (heads + kv_heads) * head_dim
        qk = qkv[:, :rotated].view(heads + kv_heads, head_dim)
        half = head_dim // 2
        qk = qk * cos + torch.cat((-qk[:, half:], qk[:, :half]), dim=-1) * sin
        query = qk[:heads].view(1, heads, 1, head_dim)
        key = qk[heads:].view(1, kv_heads, 1, head_dim)
        value = qkv[:, rotated:].view(1, kv_heads, 1, head_dim)
        keys, values = cached.update(key, value)  # (1, KV, T, D)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, keys, values, scale=self.scaling, enable_gqa=True
        )  # (1, heads, 1, D)
        return _int8_mm(out.reshape(1, heads * head_dim).to(torch.bfloat16), *layer.output)

    def _mlp(self, layer: _Layer, hidden: torch.Tensor) -> torch.Tensor:
        gate_up = _int8_mm(self._normed(hidden, layer.mlp_norm), *layer.gate_up).float()
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return _int8_mm((torch.nn.functional.silu(gate) * up).to(torch.bfloat16), *layer.down)


def _hooked(tables: Sequence[dict[Any, Any]]) -> bool:
    """Whether a forward hook (or pre-hook) is in any of the modules' ``tables`` or global."""
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(tables)


def _gather(layer: Any) -> _Layer | None:
    """A decoder layer's weights for the lean step; None unless q/k/v and gate/up are int8
    ``RowGroup``s in that order and ``o_proj``/``down_proj`` have int8 weights."""
    attention, mlp = layer.self_attn, layer.mlp
    qkv_group = getattr(attention.q_proj, "row_group", None)
    gate_up_group = getattr(mlp.gate_proj, "row_group", None)
    if qkv_group is None or gate_up_group is None:
        return None
    if qkv_group.layers != [attention.q_proj, attention.k_proj, attention.v_proj]:
        return None
    if gate_up_group.layers != [mlp.gate_proj, mlp.up_proj]:
        return None
    output = getattr(attention.o_proj, "row_int8", None)
    down = getattr(mlp.down_proj, "row_int8", None)
    if output is None or down is None:
        return None
    return _Layer(
        attention_norm=layer.input_layernorm.weight,
        qkv=(qkv_group.ints, qkv_group.scales),
        output=output,
        mlp_norm=layer.post_attention_layernorm.weight,
        gate_up=(gate_up_group.ints, gate_up_group.scales),
        down=down,
    )


__all__ = ["LeanDecoder"]
