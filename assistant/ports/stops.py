"""Stop strings, applied to a stream of text deltas however the text is split into them.

The reply ends just before the stop string that is complete first (the one whose end comes
earliest in the text; of two ending at the same place, the longer), and that string and all after
it are not delivered. To decide that on a stream, only a tail that could still be the start of a
stop string is held back; everything before it goes out at once.

    scan = StopScan(("\\n\\n", "User:"))
    out = scan.feed(delta)   # the text that may go out now ("" when all of it is held back)
    scan.hit                 # True once a stop string was seen: end the generation
    scan.flush()             # at the end: what was held back (no stop string came)

``cut_at_stop(text, stops)`` is the same on a whole text (what the deltas add up to).
"""

from __future__ import annotations

from collections.abc import Sequence


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where ``text`` is cut: the start of the stop string that ends first; None: none is in it."""
    best_end, best_start = None, None
    for stop in stops:
        start = text.find(stop)
        if start < 0:
            continue
        end = start + len(stop)
        if best_end is None or end < best_end or (end == best_end and start < best_start):
            best_end, best_start = end, start
    return best_start


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to its first stop string, and whether one was found."""
    cut = _first_stop(text, [s for s in stops if s])
    return (text, False) if cut is None else (text[:cut], True)


class StopScan:
    """The stop strings of one generation (see the module's docstring). Per delta it costs a
    ``find`` per stop string and a look at the last ``longest - 1`` characters."""

    __slots__ = ("_held", "_longest", "_stops", "hit")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.hit = False

    def feed(self, delta: str) -> str:
        """The part of ``delta`` (with what was held back before it) that may go out now."""
        if self.hit:
            return ""
        text = self._held + delta
        cut = _first_stop(text, self._stops)
        if cut is not None:
            self.hit = True
            self._held = ""
            return text[:cut]
        keep = self._could_start(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What is still held back (the generation ended without a stop string)."""
        held, self._held = self._held, ""
        return held

    def _could_start(self, text: str) -> int:
        """The length of the longest end of ``text`` that a stop string starts with (shorter
        than that stop string: a whole one would have been found)."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
