"""FAISS index over chunk vectors: a cache derived from the store, never the source of truth."""

from .faiss_index import ANN_NAMES, VectorIndex, factory_string, gpu_available

__all__ = ["ANN_NAMES", "VectorIndex", "factory_string", "gpu_available"]
