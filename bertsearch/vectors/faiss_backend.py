"""FAISS in the index folder, the embedded vector backend, following the store's change feed.

What a search uses is a state swapped whole (a search holds the old one or the new one, never half of either):

- `base`: a FAISS index, loaded from `vectors.faiss` (its sidecar says which feed position it reflects) or built
  from the stored vectors;
- `delta`: the chunks written since the base, searched exactly beside it (their vectors come from the store);
- `dead`: the base's chunks deleted since, left out of its searches by an id selector.

A write costs what it changed: `sync` reads the feed since the state's position and updates the delta and the dead
set; no encoder work and no rebuild. When they grow past `merge_min` chunks (or the base, while it is smaller) and
`merge_fraction` of the base, a compaction folds them into a copy of the base in place (FAISS adds and removes where the index type allows it; an
HNSW graph takes the adds, and its dead ids are kept in the sidecar until a rebuild pays), saves it, and prunes the
feed up to its position. Only an index type that can do neither, or a dead set past `rebuild_fraction`, is rebuilt
from the store. A process killed at any point leaves a file that vouches for an older position, and the next open
replays the feed from there.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BertsearchError
from ..filters import Filter
from ..store.sqlite import Changes, FeedGap
from .base import Applied, VectorBackend
from .faiss_index import Damaged, VectorIndex, _faiss, gpu_available

log = logging.getLogger(__name__)

_NO_IDS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class _State:
    base: VectorIndex
    seq: int  # the feed position applied
    delta_ids: np.ndarray = field(default_factory=lambda: _NO_IDS)  # sorted chunk ids written since the base
    delta_xb: np.ndarray | None = None  # their vectors
    dead: np.ndarray = field(default_factory=lambda: _NO_IDS)  # sorted ids of the base's chunks deleted since
    counted: int | None = None  # a chunk count not below the true one, where the arrays cannot tell (`_as_of`)

    @property
    def count(self) -> int:
        if self.counted is not None:
            return self.counted
        return self.base.count - len(self.dead) + len(self.delta_ids)

    @property
    def pending(self) -> int:
        """Changes a compaction would fold into the base."""
        return len(self.delta_ids) + len(self.dead) - (0 if self.base.dead is None else len(self.base.dead))


class FaissBackend(VectorBackend):
    name = "faiss"
    FILE = "vectors.faiss"

    def __init__(self, folder: Path, store: Any, config: Any, *, gpu: bool | None = None, merge_min: int = 10_000,
                 merge_fraction: float = 0.05, rebuild_fraction: float = 0.2) -> None:
        self.path = Path(folder) / self.FILE
        self.store = store
        self.config = config
        self.gpu = gpu
        self.exact = config.ann == "flat"
        self.merge_min = merge_min
        self.merge_fraction = merge_fraction
        self.rebuild_fraction = rebuild_fraction
        self._state: _State | None = None
        self._lock = threading.Lock()  # one sync at a time
        self._compacting = threading.Lock()  # one compaction at a time
        self._worker: threading.Thread | None = None
        self._applied = Applied()  # what each sync applied (see `_as_of`)
        self.healed: list[str] = []  # damage found and mended as the file loaded, for `check` to report

    # -- following the store ------------------------------------------------------------------------

    def sync(self, *, wait: bool = True) -> int:
        with self._lock:
            st = self._sync_locked()
        if self._needs_compaction(st):
            if wait:
                self._compact()
            elif self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._compact_quietly, name="bertsearch-vectors", daemon=True)
                self._worker.start()
        return st.seq

    def current(self) -> _State:
        """The state to search now: synced to the store's head, unless another thread is syncing this moment (then
        the state before its sync, whole, which that thread's own searches will not see)."""
        st = self._state
        if st is not None and st.seq == self.store.feed_head():
            return st
        if self._lock.acquire(blocking=st is None):
            try:
                return self._sync_locked()
            finally:
                self._lock.release()
        return st  # type: ignore[return-value]

    def _sync_locked(self) -> _State:
        st = self._state or self._load()
        try:
            changes = self.store.changes_since(st.seq, self.config.dim, self.config.vector_dtype)
        except FeedGap:  # another process compacted and pruned the feed: its newer file is where to start
            st = self._load()
            changes = self.store.changes_since(st.seq, self.config.dim, self.config.vector_dtype)
        if changes.head > st.seq:  # (a snapshot older than this state has nothing to add)
            self._applied.add(st.seq, changes.head, np.union1d(changes.live.ids, changes.gone))
            st = _apply(st, changes)
        self._state = st
        return st

    def _as_of(self, st: _State) -> _State:
        """`st` as the calling thread's snapshot of the store has it. Another thread may have synced the shared
        state past this snapshot (its writes), or be syncing it while this one searches the state before: a chunk
        one has and the other has not would drop its document out of the results (a document being updated went
        missing from 3 dense searches in 4 while another thread rewrote it). The chunks changed between the two
        positions are left out of the state's base and delta, and those the snapshot holds are searched exactly,
        with the vectors it holds. Where the changes are not known (the feed pruned, or synced too long ago), the
        state is searched as it is."""
        head = self.store.feed_head()
        if st.seq == head:
            return st
        if st.seq < head:  # this snapshot is ahead: apply the changes it sees, to a state of its own
            try:
                return _apply(st, self.store.changes_since(st.seq, self.config.dim, self.config.vector_dtype))
            except FeedGap:
                return st
        touched = self._applied.touched(head, st.seq)
        if touched is None:
            return st
        held = np.asarray(self.store.existing_chunks(touched.tolist()), dtype=np.int64)
        xb = (self.store.chunk_vectors(held.tolist(), self.config.dim, self.config.vector_dtype) if len(held)
              else np.zeros((0, self.config.dim), dtype=np.float32))
        keep = ~np.isin(st.delta_ids, touched)
        ids = np.concatenate([st.delta_ids[keep], held])
        parts = [xb] if st.delta_xb is None else [st.delta_xb[keep], xb]
        order = np.argsort(ids, kind="stable")
        delta_xb = np.concatenate(parts)[order] if ids.size else None
        # (the count bounds how deep a search looks: at most len(held) too many, never too few; counting the
        # snapshot's chunks costs tens of milliseconds at a million)
        return _State(st.base, head, ids[order], delta_xb, np.union1d(st.dead, touched[touched <= st.base.max_id]),
                      counted=st.count + len(held))

    def _load(self) -> _State:
        """The saved file, if it belongs to this store and is not ahead of it; else one built from the store."""
        gpu = self.gpu if self.gpu is not None else gpu_available()
        epoch = self.store.epoch()
        try:
            vi = VectorIndex.load(self.path, spec=self.config.ann, epoch=epoch, upto=self.store.feed_head(), gpu=gpu)
        except Damaged as e:
            log.warning("%s; rebuilding it from the store", e)
            self.healed.append(f"{e}; rebuilt from the store when it was loaded")
            vi = None
        if vi is None and VectorIndex.cut_short(self.path, spec=self.config.ann, epoch=epoch):
            log.warning("%s is missing or not the size its sidecar says (cut short?); rebuilding it from the store",
                        self.path)
            self.healed.append(f"{self.path.name} was missing or cut short; rebuilt from the store when it was loaded")
        if vi is not None and vi.seq + 1 >= self.store.feed_start():
            return _State(vi, vi.seq, dead=vi.dead if vi.dead is not None else _NO_IDS)
        return self._build(gpu)

    def _build(self, gpu: bool) -> _State:
        t0 = time.perf_counter()
        everything = self.store.all_chunks(self.config.dim, self.config.vector_dtype)
        vi = VectorIndex.build(everything.live.ids, everything.live.vectors, self.config.ann, seq=everything.head,
                               epoch=self.store.epoch(), gpu=gpu)
        self._save(vi)
        log.info("built the %s vector index over %d chunks in %.1fs", self.config.ann, vi.count, time.perf_counter() - t0)
        return _State(vi, vi.seq)

    def _save(self, vi: VectorIndex) -> None:
        try:
            vi.save(self.path)
        except (OSError, RuntimeError) as e:  # a read-only index or a full disk still searches; the file is not kept
            log.warning("could not save the vector index to %s (%s)", self.path, e)
            return
        try:
            self.store.prune_feed(vi.seq)  # the file holds everything up to its position now
        except BertsearchError as e:  # busy or read-only: the feed is pruned another time
            log.debug("feed not pruned: %s", e)

    # -- compaction -----------------------------------------------------------------------------------

    def _needs_compaction(self, st: _State) -> bool:
        """Past `merge_min` changes and `merge_fraction` of the base; or, for a base smaller than `merge_min`, past
        the base itself: an index grown by small adds (the first made a base of 186 SciFact chunks) would otherwise
        search nearly everything outside FAISS until 10,000 were pending (dense p50 8.4 ms against 4.5 merged)."""
        return st.pending > max(min(self.merge_min, st.base.count), self.merge_fraction * st.base.count)

    def _compact_quietly(self) -> None:
        try:
            self._compact()
        except BertsearchError as e:  # closed meanwhile, or the store failed: the next search says so
            log.debug("background compaction stopped: %s", e)
        except Exception as e:  # noqa: BLE001 - a background thread has nobody to raise to
            log.warning("compacting %s failed (%s); searches use the base and its delta meanwhile", self.path, e)

    def _compact(self) -> None:
        """Fold the delta and the dead set into a new base, save it, and swap it in; searches and syncs go on
        meanwhile with the old state, and the changes synced meanwhile are replayed onto the new base."""
        with self._compacting:
            st = self._state
            if st is None or not self._needs_compaction(st):
                return
            t0 = time.perf_counter()
            vi = self._merged(st)
            how = "merged"
            if vi is None:
                vi = self._build(self.gpu if self.gpu is not None else gpu_available()).base
                how = "rebuilt"
            else:
                self._save(vi)
            with self._lock:
                self._state = _State(vi, vi.seq, dead=vi.dead if vi.dead is not None else _NO_IDS)
                self._sync_locked()
            log.info("%s the vector index (%d chunks, %d changes) in %.1fs", how, vi.count, st.pending,
                     time.perf_counter() - t0)

    def _merged(self, st: _State) -> VectorIndex | None:
        """A copy of the base with the delta added and the dead removed in place, or None where the index type
        cannot (then it is rebuilt). HNSW cannot remove: its dead ids stay beside it while they are few."""
        faiss = _faiss()
        base = st.base
        if "Gpu" in type(base.index).__name__ or base.count == 0:
            return None
        try:
            index = faiss.clone_index(base.index)
            dead = st.dead
            if len(dead):
                try:
                    index.remove_ids(faiss.IDSelectorBatch(dead))
                    dead = _NO_IDS
                except RuntimeError:  # HNSW
                    if len(dead) > self.rebuild_fraction * base.count:
                        return None
            if len(st.delta_ids):
                index.add_with_ids(st.delta_xb, st.delta_ids)
        except RuntimeError as e:
            log.info("cannot update %s in place (%s); rebuilding it", base.spec, str(e).splitlines()[-1])
            return None
        max_id = max(base.max_id, int(st.delta_ids[-1]) if len(st.delta_ids) else 0)
        # (dead ids still inside an HNSW graph are counted by it: `_State.count` takes them off)
        vi = VectorIndex(index=index, spec=base.spec, seq=st.seq, count=int(index.ntotal), max_id=max_id,
                         epoch=base.epoch, dead=dead if len(dead) else None)
        vi.tune()
        return vi

    # -- searching ----------------------------------------------------------------------------------

    def search(self, xq: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               where: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        st = self._as_of(self.current())
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        nq = len(xq)
        parts_d, parts_i = [], []
        live_base = st.base.count - len(st.dead)
        if live_base > 0 and (allowed is None or len(allowed)):
            D, I = st.base.search(xq, k, allowed, st.dead)
            parts_d.append(D)
            parts_i.append(I)
        if len(st.delta_ids):
            ids, xb = st.delta_ids, st.delta_xb
            if allowed is not None:
                keep = np.isin(ids, allowed)
                ids, xb = ids[keep], xb[keep]  # type: ignore[index]
            if len(ids):
                D = xq @ xb.T  # type: ignore[union-attr]
                top = np.argsort(-D, axis=1, kind="stable")[:, :k]
                parts_d.append(np.take_along_axis(D, top, 1))
                parts_i.append(ids[top])
        if not parts_d:
            return np.full((nq, 0), -np.inf, dtype=np.float32), np.full((nq, 0), -1, dtype=np.int64)
        D, I = np.concatenate(parts_d, axis=1), np.concatenate(parts_i, axis=1)
        D = np.where(I >= 0, D, -np.inf)
        order = np.argsort(-D, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def count(self) -> int:
        return self._as_of(self.current()).count

    def position(self) -> int:
        st = self._state
        return st.seq if st is not None else 0

    # -- upkeep ---------------------------------------------------------------------------------------

    def check(self) -> list[str]:
        """Every stored chunk has its vector here, and nothing else is searched (by id where the index type lists
        its ids, else by count)."""
        with self.store.snapshot():
            st = self.current()
            if st.seq != self.store.feed_head():
                return []  # (another thread is syncing this moment)
            stored = self.store.chunk_ids()
        meta = VectorIndex.vouched(self.path, spec=self.config.ann, epoch=self.store.epoch(), upto=self.store.feed_head())
        if meta is not None and VectorIndex.damaged(self.path, meta):
            again = VectorIndex.vouched(self.path, spec=self.config.ann, epoch=self.store.epoch(),
                                        upto=self.store.feed_head())
            if again is not None and again.get("crc32") == meta.get("crc32"):  # (not a file saved meanwhile)
                return [(f"{self.path.name} is damaged (its CRC-32 is not the one written with it); check --repair "
                         "rebuilds it from the store")]
        held = _ids(st.base.index)
        if held is None:
            return [] if st.count == len(stored) else [f"the vector index holds {st.count} vectors for {len(stored)} chunks"]
        held = np.union1d(np.setdiff1d(held, st.dead), st.delta_ids)
        missing, extra = np.setdiff1d(stored, held), np.setdiff1d(held, stored)
        problems = []
        if len(missing):
            problems.append(f"{len(missing)} chunks have no vector in the vector index (chunk {int(missing[0])}, ...)")
        if len(extra):
            problems.append(f"the vector index holds {len(extra)} vectors of deleted chunks (chunk {int(extra[0])}, ...)")
        return problems

    def info(self) -> dict[str, Any]:
        meta = VectorIndex.vouched(self.path, spec=self.config.ann, epoch=self.store.epoch(), upto=self.store.feed_head())
        st = self._state
        return {
            "backend": self.name,
            "ann": self.config.ann,
            "file_position": None if meta is None else int(meta["seq"]),
            "position": None if st is None else st.seq,
            "pending": None if st is None else st.pending,
        }

    def saved_position(self) -> int | None:
        """The feed position the saved file reflects (None: no file that vouches for this store)."""
        meta = VectorIndex.vouched(self.path, spec=self.config.ann, epoch=self.store.epoch(), upto=self.store.feed_head())
        return None if meta is None else int(meta["seq"])

    def rebuild(self) -> None:
        with self._compacting, self._lock:
            self._state = self._build(self.gpu if self.gpu is not None else gpu_available())
            self._sync_locked()

    def wait(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.join()

    def close(self) -> None:
        self.wait()
        self._state = None


def _ids(index: Any) -> np.ndarray | None:
    """The ids a FAISS index holds, sorted, where its type lists them (IDMap, IVF), else None."""
    faiss = _faiss()
    if hasattr(index, "id_map"):
        return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))
    try:
        ivf = faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError):
        return None
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)]
    return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, dtype=np.int64)


def _apply(st: _State, ch: Changes) -> _State:
    """The state with the feed's changes applied: chunks written since the base go to (or stay in, or leave) the
    delta; the base's chunks that are gone join the dead. Idempotent, so a replay changes nothing twice."""
    base = st.base
    live_ids, live_xb, gone = ch.live.ids, ch.live.vectors, ch.gone
    touched = np.union1d(live_ids, gone)
    keep = ~np.isin(st.delta_ids, touched)
    new = live_ids > base.max_id  # (a chunk id at most the base's largest is in the base, or long gone)
    ids = np.concatenate([st.delta_ids[keep], live_ids[new]])
    xbs = [live_xb[new]] if st.delta_xb is None else [st.delta_xb[keep], live_xb[new]]
    xb = np.concatenate(xbs) if ids.size else None
    if ids.size:
        order = np.argsort(ids, kind="stable")
        ids, xb = ids[order], xb[order]  # type: ignore[index]
    dead = np.union1d(st.dead, gone[gone <= base.max_id])
    return _State(base, ch.head, ids, xb, dead)
