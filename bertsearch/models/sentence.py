"""Encoder backed by a sentence-transformers bi-encoder, loaded lazily on first use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .base import fingerprint_dir

log = logging.getLogger(__name__)



class SentenceEncoder:
    """`name` is what the index records; `path` is the local directory the weights load from."""

    def __init__(self, name: str, path: Path, *, device: str | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.device = device
        self._model: Any = None
        self._fingerprint: str | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            log.info("loading encoder %s from %s", self.name, self.path)
            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def special_tokens(self) -> int:
        return len(self.model.tokenizer("", add_special_tokens=True)["input_ids"])

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_dir(self.path)
        return self._fingerprint

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        enc = self.model.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
        )
        return [[(int(a), int(b)) for a, b in offsets] for offsets in enc["offset_mapping"]]

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(x, dtype=np.float32)  # (n, dim)
