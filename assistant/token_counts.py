"""Token counts of message texts, for the prompt budget: remembered (by the text's length and hash,
so a long text is not kept alive by the cache), counted off the event loop when a text is long,
and not counted at all when a text is too long to fit any prompt.

A BPE token covers a few characters; no tokenizer in use covers more than ``MAX_CHARS_PER_TOKEN``
with one token, so a text of more than ``context_tokens * MAX_CHARS_PER_TOKEN`` characters has
more tokens than the context: its count is that lower bound, made without tokenizing (a 7 MB text
item costs a length check, not seconds of the event loop).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable

from assistant import heap

MAX_CHARS_PER_TOKEN = 64
#: Texts longer than this are counted in a worker thread (``prepare``), not on the event loop.
OFF_LOOP_CHARS = 4_096


class TokenCounter:
    def __init__(self, count: Callable[[str], int], *, context_tokens: int, size: int = 16_384):
        self._count = count
        self._too_long = max(context_tokens, 1) * MAX_CHARS_PER_TOKEN
        self._size = size
        self._known: OrderedDict[tuple[int, int], int] = OrderedDict()
        heap.track("token_counts", self, size, lambda counter: len(counter._known))

    def __call__(self, text: str) -> int:
        """The count of ``text`` (on the caller's thread when not known yet)."""
        if len(text) > self._too_long:
            return len(text) // MAX_CHARS_PER_TOKEN  # more than the context: no need to count
        key = (len(text), hash(text))
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
            return known
        counted = self._count(text)
        self._remember(key, counted)
        return counted

    def _remember(self, key: tuple[int, int], counted: int) -> None:
        self._known[key] = counted
        if len(self._known) > self._size:
            self._known.popitem(last=False)

    async def prepare(self, texts: Iterable[str]) -> None:
        """Count the long texts not known yet in a worker thread, so ``__call__`` finds them."""
        todo = [
            t for t in texts
            if OFF_LOOP_CHARS < len(t) <= self._too_long and (len(t), hash(t)) not in self._known
        ]  # fmt: skip
        if not todo:
            return
        counts = await asyncio.to_thread(lambda: [self._count(t) for t in todo])
        for text, counted in zip(todo, counts, strict=True):  # the cache is the loop's alone
            self._remember((len(text), hash(text)), counted)
