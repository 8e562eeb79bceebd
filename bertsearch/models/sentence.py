"""Encoder backed by a sentence-transformers bi-encoder, loaded lazily on first use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadArgument
from .base import fingerprint_dir

log = logging.getLogger(__name__)



PRECISIONS = ("auto", "fp32", "bf16")
FP32_AT_MOST = 2
"""Under "auto" on a CPU, a call of at most this many texts (a query) runs in fp32: one SciFact query took 9.0 ms p50
against 11.3 under bfloat16 autocast, two 12.9 against 16.2; four were already faster in bf16 (cosine to the bf16
vector 0.99999)."""


def bf16_is_fast() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AVX-512 BF16 or AMX) through oneDNN."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(device: Any, precision: str) -> bool:
    """Whether a model on `device` runs under bfloat16 autocast: asked for ("bf16"), or "auto" on a CPU
    (not a GPU) that runs it natively."""
    on_cpu = str(device).startswith("cpu")
    return on_cpu and (precision == "bf16" or (precision == "auto" and bf16_is_fast()))


def half_dtype(device: Any, precision: str) -> Any:
    """The autocast type of a model on `device`, None for fp32: on a CPU, bfloat16 when asked for ("bf16") or "auto"
    where the CPU runs it natively; on a CUDA GPU, float16 for "auto" (its tensor cores' type); bfloat16 when asked
    for on any device."""
    import torch

    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if kind == "cpu":
        return torch.bfloat16 if uses_bf16("cpu", precision) else None
    if precision == "bf16":
        return torch.bfloat16
    return torch.float16 if kind == "cuda" else None  # (other devices: fp32 unless asked, as before)


def autocast(device: Any, precision: str) -> Any:
    """torch.autocast for a model on `device` at `precision` (see `half_dtype`); a no-op for fp32."""
    import torch

    dtype = half_dtype(device, precision)
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class SentenceEncoder:
    """`name` is what the index records; `path` is the local directory the weights load from.

    `precision` "auto" encodes under bfloat16 autocast on a CPU that runs bf16 natively (SciFact on the
    2-core development machine: 14.7 instead of 8.7 documents/s, nDCG@10 within 0.006 of fp32), under float16
    autocast on a GPU, and in fp32 elsewhere; a query (FP32_AT_MOST texts) on a CPU runs in fp32, which is faster there.
    """

    def __init__(self, name: str, path: Path, *, device: str | None = None, precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise BadArgument(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.name = name
        self.path = Path(path)
        self.device = device
        self.precision = precision
        self._model: Any = None
        self._fingerprint: str | None = None
        self._bf16: bool | None = None

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
        enc = self.model.tokenizer(  # whole documents, longer than the window: the chunker cuts them (no warning)
            texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False, verbose=False
        )
        return [[(int(a), int(b)) for a, b in offsets] for offsets in enc["offset_mapping"]]

    def input_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces the model reads for each text, special tokens included (before any cut to its window)."""
        ids = self.model.tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        few = len(texts) <= FP32_AT_MOST and self.precision == "auto" and model.device.type == "cpu"
        with autocast(model.device, "fp32" if few else self.precision):
            x = model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(x, dtype=np.float32)  # (n, dim)

    @property
    def uses_bf16(self) -> bool:
        """bfloat16 autocast: asked for, or "auto" on a CPU (not a GPU) that runs it natively."""
        if self._bf16 is None:
            self._bf16 = uses_bf16(self.model.device, self.precision)
        return self._bf16

    @property
    def vector_precision(self) -> str:
        """What the vectors are computed in (a new index records it): bf16, fp16 (autocast) or fp32."""
        import torch

        dtype = half_dtype(self.model.device, self.precision)
        return "fp32" if dtype is None else "bf16" if dtype == torch.bfloat16 else "fp16"
