"""Build, save, load and search a FAISS index with chunk ids, by name or factory string.

Names: flat (exact inner product, the default), hnsw, ivf, ivfpq; anything else is passed to
faiss.index_factory. Vectors are unit length, so inner product is cosine similarity. The file is
written to a temporary name and renamed into place; a JSON sidecar records the store's history
(`epoch`) and the feed position the file reflects, the number of vectors, and the ids it holds that
the store has deleted since (`dead`, for index types that cannot remove in place), and the file's CRC-32, so a
half-written file, one of another store, or one damaged in place (checked on load up to VERIFY_ON_LOAD bytes, and
always by `check`) is never trusted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadArgument, MissingDependency

log = logging.getLogger(__name__)

ANN_NAMES = ("flat", "hnsw", "ivf", "ivfpq")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingDependency("faiss-cpu", "vector search") from None
    return faiss


def factory_string(spec: str, n: int, dim: int) -> str:
    """The FAISS factory string for `spec` given `n` training vectors of dimension `dim`."""
    nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 if n >= 39 else 1))
    if spec == "flat":
        return "IDMap2,Flat"
    if spec == "hnsw":
        return "IDMap2,HNSW32,Flat"
    if spec == "ivf":
        return f"IVF{nlist},Flat"
    if spec == "ivfpq":
        m = next(m for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if m == 1 or (dim % m == 0 and m <= dim // 4))
        # "np": no polysemous training, which only serves Hamming-filtered search (never used here: candidates are
        # re-scored from the stored vectors); it made training 17x slower at 100k vectors (docs/measurements/scale-faiss.md)
        return f"IVF{nlist},PQ{m}x{8 if n >= 256 * 39 else 4}np"
    if spec.startswith("IDMap") or spec.startswith("IVF"):
        return spec
    return f"IDMap2,{spec}"


@dataclass
class VectorIndex:
    index: Any
    spec: str
    seq: int  # the store's change-feed position it reflects
    count: int
    max_id: int = 0  # the largest chunk id it holds: chunks written since have larger ids
    epoch: str = ""  # the store's history it belongs to
    dead: np.ndarray | None = None  # ids it holds that the store has deleted (sorted int64)

    META_SUFFIX = ".json"

    @classmethod
    def build(
        cls, ids: np.ndarray, xb: np.ndarray, spec: str = "flat", *, seq: int = 0, epoch: str = "", gpu: bool = False
    ) -> VectorIndex:
        """Train (when the index type needs it) and fill an index with `xb` (n, d) under `ids` (n,)."""
        faiss = _faiss()
        n, dim = xb.shape
        fs = factory_string(spec, n, dim)
        try:
            index = faiss.index_factory(dim, fs, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            why = str(e).splitlines()[-1].rpartition(": ")[2]
            raise BadArgument(f"bad ANN setting {spec!r} (FAISS factory {fs!r}: {why}); use flat, hnsw, ivf, ivfpq, or "
                              "a FAISS factory string such as HNSW64,Flat") from None
        if not index.is_trained:
            if n == 0:
                index = faiss.index_factory(dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
            else:
                log.info("training %s on %d vectors", fs, n)
                try:
                    index.train(xb)
                except RuntimeError as e:
                    log.warning(
                        "cannot train %s on %d vectors (%s); using exact search until the index is larger",
                        fs, n, str(e).splitlines()[-1],
                    )
                    index = faiss.index_factory(dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
        if n:
            index.add_with_ids(xb, ids)
        if gpu:
            index = to_gpu(index)
        vi = cls(index=index, spec=spec, seq=seq, count=n, max_id=int(ids.max()) if n else 0, epoch=epoch)
        vi.tune()
        return vi

    def tune(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Search-time settings of approximate indexes (defaults favour recall)."""
        faiss = _faiss()
        try:
            ivf = faiss.extract_index_ivf(self.index)
        except Exception:
            ivf = None
        if ivf is not None:
            ivf.nprobe = nprobe if nprobe is not None else min(ivf.nlist, max(16, ivf.nlist // 4))
        base = faiss.downcast_index(self.index.index) if hasattr(self.index, "index") else self.index
        if hasattr(base, "hnsw"):
            base.hnsw.efSearch = ef_search if ef_search is not None else 128

    def search(self, xq: np.ndarray, k: int, allowed: np.ndarray | None = None,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product search: D (nq, k) scores and I (nq, k) chunk ids, -1 where fewer exist.

        `allowed` (sorted int64 chunk ids) restricts the search to those ids, and `exclude` (sorted) leaves those
        out, inside FAISS (an id selector), so results are not thinned out after the fact.
        """
        if k < 1:
            raise BadArgument(f"k must be > 0, got {k}")
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if exclude is not None and not len(exclude):
            exclude = None
        if allowed is not None and exclude is not None:
            allowed, exclude = np.setdiff1d(allowed, exclude, assume_unique=True), None
        # (not fewer than the count: an excluded id need not be here, and FAISS pads what it cannot fill with -1)
        k = min(k, max(self.count if allowed is None else min(self.count, len(allowed)), 1))
        with few_threads(len(xq)):
            return self._search(xq, k, allowed, exclude)

    def _search(self, xq: np.ndarray, k: int, allowed: np.ndarray | None,
                exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None and exclude is None:
            return self.index.search(xq, k)
        faiss = _faiss()
        inner = faiss.IDSelectorBatch(np.ascontiguousarray(allowed if allowed is not None else exclude, dtype=np.int64))
        sel = inner if allowed is not None else faiss.IDSelectorNot(inner)
        base = faiss.downcast_index(self.index.index) if hasattr(self.index, "index") else self.index
        if hasattr(base, "hnsw"):
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(base.hnsw.efSearch, k))
        elif hasattr(faiss, "extract_index_ivf") and _is_ivf(self.index):
            params = faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(self.index).nprobe)
        else:
            params = faiss.SearchParameters(sel=sel)
        D, I = self.index.search(xq, k, params=params)
        del inner  # (the selectors must outlive the search)
        return D, I

    def save(self, path: Path) -> None:
        """Write atomically: file to a temporary name, fsync, rename; then the sidecar the same way."""
        faiss = _faiss()
        path = Path(path)
        index = self.index
        if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
            index = faiss.index_gpu_to_cpu(index)
        # temporary names of this process and thread alone: two processes rebuilding at once never write
        # into each other's file (the last rename wins, and either file is whole)
        _sweep_leftovers(path)
        tag = f"{os.getpid()}.{threading.get_ident()}.tmp"
        tmp = path.with_name(f"{path.name}.{tag}")
        mtmp = path.with_name(f"{path.name}{self.META_SUFFIX}.{tag}")
        try:
            faiss.write_index(index, str(tmp))
            _fsync(tmp)
            dead = [] if self.dead is None else self.dead.tolist()
            meta = {"spec": self.spec, "seq": self.seq, "epoch": self.epoch, "count": self.count,
                    "size": tmp.stat().st_size, "crc32": crc32(tmp), "max_id": self.max_id, "dead": dead}
            mtmp.write_text(json.dumps(meta))
            _fsync(mtmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            mtmp.unlink(missing_ok=True)
            raise
        # The file goes first, then the sidecar that vouches for it. A crash between the renames
        # leaves a new file under an old sidecar whose size no longer matches, so the file is
        # rebuilt on next open instead of trusted.
        os.replace(tmp, path)
        os.replace(mtmp, path.with_name(path.name + self.META_SUFFIX))

    @classmethod
    def load(cls, path: Path, *, spec: str, epoch: str, upto: int, gpu: bool = False) -> VectorIndex | None:
        """The saved index if it was built from this store's history (`epoch`) with this spec at a feed position
        no later than `upto` (the caller replays the feed from its position), else None; `Damaged` when its bytes
        changed since it was written (checked up to VERIFY_ON_LOAD bytes)."""
        meta = cls.vouched(path, spec=spec, epoch=epoch, upto=upto)
        if meta is None:
            return None
        if meta["size"] <= VERIFY_ON_LOAD and cls.damaged(path, meta):
            raise Damaged(f"{Path(path).name} was damaged (its CRC-32 is not the one written with it)")
        try:
            index = _faiss().read_index(str(path))
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        if index.ntotal != meta["count"]:
            return None
        if gpu:
            index = to_gpu(index)
        vi = cls(index=index, spec=spec, seq=int(meta["seq"]), count=int(index.ntotal), max_id=int(meta["max_id"]),
                 epoch=epoch, dead=np.array(sorted(meta["dead"]), dtype=np.int64) if meta["dead"] else None)
        vi.tune()
        return vi

    @classmethod
    def cut_short(cls, path: Path, *, spec: str, epoch: str) -> bool:
        """Whether the sidecar at `path` is this store's (its history and spec) but the file beside it is missing,
        or of another size: cut short (truncated, emptied) or deleted since it was written. A crash between the two
        renames of `save` looks the same, and is mended the same way (the file is built again)."""
        path = Path(path)
        try:
            meta = json.loads(path.with_name(path.name + cls.META_SUFFIX).read_text())
            if meta["epoch"] != epoch or meta["spec"] != spec:
                return False
            return not path.is_file() or path.stat().st_size != meta["size"]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    @staticmethod
    def damaged(path: Path, meta: dict[str, Any]) -> bool:
        """Whether the file at `path` differs from what its sidecar `meta` vouched for when it was written (bytes
        changed in place, the size kept): a search of it returned the wrong documents and `check` said ok (found
        2026-12-06). Files written before the sidecar had a checksum are taken as they are."""
        want = meta.get("crc32")
        if want is None:
            return False
        try:
            return crc32(Path(path)) != want
        except OSError:
            return True

    @classmethod
    def vouched(cls, path: Path, *, spec: str, epoch: str, upto: int) -> dict[str, Any] | None:
        """The sidecar, if it vouches for the file at `path` as built from this store's history with this spec
        at a feed position no later than `upto` (without reading the index itself), else None."""
        path = Path(path)
        try:
            meta = json.loads(path.with_name(path.name + cls.META_SUFFIX).read_text())
            if meta["epoch"] != epoch or meta["spec"] != spec or meta["size"] != path.stat().st_size:
                return None
            if not 0 <= int(meta["seq"]) <= upto or not isinstance(meta["dead"], list):
                return None
            int(meta["max_id"])
        except (OSError, ValueError, KeyError, TypeError):  # (older files, with a generation instead: rebuilt)
            return None
        return meta


SMALL_BATCH = 20
"""Queries below which a search runs on one OpenMP thread (FAISS's own cut for BLAS is 20 too)."""


@contextmanager
def few_threads(nq: int) -> Iterator[None]:
    """One OpenMP thread for a search of fewer than SMALL_BATCH queries, in the calling thread only.

    FAISS splits a search by query, so a single query gains nothing from a second thread, and OpenMP's idle
    threads spin for a while after each parallel region: on two cores that spinning thread took the core the query
    encoder needed next (SciFact on OpenVINO, one query at a time: FAISS 2.4 -> 0.7 ms, dense search 12 -> 7 ms).
    Not where torch is loaded: there it made no difference with torch alone, and with a torch encoder beside
    OpenVINO's reranker and reader it made the encoder ten times slower (wiki-demo `ask`, retrieve 26 -> 294 ms)."""
    if nq >= SMALL_BATCH or "torch" in sys.modules:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # (OpenMP keeps this per thread: other threads' searches and builds keep theirs)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _is_ivf(index: Any) -> bool:
    try:
        _faiss().extract_index_ivf(index)
        return True
    except Exception:
        return False


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index: Any) -> Any:
    """Move an index to the GPU when faiss-gpu and a GPU are present; HNSW stays on the CPU."""
    faiss = _faiss()
    if not gpu_available():
        log.warning("no GPU FAISS available (install faiss-gpu on a GPU machine); searching on the CPU")
        return index
    try:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    except RuntimeError as e:
        log.warning("index type cannot move to the GPU (%s); searching on the CPU", str(e).splitlines()[-1])
        return index


def _sweep_leftovers(path: Path) -> None:
    """Remove temporary files that a process killed while saving left beside `path` (their pid is gone)."""
    for p in path.parent.glob(f"{path.name}*.tmp"):
        try:
            pid = int(p.name.split(".")[-3])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except OSError:
            pass  # alive, or not ours to ask about


class Damaged(Exception):
    """The saved file is not what its sidecar vouched for when it was written (`VectorIndex.load`)."""


VERIFY_ON_LOAD = 128 * 2**20
"""Files up to this size (about 87,000 chunks of 384 float32 dimensions, flat) have their checksum verified each time
they are loaded (256 MiB took 0.21 s from the page cache on the 2-core Xeon, 2026-12-06, by hand: `crc32` below);
larger ones by `bertsearch check`."""


def crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
