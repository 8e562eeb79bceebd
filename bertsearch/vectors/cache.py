"""The vector index of an index folder, kept in step with the store and shared by threads.

`VectorCache.current()` is what a search uses: the index in memory, or the saved file when its sidecar vouches for
the store's generation, or one built from the stored vectors. An index behind the store (a writer committed since)
is still served: the search looks at the chunks written since beside it and drops the deleted ones (see
`search.retrieve`), so results are those of the store's current state. The rebuild runs in a background thread and
its result is swapped in whole; a search never waits for it, and never sees a half-built index.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BertsearchError
from .faiss_index import VectorIndex, gpu_available

log = logging.getLogger(__name__)


class VectorCache:
    FILE = "vectors.faiss"

    def __init__(self, folder: Path, store: Any, config: Any, *, gpu: bool | None = None,
                 max_staleness: float = 5.0) -> None:
        self.path = Path(folder) / self.FILE
        self.store = store
        self.config = config
        self.gpu = gpu
        self.max_staleness = max_staleness  # seconds a stale index is served before a rebuild starts
        self._vi: VectorIndex | None = None
        self._stale_since: float | None = None
        self._lock = threading.Lock()  # one build at a time
        self._worker: threading.Thread | None = None
        self._again = False

    def current(self) -> VectorIndex:
        """The vector index to search now: possibly behind the store, never half-built."""
        vi = self._vi
        if vi is None:
            with self._lock:
                if self._vi is None:
                    self._vi = self._load_or_build(self.store.generation())
                return self._vi
        if vi.generation != self.store.generation():
            now = time.monotonic()
            if self._stale_since is None:
                self._stale_since = now
            elif now - self._stale_since > self.max_staleness:
                self.refresh(wait=False)
        else:
            self._stale_since = None
        return vi

    def refresh(self, *, wait: bool = True) -> None:
        """Bring the vector index up to the store's generation: now (`wait`), or in a background thread that a
        search never waits for. No encoder work: the vectors come from the store."""
        if wait:
            with self._lock:
                self._swap(self._load_or_build(self.store.generation()))
            return
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                self._again = True  # the running rebuild goes round once more
                return
            self._worker = threading.Thread(target=self._rebuild, name="bertsearch-vectors", daemon=True)
            self._worker.start()

    def wait(self) -> None:
        """Wait for a background rebuild to finish (tests, and a clean shutdown)."""
        worker = self._worker
        if worker is not None:
            worker.join()

    def clear(self) -> None:
        self._vi = None

    def _swap(self, vi: VectorIndex) -> None:
        self._vi = vi  # one reference assignment: a search holds the old index or the new one, whole
        self._stale_since = None

    def _rebuild(self) -> None:
        while True:
            try:
                with self._lock:
                    self._again = False
                    self._swap(self._load_or_build(self.store.generation()))
            except BertsearchError as e:  # closed meanwhile, or the store failed: the next search says so
                log.debug("background vector rebuild stopped: %s", e)
                return
            except Exception as e:  # noqa: BLE001 - a background thread has nobody to raise to
                log.warning("background rebuild of %s failed (%s); searches use the older index meanwhile", self.path, e)
                return
            with self._lock:
                if not self._again:
                    return

    def _load_or_build(self, generation: int) -> VectorIndex:
        gpu = self.gpu if self.gpu is not None else gpu_available()
        vi = VectorIndex.load(self.path, generation=generation, spec=self.config.ann, gpu=gpu)
        if vi is not None:
            return vi
        t0 = time.perf_counter()
        generation, ids, xb = self.store.vectors(self.config.dim, self.config.vector_dtype)
        vi = VectorIndex.build(ids, xb, self.config.ann, generation=generation, gpu=gpu)
        try:
            vi.save(self.path)
        except (OSError, RuntimeError) as e:  # a read-only index or a full disk still searches; the file is not kept
            log.warning("could not save the vector index to %s (%s)", self.path, e)
        log.info("built the %s vector index over %d chunks in %.1fs", self.config.ann, len(ids), time.perf_counter() - t0)
        return vi
