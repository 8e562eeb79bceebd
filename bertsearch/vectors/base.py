"""The vector backend interface: what the engine asks of wherever the chunk vectors are searched.

The SQLite store is the truth; a backend follows it through the store's change feed (`Store.changes_since`): it
remembers the feed position it has applied and, on `sync`, applies only what changed since. Applying is idempotent
(a chunk that exists is upserted, one that is gone is deleted), so a crash between the store's commit and a
backend's sync is repaired by replaying the feed from the position the backend last made durable.

Two implementations: FAISS in the index folder (`faiss_backend.FaissBackend`, the embedded default) and Milvus
(`milvus.MilvusBackend`: milvus-lite embedded, or a server or cluster by URI).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

import numpy as np

from ..filters import Filter

APPLIED_KEPT = 256  # syncs whose chunk ids an `Applied` record keeps


class Applied:
    """The chunk ids each sync of a backend applied, as (from, to, ids) over feed positions: a search whose snapshot
    of the store is older than what another thread synced leaves those chunks out of the backend's results and
    scores them as its snapshot has them (a document another thread was rewriting dropped out of 3 dense searches
    in 4). Kept for the last `APPLIED_KEPT` syncs; a full reload is recorded as unknown (`ids` None)."""

    def __init__(self) -> None:
        self._syncs: deque[tuple[int, int, np.ndarray | None]] = deque(maxlen=APPLIED_KEPT)
        self._lock = threading.Lock()

    def add(self, since: int, upto: int, ids: np.ndarray | None) -> None:
        with self._lock:
            self._syncs.append((since, upto, ids))

    def touched(self, since: int, upto: int) -> np.ndarray | None:
        """The chunk ids applied between positions `since` and `upto` (perhaps a few more), or None when the
        record does not cover that span."""
        if since >= upto:
            return np.zeros(0, dtype=np.int64)
        with self._lock:
            syncs = sorted(self._syncs, key=lambda x: x[0])
        covered, parts = since, []
        for a, b, ids in syncs:
            if b <= covered or a >= upto:
                continue
            if a > covered or ids is None:
                return None
            parts.append(ids)
            covered = b
            if covered >= upto:
                return np.unique(np.concatenate(parts))
        return None


class VectorBackend(ABC):
    """Searches the vectors of one index's chunks, kept in step with its store."""

    name: str = ""
    exact: bool = True
    """Whether `search` scores are the exact inner products of the stored vectors (else the caller re-scores)."""

    @abstractmethod
    def sync(self, *, wait: bool = True) -> int:
        """Apply the store's change feed since this backend's position; returns the position now applied.
        Cheap when little changed. `wait=False` lets slow upkeep (a compaction) run in the background."""

    @abstractmethod
    def search(
        self, xq: np.ndarray, k: int, *, allowed: np.ndarray | None = None, where: Filter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product search of `xq` (nq, dim): scores D (nq, k) and chunk ids I (nq, k), -1 where fewer exist.

        A filtered search gets both the filter (`where`, for backends that evaluate filters themselves) and the
        ids of the chunks that match it in the store (`allowed`, sorted int64); either way it returns the top `k`
        among the matching chunks, not the top `k` thinned out afterwards."""

    @abstractmethod
    def count(self) -> int:
        """Vectors searchable now."""

    def position(self) -> int:
        """The feed position applied (searches see the store as of it)."""
        return 0

    def check(self) -> list[str]:
        """Problems: vectors missing for stored chunks, or held for chunks the store no longer has."""
        return []

    def info(self) -> dict[str, Any]:
        return {"backend": self.name}

    def rebuild(self) -> None:
        """Load everything afresh from the store (a repair; never needed for consistency)."""

    def wait(self) -> None:
        """Wait for background upkeep to finish (tests, and a clean shutdown)."""

    def close(self) -> None:
        """Release what the backend holds; the store is closed by its owner."""
