"""The SQLite store, the source of truth: documents, chunks, their vectors, FTS5 for BM25."""

from .sqlite import Store, StoredDocument

__all__ = ["Store", "StoredDocument"]
