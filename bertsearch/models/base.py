"""The encoder interface: text -> unit vectors, plus the tokenizer view the chunker needs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

Span = tuple[int, int]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")


def fingerprint_dir(path: Path) -> str:
    """Hash of a model folder's weight files (names, sizes, first and last MiB): cheap to compute on
    every open, and it changes whenever the weights do."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(path).as_posix()}:{size}".encode())
        with p.open("rb") as f:
            h.update(f.read(1 << 20))
            if size > 1 << 20:
                f.seek(max(size - (1 << 20), 1 << 20))
                h.update(f.read())
    return h.hexdigest()[:16]


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

    def input_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces the model reads for each whole text, special tokens included (optional: without it, the
        count of `token_spans` plus `special_tokens` stands in)."""
        ...

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim)."""
        ...
