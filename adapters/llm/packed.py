"""One forward pass over several sequences at once, each with its own KV cache: the batched step of
the continuous-batching scheduler (``adapters.llm.batching``).

The new tokens of all sequences are *packed* into one row, ``(1, N, H)`` with ``N`` the sum of
their lengths (one token for a sequence decoding, a chunk of its prompt for one prefilling), at each
sequence's own positions. Every part of the model that works token by token (the embeddings, the
projections, the MLPs, the norms, rotary positions, the LM head) then runs once over all ``N``
tokens: on a CPU a 135M model's decode step is bound by reading its weights, so a step over eight
tokens costs little more than a step over one. Only attention is per sequence: ``PackedCache``
appends each sequence's keys and values to that sequence's own cache (``kv_cache.GrowingLayer``
buffers, the very cache ``PrefixCacheLRU`` keeps between turns), and ``PackedCache.attend``, called
by ``kv_cache.sdpa_gqa_attention`` when the pass carries ``packed=``, runs each sequence's queries
against its own keys, exactly the call a pass over that sequence alone would make: no padding, no
mask over other sequences' positions, no copy of a cache.

So a sequence's attention is bitwise what it is alone; the matrix products over ``N`` rows instead
of one may round their sums differently in the last bits (measured on SmolLM2: see the README).

The adapter lays the model's linear layers' weights out for oneDNN when it is built
(``prepacked``): a product over a few rows then costs little more than over one, where MKL's costs
1.6x from the second row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adapters.llm.decoding import last_logits
from adapters.llm.kv_cache import CachedPrefix, sdpa_gqa_attention


@dataclass
class Segment:
    """A sequence's part of a packed pass: its cache (holding ``start`` positions) and the input
    embeddings of its new tokens, fed at positions ``start .. start + S - 1``."""

    cache: Any  # a DynamicCache of GrowingLayer layers: per layer (1, kv_heads, start, head_dim)
    start: int
    embeds: torch.Tensor  # (S, H)

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])


class PackedCache:
    """What the model sees as its ``past_key_values`` during a packed pass: ``update`` splits the
    new keys and values by segment into each segment's own cache and keeps the grown caches for
    ``attend``; it returns its inputs unchanged (the attention function ignores them)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        bounds = [0]
        for segment in self.segments:
            bounds.append(bounds[-1] + segment.length)
        self.bounds = bounds
        self._grown: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.attended = 0  # layers whose attention ran packed (all of them, or the pass is wrong)
        masks: list[torch.Tensor | None] = []
        for segment in self.segments:  # a chunk after cached positions: causal, offset by them
            length, start = segment.length, segment.start
            if length > 1 and start > 0:
                rows = torch.arange(length).unsqueeze(1) + start  # (S, 1)
                masks.append((torch.arange(start + length) <= rows)[None, None])  # (1, 1, S, C+S)
            else:  # one token sees every cached one; a chunk from scratch is is_causal
                masks.append(None)
        self.masks = masks

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grown = []
        for index, segment in enumerate(self.segments):  # keys/values: (1, kv_heads, N, D)
            a, b = self.bounds[index], self.bounds[index + 1]
            layer = segment.cache.layers[layer_idx]
            grown.append(layer.update(key_states[:, :, a:b], value_states[:, :, a:b]))
        self._grown[layer_idx] = grown
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always given; nothing asks the packed pass for a length

    def attend(self, module: Any, query: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """Each segment's queries ``(1, heads, S, D)`` against its own cache; ``(1, N, heads, D)``,
        the layout ``sdpa_gqa_attention`` returns."""
        grown = self._grown.pop(module.layer_idx)
        outputs = []
        for index, (keys, values) in enumerate(grown):
            a, b = self.bounds[index], self.bounds[index + 1]
            out, _ = sdpa_gqa_attention(
                module, query[:, :, a:b], keys, values, self.masks[index], **kwargs
            )  # (1, S, heads, D)
            outputs.append(out)
        self.attended += 1
        return torch.cat(outputs, dim=1), None


def packed_logits(model: Any, segments: Sequence[Segment]) -> torch.Tensor:
    """One forward pass over ``segments`` packed; the logits of each segment's last token,
    ``(len(segments), V)``. Each segment's cache grows by its tokens."""
    cache = PackedCache(segments)
    embeds = torch.cat([segment.embeds for segment in segments]).unsqueeze(0)  # (1, N, H)
    positions = torch.cat([torch.arange(s.start, s.start + s.length) for s in segments]).unsqueeze(
        0
    )  # (1, N)
    last = torch.tensor(cache.bounds[1:]) - 1  # (K,): each segment's last token in the row
    out = model(
        inputs_embeds=embeds,
        position_ids=positions,
        past_key_values=cache,
        # A 4D mask is taken as it is: no mask is built for the packed row (attend makes its own).
        attention_mask=torch.ones(1, 1, 1, 1, dtype=torch.bool),
        use_cache=True,
        logits_to_keep=last,
        packed=cache,
    )
    if cache.attended != model.config.num_hidden_layers:
        raise RuntimeError(f"packed attention ran in {cache.attended} layers, not all")
    return out.logits[0].float()  # (K, V)


@dataclass
class Part:
    """A sequence's share of a step: its cache and the ids it feeds (its last token, or a chunk
    of its prompt, where negative ids are image rows: ``rows``)."""

    prefix: CachedPrefix
    ids: list[int]
    rows: dict[int, Any] = field(default_factory=dict)  # pseudo-id -> (H,)


#: ``(1, S) ids, rows -> (1, S, H)`` embeddings (``TransformersLocalLM._embed_prompt``).
Embed = Callable[[torch.Tensor, dict[int, Any]], torch.Tensor]


def step_logits(
    model: Any, embed: Embed, logits_to_keep: bool, parts: Sequence[Part]
) -> torch.Tensor:
    """One forward pass over ``parts``: the logits of each part's last token, ``(K, V)``; each
    part's ``prefix.ids`` extended by its ids once the pass has completed. One part alone takes
    the path a single sequence always took (a token fed by id, a prompt from its embeddings at its
    positions, transformers' own masks); more are packed (``packed_logits``)."""
    if len(parts) == 1:
        (part,) = parts
        cache, start, count = part.prefix.cache, len(part.prefix.ids), len(part.ids)
        if count == 1 and part.ids[0] >= 0:
            ids = torch.tensor([part.ids], dtype=torch.long)  # (1, 1)
            logits = last_logits(model, cache, logits_to_keep, input_ids=ids)  # (1, V)
        else:
            embeds = embed(torch.tensor([part.ids], dtype=torch.long), part.rows)  # (1, S, H)
            positions = torch.arange(start, start + count).unsqueeze(0)  # (1, S)
            logits = last_logits(
                model, cache, logits_to_keep, inputs_embeds=embeds, position_ids=positions
            )
    else:
        segments = [
            Segment(p.prefix.cache, len(p.prefix.ids), embed(torch.tensor([p.ids]), p.rows)[0])
            for p in parts
        ]
        logits = packed_logits(model, segments)  # (K, V)
    for part in parts:
        part.prefix.ids.extend(part.ids)
    return logits


__all__ = ["Embed", "PackedCache", "Part", "Segment", "packed_logits", "step_logits"]
