"""The index's own settings, recorded in its store and mirrored to config.json beside it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import BadArgument

VECTOR_DTYPES = ("float32", "float16")


@dataclass
class IndexConfig:
    model: str
    """Encoder name as given: a model id or a path."""
    fingerprint: str
    """Hash of the encoder's weights; an encoder whose fingerprint differs cannot search these vectors."""
    dim: int
    max_tokens: int
    """Word pieces per chunk, title and special tokens included (the encoder's window)."""
    overlap: int = 32
    """Tokens shared by consecutive chunks of a document."""
    title_tokens: int = 64
    """A title up to this many tokens is prepended to each chunk's text for embedding."""
    ann: str = "flat"
    """Vector index: flat (exact), hnsw, ivf, ivfpq, or a FAISS factory string."""
    vector_dtype: str = "float32"
    """How chunk embeddings are stored in SQLite."""
    backend: str = "torch"
    """What computed the vectors: torch, onnx (int8) or openvino; searching with another is refused. (An index made
    before the field existed was made by torch.)"""
    precision: str = ""
    """What the vectors were computed in: int8, bf16, fp16 or fp32 ("": an index made before the field existed, in a
    float precision). An int8 index's queries are encoded in int8 too; float precisions agree to a cosine of 0.99998
    and search each other's vectors alike."""
    vectors: str = "faiss"
    """Where the vectors are searched: faiss (a file in the index folder), milvus (milvus-lite, embedded in the
    index folder), or the URI of a Milvus server or cluster (http://host:19530)."""

    def __post_init__(self) -> None:
        if self.vector_dtype not in VECTOR_DTYPES:
            raise BadArgument(f"vector dtype must be one of {', '.join(VECTOR_DTYPES)}, got {self.vector_dtype}")
        if self.max_tokens < 8:
            raise BadArgument(f"max_tokens must be at least 8, got {self.max_tokens}")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise BadArgument(f"overlap must be between 0 and half the window ({self.max_tokens // 2}), got {self.overlap}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexConfig:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
