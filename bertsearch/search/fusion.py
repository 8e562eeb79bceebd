"""Ranking functions: dense chunk scores to document scores, and reciprocal-rank fusion.

Plain functions over (document, score, chunk) candidates; no SQL and no model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MODES = ("hybrid", "dense", "lexical")
MAX_K = 100_000
"""The most results (and candidates, passages) one call asks for: past it, a count is a mistake (one of 10^20 reached
SQLite as an integer it cannot hold, and raised OverflowError; found 2026-12-06)."""
RRF_K = 60


@dataclass
class Candidate:
    """A document with the best chunk seen for it and its score and rank in each stage."""

    doc: int  # store rowid
    chunk: int | None = None
    doc_id: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)


def best_chunk_per_doc(
    D: np.ndarray, I: np.ndarray, chunk_doc: dict[int, tuple[int, str]], k: int
) -> list[tuple[int, int, float, str]]:
    """From one query's chunk scores D (n,) and ids I (n,), sorted best first, the top `k` documents
    by their best chunk: [(doc, chunk, score, doc id)]. Equal scores are ordered by document id, so results
    do not depend on the order documents were added in."""
    seen: dict[int, tuple[int, float, str]] = {}
    kth = None
    for score, cid in zip(D.tolist(), I.tolist()):
        if kth is not None and score < kth:
            break
        if cid < 0 or cid not in chunk_doc:
            continue
        doc, doc_id = chunk_doc[cid]
        if doc not in seen:  # D is sorted, so the first chunk of a document is its best
            seen[doc] = (cid, score, doc_id)
            if len(seen) == k:
                kth = score  # go on only through documents tied with the k-th
    ranked = sorted(seen.items(), key=lambda x: (-x[1][1], x[1][2]))[:k]
    return [(doc, cid, s, doc_id) for doc, (cid, s, doc_id) in ranked]


def rrf(rankings: dict[str, Sequence[int]], k: int, tiebreak: dict[int, str], c: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score(d) = sum over rankings of 1 / (c + rank of d). Top `k`,
    equal scores ordered by `tiebreak[d]` (the document id)."""
    fused: dict[int, float] = {}
    for ranking in rankings.values():
        for r, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (c + r)
    return sorted(fused.items(), key=lambda x: (-x[1], tiebreak.get(x[0], "")))[:k]


def best_lexical_chunk(text: str, chunks: Sequence[tuple[int, int, int]], query_words: set[str]) -> int | None:
    """The chunk (id) of a document holding most of the query's words, first on ties."""
    best, best_n = None, -1
    for cid, a, b in chunks:
        words = {w.lower() for w in _words(text[a:b])}
        n = len(words & query_words)
        if n > best_n:
            best, best_n = cid, n
    return best


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text)


def query_words(query: str) -> set[str]:
    return {w.lower() for w in _words(query)}
