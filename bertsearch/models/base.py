"""The encoder interface: text -> unit vectors, plus the tokenizer view the chunker needs."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

Span = tuple[int, int]


@runtime_checkable
class Encoder(Protocol):
    name: str
    """How the index records this model: a model id or a path."""

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads, special tokens included."""
        ...

    @property
    def special_tokens(self) -> int:
        """Special tokens added around every input ([CLS] and [SEP] for BERT)."""
        ...

    def fingerprint(self) -> str:
        """A short hash that changes when the weights change."""
        ...

    def token_spans(self, texts: list[str]) -> list[list[Span]]:
        """Character spans of each text's word pieces, special tokens excluded."""
        ...

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim)."""
        ...
