"""A small BM25 over numpy (Okapi, k1 1.2, b 0.75) whose tokens keep codes whole: ``SH-4821``
is the token ``sh-4821`` and also ``sh`` and ``4821``. Scores are divided by the query's best
possible score (every term at its top weight), so they fall in 0..1 and a query of words the
corpus never uses scores low (an unknown word counts at the largest idf).

bm25s and rank-bm25 were not used: both rebuild their index from all texts and tokenize with
their own rules; this index is rebuilt with the matrix, in one pass, with the tokenizer above."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:[-_/.][a-z0-9]+)*")
_STOP = frozenset(
    "a an and are as at be by can do does for from how i if in is it its my of on or our so "
    "that the this to was we what when where which who why will with you your".split()
)


def tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        out.append(word)
        if not word.isalpha():
            out.extend(p for p in re.split(r"[-_/.]", word) if p and p != word and p not in _STOP)
    return out


class BM25:
    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(texts)
        docs = [Counter(tokens(t)) for t in texts]
        lengths = np.array([sum(d.values()) for d in docs], dtype=np.float32)
        avg = float(lengths.mean()) if self.n else 1.0
        norm = k1 * (1 - b + b * lengths / max(avg, 1e-9))  # (N,)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, doc in enumerate(docs):
            for term, tf in doc.items():
                rows, tfs = postings.setdefault(term, ([], []))
                rows.append(i)
                tfs.append(tf)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._idf: dict[str, float] = {}
        for term, (rows, tfs) in postings.items():
            index = np.array(rows, dtype=np.int64)
            tf = np.array(tfs, dtype=np.float32)
            self._postings[term] = (index, tf * (k1 + 1) / (tf + norm[index]))
            self._idf[term] = self.idf(len(rows))

    def idf(self, df: int) -> float:
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        """(N,) each chunk's score over the query's best possible (0..1)."""
        out = np.zeros(self.n, dtype=np.float32)
        terms = set(tokens(query))
        if not terms or not self.n:
            return out
        best = 0.0
        for term in terms:
            idf = self._idf.get(term, self.idf(0))
            best += idf * (self.k1 + 1)
            posting = self._postings.get(term)
            if posting is not None:
                out[posting[0]] += idf * posting[1]
        return out / best
