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
generation lock). A cold worker simply misses and encodes the whole prompt.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers without per-layer caches
    DynamicLayer = None  # type: ignore[assignment,misc]


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


def croppable(cache: Any) -> bool:
    """Whether an empty cache built for the model can be cropped back exactly: plain full-attention
    layers only (a sliding-window or recurrent layer forgets what cropping would need)."""
    layers = getattr(cache, "layers", None)
    if not layers or DynamicLayer is None:
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


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

    def __init__(self, max_sessions: int = 8, max_tokens: int = 32768) -> None:
        self.max_sessions = max(int(max_sessions), 0)
        self.max_tokens = max(int(max_tokens), 0)
        self._entries: OrderedDict[str, CachedPrefix] = OrderedDict()
        self._tokens = 0
        self.hits = 0  # lookups that reused at least one cached position
        self.misses = 0  # lookups with a key that found nothing to reuse
        self.reused_tokens = 0  # positions not prefilled again thanks to a hit, in total

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


__all__ = ["CachedPrefix", "PrefixCacheLRU", "common_prefix", "croppable"]
