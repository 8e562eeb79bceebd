"""Small stand-ins for the cross-encoder and the reader, for tests that check the plumbing, not the models."""

from __future__ import annotations

import numpy as np

from bertsearch.types import Span


class WordReranker:
    """Scores a passage by how often it holds the word `favourite`, times `scale` logits (a real
    cross-encoder's scores for a clear match and a miss lie about 10 apart)."""

    name = "fake-reranker"

    def __init__(self, favourite: str, scale: float = 1.0) -> None:
        self.favourite = favourite
        self.scale = scale
        self.calls: list[int] = []

    def fingerprint(self):
        return f"word-{self.favourite}-{self.scale}"

    def score(self, query, passages, *, batch_size=32):
        self.calls.append(len(passages))
        return np.array([self.scale * p.lower().count(self.favourite) for p in passages], dtype=np.float32)


class WordReader:
    """Answers with the first occurrence of `word` in any passage; abstains when there is none."""

    name = "fake-reader"

    def __init__(self, word: str) -> None:
        self.word = word

    def fingerprint(self):
        return f"word-{self.word}"

    def read(self, question, passages, *, top_k=5, batch_size=16, per_passage=None):
        spans = []
        for i, p in enumerate(passages):
            at = p.find(self.word)
            if at >= 0:
                spans.append(Span(passage=i, start=at, end=at + len(self.word), text=self.word, score=5.0 - i, null_score=0.0))
        return spans[:top_k]

    def abstains(self, spans):
        return not spans
