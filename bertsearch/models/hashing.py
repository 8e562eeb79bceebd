"""A tiny deterministic encoder: hashed bag of lower-cased words. For tests and quick experiments.

It needs no weights, loads instantly and is exact to reproduce, so unit tests run the real
indexing and search code without a neural model. Name it as `hashing` or `hashing:DIM`.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+")


class HashingEncoder:
    vector_precision = "fp32"

    def __init__(self, dim: int = 64, max_tokens: int = 64) -> None:
        if dim < 1 or max_tokens < 3:
            raise ValueError("hashing encoder needs dim >= 1 and max_tokens >= 3")
        self._dim = dim
        self._max_tokens = max_tokens
        self.name = f"hashing:{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def special_tokens(self) -> int:
        return 2

    def fingerprint(self) -> str:
        return f"hashing-v1-{self._dim}"

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[m.span() for m in _WORD.finditer(t)] for t in texts]

    def input_tokens(self, texts: list[str]) -> list[int]:
        return [len(_WORD.findall(t)) + self.special_tokens for t in texts]

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        x = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = [w.lower() for w in _WORD.findall(t)]  # count words as token_spans does
            if len(words) > self._max_tokens - self.special_tokens:
                raise ValueError(f"text of {len(words)} tokens exceeds the window of {self._max_tokens}")
            for w in words:
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                x[i, h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return x / norms
