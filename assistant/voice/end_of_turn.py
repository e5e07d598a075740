"""Does what the user said so far end their turn? A rule-based end-of-utterance guess on the
streaming transcript, which decides how long the silence must last before the turn ends.

LiveKit's turn detector asks a small language model for the probability that the transcript so far
(with the conversation before it) is a complete utterance, and waits ``min_endpointing_delay``
when it is likely, ``max_endpointing_delay`` when not. The same idea without a model, from what
Whisper gives us and English grammar:

- Whisper punctuates: a transcript ending in ``...``, ``,``, ``-`` or ``:`` trails off. Its closing
  ``.`` is not to be relied on either way: Whisper tiny leaves it out after many whole sentences
  ("Turn on the kitchen lights and play some music"), so a clause without one is judged by its
  words alone (particles such as "on", "in", "off", "up" are left out of the list below: "Turn the
  lights on").
- But Whisper also puts a period after a half sentence followed by silence ("I'd like to order
  a."), so the last words outrank the punctuation: an article, a conjunction, a preposition, a
  possessive, an auxiliary or a filler cannot end an English sentence ("... order a", "... and",
  "... my", "... um"), nor can a bare infinitive of a verb that wants an object
  ("I would like to order", "I want to book"), nor an intent phrase ("I would like").
- A question (ends with ``?``, or starts with a question word or an inverted auxiliary and ends a
  sentence) is finished whatever its last word ("What are you looking for?").

Only a ``finished`` verdict shortens the wait; any doubt keeps the long one, so a mistake costs
latency on an unusual sentence, never cutting the user off mid-thought... except when a finished
sentence is followed by more after a pause: that is what the speculative start handles (the reply
to the first sentence is dropped when speech resumes before the short wait ends).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["finished", "unfinished"]

#: Words no English sentence ends with (lower case, apostrophes kept).
CONTINUATION_WORDS = frozenset(
    # articles and determiners
    "a an the some any every each another no such"
    # possessives
    " my your our their his her its whose"
    # coordinating and subordinating conjunctions
    " and or but nor so because if unless although though while whereas than whether since"
    " when where until as"
    # prepositions
    " to of for with without at from about into onto by under between through during against"
    " among toward towards near like per via"
    # auxiliaries and copulas (a clause that ends on one is waiting for its verb or complement)
    " is are was were am be been being do does did have has had will would shall should can"
    " could may might must i'm you're we're they're it's i'd i'll i've"
    # fillers and hesitations
    " um uh er erm hmm mm uhm ah".split()
)

#: Verbs that want an object: ``... to order`` / ``... want to book`` is half a sentence.
TRANSITIVE_INFINITIVES = frozenset(
    "order book buy get have make take find see know ask tell give send pay reserve add change"
    " cancel check try bring put use call play".split()
)

#: Openers of a question (a question word, or an auxiliary put first).
QUESTION_STARTS = frozenset(
    "what when where which who whom whose why how is are was were am do does did have has had"
    " will would shall should can could may might must".split()
)

#: Phrases of intent that want what follows: "I would like", "I want", "I need", "can I get".
_INTENT = re.compile(r"\b(?:i(?:'d| would)? like|i want|i need|(?:can|could|may) i (?:get|have))$")
_TRAILING_OFF = ("...", "…", ",", "-", "–", "—", ":", ";")
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class EndOfTurn:
    verdict: Verdict
    reason: str  # which rule decided, for logs and tests

    @property
    def finished(self) -> bool:
        return self.verdict == "finished"


def end_of_turn(transcript: str) -> EndOfTurn:
    """The guess for ``transcript``, the user's words so far in this turn."""
    text = transcript.strip()
    words = _WORD.findall(text.lower().replace("’", "'"))
    if not words:
        return EndOfTurn("unfinished", "no words")
    if text.endswith(_TRAILING_OFF):
        return EndOfTurn("unfinished", "trails off")
    question = text.endswith("?") or (words[0] in QUESTION_STARTS and text.endswith((".", "!")))
    if question:
        return EndOfTurn("finished", "a question")
    last = words[-1]
    if last in CONTINUATION_WORDS:
        return EndOfTurn("unfinished", f"ends with {last!r}")
    if len(words) >= 2 and words[-2] == "to" and last in TRANSITIVE_INFINITIVES:
        return EndOfTurn("unfinished", f"'to {last}' wants an object")
    if _INTENT.search(" ".join(words)):
        return EndOfTurn("unfinished", "an intent without its object")
    return EndOfTurn("finished", "a sentence")


__all__ = [
    "CONTINUATION_WORDS",
    "EndOfTurn",
    "QUESTION_STARTS",
    "TRANSITIVE_INFINITIVES",
    "Verdict",
    "end_of_turn",
]
