"""Reuse of a conversation's KV cache across its turns, for the local transformers model.

A turn's prompt is the previous turn's prompt, the reply, and the new user message: everything up to
the new message has been through the model already. ``PrefixCacheLRU`` keeps, per conversation
(``Prompt.cache_key``), the ``DynamicCache`` a generation left behind and the token ids it holds
keys and values for (prompt + generated tokens fed back). The next turn takes it out, crops it
to the longest common prefix with its own prompt ids and prefills only the rest. Token ids are
compared, not text, so a chat template that renders earlier turns differently once more follow, or
a reply that re-tokenises differently, only shortens the reused prefix.

Entries are bounded by count and by total tokens (least recently used first out). An entry is taken
*out* while its generation runs and put back only when that generation left the cache consistent, so
a failed generation leaves nothing behind. Not thread-safe: the caller serialises (the adapter's
batch scheduler uses it on the torch thread only). A cold worker simply misses and encodes the
whole prompt, or, when another conversation's entry starts the same way (the system prompt), a
copy of that start (``PrefixCacheLRU.borrow``) and the rest.

Two things keep a turn late in a conversation as fast as the first one, although its few new tokens
attend to hundreds of cached ones (SmolLM2-135M, 2 CPU cores, 21 new tokens after 439 cached vs 32
tokens from scratch: 79 vs 69 ms a prefill before, 69 vs 69 after):

- ``GrowingLayer`` keeps a layer's keys and values in buffers with room to spare, so a forward pass
  copies in its new positions only; ``DynamicLayer`` concatenated the whole cache, every layer,
  every pass (2-3 ms at 460 positions, and it grows with the conversation).
- ``use_gqa_attention``: SDPA takes the key/value heads as they are (``enable_gqa``) also when a
  mask is needed; transformers repeats them to the query heads first (3 -> 9 heads of the whole
  cache copied per layer, ~8 ms) whenever a prefill has a mask, which is every prefill after a
  cached prefix. The same kernel computes the same values: logits are bitwise equal.

``SegmentIds`` reuses the tokenization of earlier turns too: the prompt's text is cut at special
tokens, and only the pieces not seen before go through the tokenizer (0.75 -> 0.15 ms at 460 tokens;
it grows with the conversation too).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from assistant import heap

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers without per-layer caches
    DynamicLayer = None  # type: ignore[assignment,misc]

#: Spare room a ``GrowingLayer`` adds when it outgrows its buffers: a quarter of what it holds, at
#: least this many positions.
MIN_SPARE_POSITIONS = 256
#: The shortest common prefix ``PrefixCacheLRU.borrow`` copies from another conversation's cache.
MIN_SHARED_TOKENS = 8


@dataclass
class CachedPrefix:
    """A KV cache and the token ids, in order, whose keys and values it holds."""

    cache: Any  # transformers DynamicCache: per layer (1, kv_heads, len(ids), head_dim)
    ids: list[int] = field(default_factory=list)

    def crop(self, length: int) -> None:
        """Keep the first ``length`` positions."""
        extra = len(self.ids) - length
        if extra > 0:
            # A negative argument removes that many positions (transformers 4.x and 5.x alike);
            # crop(0) would mean "to length 0" in 4.x, hence the guard.
            self.cache.crop(-extra)
            del self.ids[length:]

    def consistent(self) -> bool:
        """Every layer holds exactly ``len(ids)`` positions (a forward pass that failed half-way
        through the layers leaves them uneven)."""
        layers = getattr(self.cache, "layers", None)
        if not layers:
            return self.cache.get_seq_length() == len(self.ids)
        return all(layer.get_seq_length() == len(self.ids) for layer in layers)


class GrowingLayer(DynamicLayer or object):  # type: ignore[misc]
    """A ``DynamicLayer`` whose ``keys`` and ``values`` are views of buffers with spare room:
    ``update`` copies in the new positions only, and reallocates (copying the layer once, with a
    quarter more room) when they do not fit. ``crop`` is the inherited one: a shorter view of the
    same buffers, which the next ``update`` overwrites from there. Shapes: (batch, kv_heads,
    positions, head_dim)."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        buffer = self._key_buffer
        if buffer is None or end > buffer.shape[-2] or self.keys.data_ptr() != buffer.data_ptr():
            # The first pass allocates what it holds, like a concatenation: a cache that is never
            # extended (or turn 1's prefill, before its first token) pays nothing for spare room.
            # (Keys set from outside, by offloading or beam reordering, are copied over too.)
            capacity = end + (0 if buffer is None else max(end // 4, MIN_SPARE_POSITIONS))
            self._key_buffer = _grown(self.keys, key_states, capacity)
            self._value_buffer = _grown(self.values, value_states, capacity)
        assert self._value_buffer is not None
        self._key_buffer[..., start:end, :].copy_(key_states)
        self._value_buffer[..., start:end, :].copy_(value_states)
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def _grown(held: torch.Tensor, new: torch.Tensor, capacity: int) -> torch.Tensor:
    """A buffer for ``capacity`` positions shaped like ``new``, starting with ``held``'s."""
    batch, heads, _, head_dim = new.shape
    grown = new.new_empty(batch, heads, capacity, head_dim)
    if held.numel():
        grown[..., : held.shape[-2], :].copy_(held)
    return grown


def new_cache(config: Any) -> Any:
    """A ``DynamicCache`` for a model's ``config`` whose plain full-attention layers grow in place
    (``GrowingLayer``); other layer kinds stay as transformers makes them."""
    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if layers and DynamicLayer is not None:
        cache.layers = [
            GrowingLayer() if type(layer) is DynamicLayer else layer for layer in layers
        ]
    return cache


def croppable(cache: Any) -> bool:
    """Whether an empty cache built for the model can be cropped back exactly: plain full-attention
    layers only (a sliding-window or recurrent layer forgets what cropping would need)."""
    layers = getattr(cache, "layers", None)
    if not layers or DynamicLayer is None:
        return False
    return all(type(layer) in (DynamicLayer, GrowingLayer) for layer in layers)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCacheLRU:
    """Per-conversation KV caches, least recently used evicted beyond ``max_sessions`` entries or
    ``max_tokens`` cached positions in total. Either bound at 0 disables reuse."""

    def __init__(self, max_sessions: int, max_tokens: int) -> None:
        self.max_sessions = max(int(max_sessions), 0)
        self.max_tokens = max(int(max_tokens), 0)
        self._entries: OrderedDict[str, CachedPrefix] = OrderedDict()
        self._tokens = 0
        heap.track("kv_cache_sessions", self, self.max_sessions)
        heap.track("kv_cache_tokens", self, self.max_tokens, lambda lru: lru._tokens)
        self.hits = 0  # lookups that reused at least one cached position
        self.misses = 0  # lookups with a key that found nothing to reuse
        self.reused_tokens = 0  # positions not prefilled again thanks to a hit, in total
        self.shared_hits = 0  # misses that started from another entry's prefix (``borrow``)
        self.shared_tokens = 0  # positions copied so, in total

    @property
    def enabled(self) -> bool:
        return self.max_sessions > 0 and self.max_tokens > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def tokens(self) -> int:
        """Cached positions held, over all entries."""
        return self._tokens

    def take(self, key: str | None, input_ids: Sequence[int]) -> CachedPrefix | None:
        """Remove ``key``'s entry and return it cropped to what ``input_ids`` can reuse: the common
        prefix, but never the whole prompt (its last token is fed again for the next logits).
        None when there is no key, no entry or nothing in common (counted as a miss)."""
        if key is None or not self.enabled:
            return None
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._tokens -= len(entry.ids)
        reuse = 0 if entry is None else min(common_prefix(entry.ids, input_ids), len(input_ids) - 1)
        if entry is None or reuse <= 0:
            self.misses += 1
            return None
        entry.crop(reuse)
        self.hits += 1
        self.reused_tokens += reuse
        return entry

    def borrow(self, input_ids: Sequence[int], new_cache: Callable[[], Any]) -> CachedPrefix | None:
        """A copy (in ``new_cache()``) of the longest prefix of ``input_ids`` that any entry holds,
        at least ``MIN_SHARED_TOKENS`` and never the whole prompt: a new conversation with the same
        system prompt as another starts from its keys and values (the same ids at the same
        positions), as vLLM's prefix caching does. Entries stay as they are. None: none shares
        enough. Counted in ``shared_hits`` / ``shared_tokens``."""
        best, length = None, 0
        for entry in self._entries.values():
            common = min(common_prefix(entry.ids, input_ids), len(input_ids) - 1)
            if common > length:
                best, length = entry, common
        if best is None or length < MIN_SHARED_TOKENS:
            return None
        copy = CachedPrefix(new_cache(), list(input_ids[:length]))
        for mine, theirs in zip(copy.cache.layers, best.cache.layers, strict=True):
            mine.update(theirs.keys[..., :length, :], theirs.values[..., :length, :])
        self.shared_hits += 1
        self.shared_tokens += length
        return copy

    def put(self, key: str | None, entry: CachedPrefix) -> None:
        """Store ``entry`` as the most recent for ``key``, then evict beyond the bounds. An entry
        that is inconsistent or alone exceeds the token budget is not stored."""
        if key is None or not self.enabled:
            return
        self.discard(key)
        if not entry.ids or len(entry.ids) > self.max_tokens or not entry.consistent():
            return
        self._entries[key] = entry
        self._tokens += len(entry.ids)
        while len(self._entries) > self.max_sessions or self._tokens > self.max_tokens:
            _, evicted = self._entries.popitem(last=False)
            self._tokens -= len(evicted.ids)

    def discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._tokens -= len(entry.ids)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0


_NEIGHBOUR_FLAGS = ("lstrip", "rstrip", "single_word", "normalized")


class SegmentIds:
    """Token ids of chat texts, encoded a piece at a time, the last ``max_pieces`` used remembered.

    A fast tokenizer cuts its input at its added tokens first and encodes the pieces between them
    one by one, so a text's ids are its pieces' ids in order, with the added tokens' ids between
    them. That holds when no added token takes in the whitespace around it (``lstrip``, ``rstrip``,
    ``single_word``) and all are matched on the raw text (not ``normalized``); ``usable`` says
    whether they are, and whether a sample conversation tokenized both ways agrees (a pre-tokenizer
    that treats the start of the whole text apart, like a Metaspace ``prepend_scheme="first"``,
    would not). When it is False, call ``encode`` on whole texts instead.
    """

    def __init__(
        self, tokenizer: Any, encode: Callable[[list[str]], list[list[int]]], max_pieces: int = 4096
    ) -> None:
        self.encode = encode  # texts -> their ids, no special tokens added
        self.max_pieces = max_pieces
        added = getattr(tokenizer, "added_tokens_decoder", {})  # id -> AddedToken
        plain = not any(getattr(t, f, False) for t in added.values() for f in _NEIGHBOUR_FLAGS)
        self._special = {t.content: i for i, t in added.items()}
        ordered = sorted(self._special, key=len, reverse=True)  # the longest match first
        self._pattern = re.compile(f"({'|'.join(map(re.escape, ordered))})") if added else None
        self._pieces: OrderedDict[str, list[int]] = OrderedDict()
        heap.track("token_pieces", self, max_pieces, lambda ids: len(ids._pieces))
        self.usable = bool(plain and self._pattern and self._agrees(tokenizer))

    def __call__(self, text: str) -> list[int]:
        assert self._pattern is not None
        pieces = self._pattern.split(text)  # text, token, text, token, ..., text
        missing = list(dict.fromkeys(p for p in pieces[::2] if p and p not in self._pieces))
        for piece, ids in zip(missing, self.encode(missing) if missing else ()):
            self._pieces[piece] = ids
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids.append(self._special[piece])
            elif piece:
                ids.extend(self._pieces[piece])
                self._pieces.move_to_end(piece)
        while len(self._pieces) > self.max_pieces:
            self._pieces.popitem(last=False)  # the least recently used
        return ids

    def _agrees(self, tokenizer: Any) -> bool:
        chat = [{"role": "system", "content": " Be brief."}, {"role": "user", "content": "Hi  yo"}]
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template that cannot render this: not used
            return False
        text = f" {text}\n\n{text} x"
        agrees = self(text) == self.encode([text])[0]
        self._pieces.clear()
        return agrees


# -- attention over a cached prefix ---------------------------------------------------------------

#: The name ``use_gqa_attention`` registers ``sdpa_gqa_attention`` under, for attention and masks.
SDPA_GQA = "sdpa_gqa"


def use_gqa_attention(model: Any) -> bool:
    """Switch a model on transformers' ``sdpa`` attention to ``sdpa_gqa_attention``; whether it
    now uses it (also when an earlier call switched it). Other implementations are left alone."""
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if implementation != "sdpa":
        return implementation == SDPA_GQA
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # pragma: no cover - older transformers
        return False
    AttentionInterface.register(SDPA_GQA, sdpa_gqa_attention)
    AttentionMaskInterface.register(SDPA_GQA, sdpa_mask)
    model.set_attn_implementation(SDPA_GQA)
    return model.config._attn_implementation == SDPA_GQA


def sdpa_gqa_attention(
    module: Any,
    query: torch.Tensor,  # (B, heads, S, D)
    key: torch.Tensor,  # (B, kv_heads, C + S, D)
    value: torch.Tensor,  # (B, kv_heads, C + S, D)
    attention_mask: torch.Tensor | None,  # (B, 1, S, C + S) or None
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa_attention_forward``, except for a masked multi-token pass on the CPU
    under inference mode with fewer key/value heads than query heads (a prefill after a cached
    prefix): SDPA takes the key/value heads as they are (``enable_gqa``) instead of copies repeated
    to the query heads. (transformers repeats them whenever there is a mask: a masked GQA call
    falls back to the slow kernel on CUDA. The CPU flash kernel takes both.)
    Output: (B, S, heads, D).

    A pass called with ``packed=`` (``adapters.llm.packed``) hands attention to that object: each
    packed sequence's queries against its own cache, through this function again.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = kwargs.pop("packed", None)
    if packed is not None:
        return packed.attend(module, query, **kwargs)  # type: ignore[no-any-return]

    special = any(kwargs.get(name) is not None for name in ("position_bias", "softcap", "cache"))
    special = special or bool(kwargs.get("dropout"))
    if (
        special
        or attention_mask is None
        or query.shape[2] == 1
        or query.shape[1] == key.shape[1]
        or query.device.type != "cpu"
        or not torch.is_inference_mode_enabled()
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=kwargs.get("scaling"), enable_gqa=True
    )  # (B, heads, S, D)
    return output.transpose(1, 2).contiguous(), None


__all__ = [
    "CachedPrefix",
    "GrowingLayer",
    "PrefixCacheLRU",
    "SegmentIds",
    "common_prefix",
    "croppable",
    "new_cache",
    "sdpa_gqa_attention",
    "use_gqa_attention",
]
