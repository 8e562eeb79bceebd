"""Where the chunk vectors are searched: a backend derived from the store, never the source of truth (see `base`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import VectorBackend
from .faiss_index import ANN_NAMES, VectorIndex, factory_string, gpu_available

__all__ = ["ANN_NAMES", "VectorBackend", "VectorIndex", "factory_string", "gpu_available", "open_backend",
           "vectors_setting"]


def vectors_setting(value: str | None) -> str:
    """A `--vectors` value checked: faiss, milvus (embedded milvus-lite), or a Milvus URI (http(s)://host:port)."""
    from ..errors import BadArgument

    v = (value or "faiss").strip()
    if v.lower() in ("faiss", "milvus"):
        return v.lower()
    if v.startswith(("http://", "https://")) and len(v.split("://", 1)[1]) > 0:
        return v
    raise BadArgument(f"unknown vector backend {value!r}: use faiss (the default), milvus (embedded milvus-lite), "
                      "or the URI of a Milvus server (http://host:19530)")


def open_backend(folder: Path, store: Any, config: Any, *, gpu: bool | None = None) -> VectorBackend:
    """The backend `config.vectors` names, over `store`'s vectors."""
    setting = vectors_setting(config.vectors)
    if setting == "faiss":
        from .faiss_backend import FaissBackend

        return FaissBackend(folder, store, config, gpu=gpu)
    from .milvus import MilvusBackend

    return MilvusBackend(Path(folder), store, config, uri=None if setting == "milvus" else setting)
