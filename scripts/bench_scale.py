"""The FAISS vector backend at scale: a million chunks in flat, HNSW and IVF-PQ indexes, and what a write costs.

In one process (and a child process for each cold open), on synthetic text and the hashing encoder (384 dims,
the size of all-MiniLM-L6-v2's vectors, at no model cost):

  1. the store: N documents of 40-60 words drawn from a Zipf vocabulary of 30,000 synthetic words, one chunk
     each, written through `Index.add`'s store half (`Index.ingest.add`) in batches of 2,000; reused when the
     folder already holds them;
  2. for each ANN (flat, hnsw, ivfpq): a full rebuild from the store (`Index.vectors.rebuild()`: read from
     SQLite, FAISS build, save), the file's size, the process's memory, single-query p50/p95 (vectors only, and
     `Index.search(mode="dense")` end to end), batched throughput, and recall@10 against exact (flat) search;
  3. what a write costs instead of a rebuild: 1,000 documents added through `Index.add` and 1,000 deleted
     through `Index.delete` (the vector side, `Index.vectors.sync`, timed apart), a search right after, and a new
     process's open and first search; then a merge forced by adding past the compaction threshold; and the
     issue's add-10-then-search at 20k, 100k and N chunks (the smaller ones in folders of their own beside it);
  4. with --sweep, recall and latency over HNSW's efSearch and IVF's nprobe; with --pq-check N, IVF-PQ training
     with and without polysemous training on N stored vectors.

    nice python scripts/bench_scale.py --chunks 20000 --index /tmp/scale-20k --small "" --out logs/bench-scale-20k.json
    nice python scripts/bench_scale.py --index indexes/scale-1m --pq-check 100000 --out logs/bench-scale-1m.json
    nice python scripts/bench_scale.py --index indexes/scale-1m --sweep --no-merge --small "" --out logs/bench-scale-1m-sweep.json

The report (tables) goes to stdout, progress to stderr; docs/measurements/scale-faiss.md gives the figures of 1M.

Times are wall-clock seconds on whatever else the machine runs meanwhile: upper bounds on a shared machine.
Recall figures hold for these vectors (hashed bags of Zipf-distributed words), not for a neural encoder's.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_scale")

DIM = 384
BLOCK = 10_000  # documents generated per random stream: any range regenerates the same texts
MEASURED_FILES = ("bertsearch/vectors/faiss_backend.py", "bertsearch/vectors/faiss_index.py",
                  "bertsearch/store/sqlite.py", "bertsearch/engine.py", "bertsearch/search/retrieve.py")


# -- synthetic text -----------------------------------------------------------------------------------


class ZipfText:
    """Texts of words drawn from a Zipf distribution (exponent `s`) over `vocab` synthetic words. Each stream
    (main documents, new documents, queries) and each block of `BLOCK` texts has its own seed."""

    STREAMS: ClassVar[dict[str, int]] = {"d": 1, "n": 2, "m": 3, "q": 4}

    def __init__(self, vocab: int = 30_000, s: float = 1.07, seed: int = 20) -> None:
        self.seed = seed
        self.words = synthetic_words(vocab, np.random.default_rng([seed, 0]))
        p = 1.0 / np.arange(1, vocab + 1) ** s
        self.cdf = np.cumsum(p / p.sum())

    def _block(self, stream: str, b: int, lo: int, hi: int) -> list[str]:
        rng = np.random.default_rng([self.seed, self.STREAMS[stream], b])
        lens = rng.integers(lo, hi + 1, BLOCK)
        idx = np.minimum(np.searchsorted(self.cdf, rng.random(int(lens.sum()))), len(self.words) - 1)
        words = self.words[idx]
        cuts = np.cumsum(lens)[:-1]
        return [" ".join(w) for w in np.split(words, cuts)]

    def docs(self, stream: str, indices: Any) -> Iterator[dict[str, str]]:
        """Documents `stream`NNNNNNN for the given indices (ascending), 40-60 words each, no title."""
        block, texts = -1, []
        for i in indices:
            b = i // BLOCK
            if b != block:
                block, texts = b, self._block(stream, b, 40, 60)
            yield {"id": f"{stream}{i:07d}", "text": texts[i % BLOCK]}

    def queries(self, n: int) -> list[str]:
        rng = np.random.default_rng([self.seed, self.STREAMS["q"]])
        lens = rng.integers(5, 16, n)
        idx = np.minimum(np.searchsorted(self.cdf, rng.random(int(lens.sum()))), len(self.words) - 1)
        return [" ".join(w) for w in np.split(self.words[idx], np.cumsum(lens)[:-1])]


def synthetic_words(n: int, rng: np.random.Generator) -> np.ndarray:
    consonants, vowels = list("bcdfghjklmnprstvwz"), list("aeiou")
    seen: dict[str, None] = {}
    while len(seen) < n:
        syllables = rng.integers(2, 5)
        w = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        seen.setdefault(w, None)
    return np.array(list(seen), dtype=object)


# -- measuring ----------------------------------------------------------------------------------------


def mem() -> dict[str, float]:
    """This process's resident memory now and its peak since `reset_peak`, in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return {"rss_mb": out["VmRSS"], "peak_mb": out["VmHWM"]}


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


@contextmanager
def clock(out: dict[str, Any], key: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - t, 4)


def pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "mean_ms": round(float(a.mean()), 2)}


def folder_mb(path: Path, prefix: str) -> float:
    return round(sum(p.stat().st_size for p in path.iterdir() if p.name.startswith(prefix)) / 2**20, 1)


class SyncClock:
    """Stands in for an index's `vectors.sync` and times each call: the vector side of a write."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend.sync
        self.seconds = 0.0
        backend.sync = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


class Events(logging.Handler):
    """The vector backend's own log lines (builds, merges, rebuilds), so a step can say which happened."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


EVENTS = Events()


# -- the steps ----------------------------------------------------------------------------------------


def open_index(path: Path, ann: str | None = None) -> Any:
    from bertsearch.engine import Index

    ix = Index.open(path, create=True, model=f"hashing:{DIM}", ann=ann)
    ix.sync_clock = SyncClock(ix.vectors)
    return ix


def ensure_store(path: Path, n: int, text: ZipfText, batch: int) -> dict[str, Any]:
    """An index folder holding documents d0000000.. of `n` one-chunk documents and nothing else."""
    ix = open_index(path, ann="flat")
    out: dict[str, Any] = {"documents": n}
    try:
        counts = ix.store.counts()
        stray = []
        if counts["documents"] != n or counts["chunks"] != n:
            stray = [i for i in ix.store.ids() if not i.startswith("d") or int(i[1:]) >= n]
        if stray:  # left by an interrupted run
            log.info("deleting %d documents an earlier run left", len(stray))
            ix.store.delete(stray)
        have = ix.store.counts()["documents"]
        if have == n and ix.store.counts()["chunks"] == n:
            out["reused"] = True
            out["store_write_s"] = None
        else:
            out["reused"] = False
            done = [0]

            def progress(k: int) -> None:
                done[0] += k
                if done[0] % 100_000 < k:
                    log.info("written %d documents", done[0])

            sample = [f"d{i:07d}" for i in range(0, have, max(have // 50, 1))]
            start = have if have and len(ix.store.existing(sample)) == len(sample) else 0  # (unchanged ones cost no encoding)
            t = time.perf_counter()
            report = ix.ingest.add(text.docs("d", range(start, n)), batch_size=batch, on_progress=progress)
            out["store_write_s"] = round(time.perf_counter() - t, 1)
            out["written"] = report.added + report.replaced
            out["docs_per_s"] = round(out["written"] / out["store_write_s"])
            log.info("store written: %d documents in %.0f s", out["written"], out["store_write_s"])
        counts = ix.store.counts()
        out.update(counts)
        ix.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out["store_mb"] = folder_mb(path, "store.db")
        if counts["chunks"] != counts["documents"] or counts["documents"] != n:
            raise SystemExit(f"expected {n} one-chunk documents, the store holds {counts}")
    finally:
        ix.close()
    return out


def full_build(ix: Any) -> dict[str, Any]:
    """`vectors.rebuild()`, with the read from SQLite and the save timed apart (the rest is the FAISS build)."""
    from bertsearch.vectors import factory_string, faiss_index

    out: dict[str, Any] = {}
    read_s = [0.0]
    save_s = [0.0]
    store_read = ix.store.all_chunks
    save = faiss_index.VectorIndex.save

    def timed_read(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return store_read(*a, **kw)
        finally:
            read_s[0] += time.perf_counter() - t

    def timed_save(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return save(self, *a, **kw)
        finally:
            save_s[0] += time.perf_counter() - t

    gc.collect()
    before = mem()
    reset_peak()
    ix.store.all_chunks = timed_read
    faiss_index.VectorIndex.save = timed_save
    try:
        with clock(out, "rebuild_s"):
            ix.vectors.rebuild()
    finally:
        faiss_index.VectorIndex.save = save
        del ix.store.all_chunks
    after = mem()
    out["read_s"] = round(read_s[0], 2)
    out["save_s"] = round(save_s[0], 2)
    out["faiss_build_s"] = round(out["rebuild_s"] - read_s[0] - save_s[0], 2)
    out["file_mb"] = round(ix.vectors.path.stat().st_size / 2**20, 1)
    out["rss_before_mb"] = before["rss_mb"]
    out["rss_after_mb"] = after["rss_mb"]
    out["rss_growth_mb"] = round(after["rss_mb"] - before["rss_mb"], 1)
    out["peak_growth_mb"] = round(after["peak_mb"] - before["rss_mb"], 1)
    st = ix.vectors.current()
    out["factory_string"] = factory_string(ix.config.ann, st.base.count, ix.config.dim)
    out["factory"] = describe(st.base.index)
    out["count"] = st.count
    out["events"] = EVENTS.take()
    return out


def describe(index: Any) -> dict[str, Any]:
    """What FAISS built, read back from the index: its type and its size and search settings."""
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    d: dict[str, Any] = {"type": type(index).__name__, "inner": type(inner).__name__, "ntotal": int(index.ntotal)}
    if hasattr(inner, "hnsw"):
        d.update(M=int(inner.hnsw.nb_neighbors(1)), efConstruction=int(inner.hnsw.efConstruction),
                 efSearch=int(inner.hnsw.efSearch))
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        ivf = None
    if ivf is not None:
        d.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            d.update(pq_m=int(pq.M), pq_nbits=int(pq.nbits), code_bytes=int(pq.code_size))
    return d


def measure_queries(ix: Any, queries: list[str], xq: np.ndarray, k: int = 10, *,
                    light: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latency and throughput, and what was found (for recall): vectors only and end to end (`light`: single
    queries only)."""
    out: dict[str, Any] = {}
    for i in range(5):  # warm-up
        ix.vectors.search(xq[i : i + 1], k)
        ix.search(queries[i], k=k, mode="dense")
    vec_t, e2e_t = [], []
    I_all = np.full((len(xq), k), -1, dtype=np.int64)
    for i in range(len(xq)):
        t = time.perf_counter()
        _, I = ix.vectors.search(xq[i : i + 1], k)
        vec_t.append(time.perf_counter() - t)
        I_all[i, : I.shape[1]] = I[0]
    hits = []
    for q in queries:
        t = time.perf_counter()
        h = ix.search(q, k=k, mode="dense")
        e2e_t.append(time.perf_counter() - t)
        hits.append([(x.doc_id, float(x.score)) for x in h])
    out["vectors_single"] = pct(vec_t)
    out["dense_search_single"] = pct(e2e_t)
    if light:
        return out, {"I": I_all, "hits": hits}
    out["vectors_single_1thread"] = one_thread(ix, xq[:50], k)
    t = time.perf_counter()
    ix.vectors.search(xq, k)
    s = time.perf_counter() - t
    out["vectors_batched_qps"] = round(len(xq) / s, 1)
    t = time.perf_counter()
    ix.batch_search(queries, k=k, mode="dense")
    s = time.perf_counter() - t
    out["dense_search_batched_qps"] = round(len(xq) / s, 1)
    return out, {"I": I_all, "hits": hits}


def single_queries(vectors: Any, xq: np.ndarray, k: int = 10) -> dict[str, float]:
    """p50/p95/mean of the vector backend's search, one query a call."""
    ts = []
    for q in xq:
        t = time.perf_counter()
        vectors.search(q[None], k)
        ts.append(time.perf_counter() - t)
    return pct(ts)


def one_thread(ix: Any, xq: np.ndarray, k: int) -> dict[str, float]:
    """Single-query latency with FAISS on one thread: on a shared machine, two OpenMP threads wait on each other."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return single_queries(ix.vectors, xq, k)
    finally:
        faiss.omp_set_num_threads(threads)


def exact_scores(ix: Any, xq: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    """The exact inner product of each query with each id found (from the stored vectors), and the ids' documents."""
    ids = np.unique(I[I >= 0])
    xb = ix.store.chunk_vectors(ids.tolist(), ix.config.dim, ix.config.vector_dtype)  # (n, dim)
    docs = ix.store.chunk_doc_ids(ids.tolist())
    pos = np.searchsorted(ids, np.where(I >= 0, I, ids[0]))
    D = np.where(I >= 0, np.einsum("qd,qkd->qk", xq, xb[pos]), -np.inf)
    names = [[docs[c][1] if c >= 0 else "" for c in row] for row in I.tolist()]
    return D, names


def ground_truth(ix: Any, xq: np.ndarray, found: dict[str, Any]) -> dict[str, Any]:
    D, names = exact_scores(ix, xq, found["I"])
    return {"docs": names, "scores": D, "hits": found["hits"]}


def recall(truth: dict[str, Any], ix: Any, xq: np.ndarray, found: dict[str, Any], k: int = 10) -> dict[str, float]:
    """recall@k of the vectors' search and of the end-to-end dense search against exact search: by document id,
    and tie-aware (a result counts when its exact score reaches the exact k-th score)."""
    D, names = exact_scores(ix, xq, found["I"])
    by_id, tie = [], []
    for qi in range(len(xq)):
        gt = set(truth["docs"][qi][:k])
        kth = truth["scores"][qi][k - 1]
        by_id.append(len(gt & set(names[qi][:k])) / k)
        tie.append(min(k, int((D[qi][:k] >= kth - 1e-5).sum())) / k)
    e2e_id, e2e_tie = [], []
    for mine, exact in zip(found["hits"], truth["hits"]):
        kth = exact[k - 1][1] if len(exact) >= k else -np.inf
        e2e_id.append(len({d for d, _ in mine[:k]} & {d for d, _ in exact[:k]}) / k)
        e2e_tie.append(min(k, sum(s >= kth - 1e-5 for _, s in mine[:k])) / k)
    return {"vectors_recall@10": round(float(np.mean(by_id)), 4),
            "vectors_recall@10_ties": round(float(np.mean(tie)), 4),
            "dense_search_recall@10": round(float(np.mean(e2e_id)), 4),
            "dense_search_recall@10_ties": round(float(np.mean(e2e_tie)), 4)}


def sweep(ix: Any, queries: list[str], xq: np.ndarray, truth: dict[str, Any], k: int = 10) -> list[dict[str, Any]]:
    """Recall against latency over the search-time setting of an approximate index (HNSW efSearch, IVF nprobe),
    through `VectorIndex.tune`; the shipped default is put back afterwards."""
    vi = ix.vectors.current().base
    f = describe(vi.index)
    if "efSearch" in f:
        settings = [{"ef_search": e} for e in (64, 128, 256, 512)]
    elif "nprobe" in f:
        settings = [{"nprobe": p} for p in sorted({16, f["nlist"] // 64, f["nlist"] // 16, f["nlist"] // 4})]
    else:
        return []
    rows = []
    try:
        for kw in settings:
            vi.tune(**kw)
            row: dict[str, Any] = dict(kw)
            r, found = measure_queries(ix, queries, xq, k, light=True)
            row.update(vectors=r["vectors_single"], dense_search=r["dense_search_single"], **recall(truth, ix, xq, found))
            rows.append(row)
            log.info("sweep: %s", row)
    finally:
        vi.tune()
    return rows


def probe(path: Path, query: str) -> dict[str, Any]:
    """A new process opens the index and searches once: the base file's load and the feed's replay."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, "--probe", str(path), "--query", query],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 2)
    return out


def run_probe(path: Path, query: str) -> None:
    """The child's side of `probe`: prints one JSON line."""
    t0 = time.perf_counter()
    from bertsearch.engine import Index

    events = Events()
    logging.getLogger("bertsearch").addHandler(events)
    logging.getLogger("bertsearch").setLevel(logging.INFO)
    out: dict[str, Any] = {"import_s": round(time.perf_counter() - t0, 3)}
    with clock(out, "open_s"):
        ix = Index.open(path)
    before = ix.vectors.saved_position()
    replay = [0.0]
    changes_since = ix.store.changes_since

    def timed_changes(*a: Any, **kw: Any) -> Any:  # the feed read from SQLite, apart from the file's load
        t = time.perf_counter()
        try:
            return changes_since(*a, **kw)
        finally:
            replay[0] += time.perf_counter() - t

    ix.store.changes_since = timed_changes
    with clock(out, "load_and_replay_s"):
        ix.vectors.sync()
    del ix.store.changes_since
    out["replay_read_s"] = round(replay[0], 4)
    with clock(out, "first_search_s"):
        hits = ix.search(query, k=10, mode="dense")
    with clock(out, "second_search_s"):
        ix.search(query, k=10, mode="dense")
    info = ix.vectors.info()
    out.update(file_position=before, position=info.get("position"), pending=info.get("pending"),
               hits=len(hits), rss_mb=mem()["rss_mb"], events=events.lines,
               count_ok=ix.vectors.count() == ix.store.counts()["chunks"])
    ix.close()
    print(json.dumps(out))


def timed_write(ix: Any, fn: Any, out: dict[str, Any], key: str) -> Any:
    """Run a write through the index; record its whole time and the vector side (the syncs inside it)."""
    ix.sync_clock.seconds = 0.0
    t = time.perf_counter()
    result = fn()
    total = time.perf_counter() - t
    out[f"{key}_s"] = round(total, 4)
    out[f"{key}_vectors_s"] = round(ix.sync_clock.seconds, 4)
    out[f"{key}_store_s"] = round(total - ix.sync_clock.seconds, 4)
    return result


def incremental(ix: Any, path: Path, n: int, text: ZipfText, queries: list[str], xq: np.ndarray,
                rebuild_s: float, writes: int) -> dict[str, Any]:
    """Add `writes` documents, then delete `writes` of the base's, each timed against a full rebuild; then put
    the store back as it was (the deleted ones added again, the new ones deleted)."""
    out: dict[str, Any] = {"writes": writes, "rebuild_s": rebuild_s}
    new = list(text.docs("n", range(writes)))
    EVENTS.take()

    timed_write(ix, lambda: ix.add(new, batch_size=writes), out, "add")
    with clock(out, "search_after_add_s"):
        ix.search(queries[0], k=10, mode="dense")
    with clock(out, "vectors_search_after_add_s"):
        ix.vectors.search(xq[:1], 10)
    out["add_ratio_to_rebuild"] = round(out["add_s"] / rebuild_s, 4)
    out["add_vectors_ratio_to_rebuild"] = round(out["add_vectors_s"] / rebuild_s, 4)
    out["add_events"] = EVENTS.take()
    out["new_found_first"] = sum(ix.search(d["text"], k=1, mode="dense")[0].doc_id == d["id"] for d in new[:20])
    out["count_ok_after_add"] = ix.vectors.count() == ix.store.counts()["chunks"]
    out["info_after_add"] = ix.vectors.info()
    out["vectors_single_with_delta"] = single_queries(ix.vectors, xq[:50])
    out["probe_after_add"] = probe(path, queries[0])

    stride = max(n // writes, 1)
    victims_at = list(range(stride // 2, n, stride))[:writes]
    victims = [f"d{i:07d}" for i in victims_at]
    deleted = timed_write(ix, lambda: ix.delete(victims), out, "delete")
    out["deleted"] = deleted
    with clock(out, "search_after_delete_s"):
        ix.search(queries[0], k=10, mode="dense")
    out["delete_ratio_to_rebuild"] = round(out["delete_s"] / rebuild_s, 4)
    out["delete_events"] = EVENTS.take()
    gone_docs = list(text.docs("d", victims_at[:20]))
    out["deleted_found"] = sum(any(h.doc_id == d["id"] for h in ix.search(d["text"], k=10, mode="dense"))
                               for d in gone_docs)
    out["count_ok_after_delete"] = ix.vectors.count() == ix.store.counts()["chunks"]
    out["info_after_delete"] = ix.vectors.info()
    out["vectors_single_with_delta_and_dead"] = single_queries(ix.vectors, xq[:50])
    out["probe_after_delete"] = probe(path, queries[0])

    t = time.perf_counter()
    ix.add(list(text.docs("d", victims_at)), batch_size=writes)
    ix.delete([d["id"] for d in new])
    out["restore_s"] = round(time.perf_counter() - t, 2)
    out["restore_events"] = EVENTS.take()
    return out


def add_ten(ix: Any, text: ZipfText, queries: list[str], reps: int = 3, start: int = 900_000) -> dict[str, Any]:
    """The issue's figure: add 10 documents, then search (hybrid, the default mode; and dense), `reps` times."""
    rows = []
    added = []
    for r in range(reps):
        docs = list(text.docs("n", range(start + 10 * r, start + 10 * r + 10)))
        added += [d["id"] for d in docs]
        row: dict[str, Any] = {}
        timed_write(ix, lambda docs=docs: ix.add(docs), row, "add")
        with clock(row, "hybrid_search_s"):
            ix.search(queries[r + 1], k=10)
        with clock(row, "dense_search_s"):
            ix.search(queries[r + 1], k=10, mode="dense")
        row["add_then_search_s"] = round(row["add_s"] + row["hybrid_search_s"], 4)
        rows.append(row)
    ix.delete(added)
    med = {key: round(float(np.median([row[key] for row in rows])), 4) for key in rows[0]}
    return {"median": med, "runs": rows, "events": EVENTS.take()}


def merge(ix: Any, text: ZipfText, queries: list[str], xq: np.ndarray) -> dict[str, Any]:
    """Add just enough documents to pass the compaction threshold (a merge into the base, timed as the vector
    side of the add), then delete them again (a dead set of that size, or another compaction)."""
    vec = ix.vectors
    st = vec.current()
    need = int(max(vec.merge_min, vec.merge_fraction * st.base.count)) + 1 - st.pending
    out: dict[str, Any] = {"documents": need, "pending_before": st.pending}
    docs = list(text.docs("m", range(need)))
    gc.collect()
    before = mem()
    reset_peak()
    EVENTS.take()
    timed_write(ix, lambda: ix.add(docs, batch_size=2000), out, "add")
    out["peak_growth_mb"] = round(mem()["peak_mb"] - before["rss_mb"], 1)
    out["add_events"] = EVENTS.take()
    out["info_after_add"] = vec.info()
    out["file_mb_after"] = round(vec.path.stat().st_size / 2**20, 1)
    out["count_ok_after_add"] = vec.count() == ix.store.counts()["chunks"]
    out["probe_after_add"] = probe(ix.path, queries[0])
    timed_write(ix, lambda: ix.delete([d["id"] for d in docs]), out, "delete")
    out["delete_events"] = EVENTS.take()
    out["info_after_delete"] = vec.info()
    out["count_ok_after_delete"] = vec.count() == ix.store.counts()["chunks"]
    out["vectors_single_after_delete"] = single_queries(vec, xq[:50])
    out["probe_after_delete"] = probe(ix.path, queries[0])
    return out


def small_sizes(base: Path, sizes: list[int], text: ZipfText, queries: list[str], batch: int) -> dict[str, Any]:
    out = {}
    for n in sizes:
        path = base.with_name(f"{base.name}-{n // 1000}k")
        store = ensure_store(path, n, text, batch)
        ix = open_index(path, ann="flat")
        try:
            row: dict[str, Any] = {"store": store}
            with clock(row, "first_sync_s"):  # loads the saved file, or builds it
                ix.vectors.sync()
            row["first_sync_events"] = EVENTS.take()
            row["add_ten"] = add_ten(ix, text, queries)
        finally:
            ix.close()
        out[str(n)] = row
        log.info("add-10 at %d chunks: %s", n, row["add_ten"]["median"])
    return out


def pq_check(path: Path, n: int) -> dict[str, Any]:
    """Training time of the ivfpq factory string with polysemous training (FAISS's factory default) and with 'np'
    (without it; bertsearch never searches by Hamming distance), on the first `n` stored vectors."""
    import faiss

    from bertsearch.store import Store
    from bertsearch.vectors import factory_string

    store = Store(path / "store.db")
    try:
        xb = store.all_chunks(DIM).live.vectors[:n]
    finally:
        store.close()
    fs = factory_string("ivfpq", len(xb), DIM)
    out: dict[str, Any] = {"vectors": len(xb), "factory_string": fs}
    base = fs.removesuffix("np")
    for name in (base, base + "np"):
        index = faiss.index_factory(DIM, name, faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        index.train(xb)
        out[f"train_s[{name}]"] = round(time.perf_counter() - t, 1)
        log.info("pq check: %s", out)
    return out


# -- the run ----------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import faiss

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *MEASURED_FILES],
                           capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": model, "cores": os.cpu_count(), "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_simd": faiss.get_compile_options(), "numpy": np.__version__, "nice": os.nice(0),
        "git_head": git, "measured_files_modified": dirty.splitlines(),
        "measured_files_sha256": {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12] for f in MEASURED_FILES},
        "loadavg_start": os.getloadavg(),
    }


def report(res: dict[str, Any]) -> str:
    lines = []
    env, st = res["environment"], res["store"]
    lines.append(f"# FAISS at {st['chunks']:,} chunks ({env['date']}, {env['cpu']}, {env['cores']} cores, "
                 f"faiss {env['faiss']}, nice {env['nice']})")
    w = f"{st['store_write_s']} s ({st.get('docs_per_s')} docs/s)" if st["store_write_s"] is not None else "reused"
    lines.append(f"store: {st['documents']:,} documents, {st['chunks']:,} chunks, {st['store_mb']} MB; write {w}")
    lines.append("")
    lines.append("| ann | factory | rebuild s (read / build / save) | file MB | RSS +MB (peak +MB) | vec p50/p95 ms (1 thread) "
                 "| dense p50/p95 ms | vec qps batched | dense qps batched | recall@10 vec (ties) | recall@10 dense (ties) |")
    lines.append("|" + "---|" * 11)
    for ann, r in res["anns"].items():
        b, q, rc = r["build"], r["queries"], r.get("recall", {})
        f = b["factory"]
        fs = b["factory_string"] + ": " + f["inner"] + "".join(f" {k}={f[k]}" for k in ("M", "efSearch", "nlist", "nprobe", "pq_m", "pq_nbits") if k in f)
        lines.append(
            f"| {ann} | {fs} | {b['rebuild_s']:.1f} ({b['read_s']:.1f} / {b['faiss_build_s']:.1f} / {b['save_s']:.1f}) "
            f"| {b['file_mb']} | {b['rss_growth_mb']:.0f} ({b['peak_growth_mb']:.0f}) "
            f"| {q['vectors_single']['p50_ms']} / {q['vectors_single']['p95_ms']} "
            f"({q['vectors_single_1thread']['p50_ms']} / {q['vectors_single_1thread']['p95_ms']}) "
            f"| {q['dense_search_single']['p50_ms']} / {q['dense_search_single']['p95_ms']} "
            f"| {q['vectors_batched_qps']} | {q['dense_search_batched_qps']} "
            f"| {rc.get('vectors_recall@10', 'exact')} ({rc.get('vectors_recall@10_ties', '-')}) "
            f"| {rc.get('dense_search_recall@10', 'exact')} ({rc.get('dense_search_recall@10_ties', '-')}) |")
    lines.append("")
    lines.append("| ann | writes | add s (store / vectors) | % of rebuild | search after | new process: open + load/replay + 1st search "
                 "| delete s (store / vectors) | % of rebuild | new process after delete |")
    lines.append("|" + "---|" * 9)
    for ann, r in res["anns"].items():
        i = r.get("incremental")
        if not i:
            continue
        pa, pd = i["probe_after_add"], i["probe_after_delete"]

        def p(x: dict[str, Any]) -> str:
            if "error" in x:
                return "error"
            return f"{x['open_s']:.2f} + {x['load_and_replay_s']:.2f} + {x['first_search_s']:.2f} s (wall {x['process_wall_s']} s)"

        lines.append(
            f"| {ann} | {i['writes']} | {i['add_s']:.2f} ({i['add_store_s']:.2f} / {i['add_vectors_s']:.3f}) "
            f"| {100 * i['add_ratio_to_rebuild']:.2f}% | {i['search_after_add_s'] * 1000:.0f} ms | {p(pa)} "
            f"| {i['delete_s']:.2f} ({i['delete_store_s']:.2f} / {i['delete_vectors_s']:.3f}) "
            f"| {100 * i['delete_ratio_to_rebuild']:.2f}% | {p(pd)} |")
    lines.append("")
    lines.append("| ann | merge: documents added | add s (store / vectors incl. merge) | peak +MB | what happened | delete s (vectors) | after |")
    lines.append("|" + "---|" * 7)
    for ann, r in res["anns"].items():
        m = r.get("merge")
        if not m:
            continue
        lines.append(f"| {ann} | {m['documents']:,} | {m['add_s']:.1f} ({m['add_store_s']:.1f} / {m['add_vectors_s']:.1f}) "
                     f"| {m['peak_growth_mb']:.0f} | {'; '.join(m['add_events']) or '-'} | {m['delete_s']:.1f} "
                     f"({m['delete_vectors_s']:.2f}) | {'; '.join(m['delete_events']) or 'no merge'} |")
    lines.append("")
    lines.append("| chunks | ann | add 10 s (vectors) | then hybrid search s | dense search s | add + hybrid search s |")
    lines.append("|---|---|---|---|---|---|")
    for n, row in res.get("small", {}).items():
        m = row["add_ten"]["median"]
        lines.append(f"| {int(n):,} | flat | {m['add_s']:.3f} ({m['add_vectors_s']:.3f}) | {m['hybrid_search_s']:.3f} "
                     f"| {m['dense_search_s']:.3f} | {m['add_then_search_s']:.3f} |")
    for ann, r in res["anns"].items():
        if "add_ten" in r:
            m = r["add_ten"]["median"]
            lines.append(f"| {st['chunks']:,} | {ann} | {m['add_s']:.3f} ({m['add_vectors_s']:.3f}) | {m['hybrid_search_s']:.3f} "
                         f"| {m['dense_search_s']:.3f} | {m['add_then_search_s']:.3f} |")
    lines.append("")
    for ann, r in res["anns"].items():
        for row in r.get("sweep", []):
            setting = ", ".join(f"{key}={row[key]}" for key in ("ef_search", "nprobe") if key in row)
            lines.append(f"sweep {ann} {setting}: vec p50/p95 {row['vectors']['p50_ms']} / {row['vectors']['p95_ms']} ms, "
                         f"dense p50/p95 {row['dense_search']['p50_ms']} / {row['dense_search']['p95_ms']} ms, "
                         f"recall@10 vec {row['vectors_recall@10']} ({row['vectors_recall@10_ties']}), "
                         f"dense {row['dense_search_recall@10']} ({row['dense_search_recall@10_ties']})")
    if "pq_check" in res:
        lines.append(f"IVF-PQ training: {res['pq_check']}")
    lines.append(f"total {res['total_s'] / 60:.1f} min; load average {env['loadavg_start']} at start, {res['loadavg_end']} at end")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=ROOT / "indexes" / "scale-1m", help="index folder (made, or reused)")
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--anns", default="flat,hnsw,ivfpq")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--writes", type=int, default=1000, help="documents added, then deleted, against a rebuild")
    ap.add_argument("--small", default="20000,100000", help="sizes (chunks) for the add-10 comparison; '' for none")
    ap.add_argument("--sweep", action="store_true", help="recall and latency over efSearch / nprobe")
    ap.add_argument("--no-merge", action="store_true", help="skip the forced merge")
    ap.add_argument("--batch", type=int, default=2000, help="documents per store transaction when writing the store")
    ap.add_argument("--pq-check", type=int, default=0, metavar="N",
                    help="also time IVF-PQ training with and without polysemous training on N stored vectors")
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    ap.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--query", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe is not None:
        run_probe(args.probe, args.query)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("bertsearch").addHandler(EVENTS)

    t_all = time.perf_counter()
    text = ZipfText()
    queries = text.queries(args.queries)
    res: dict[str, Any] = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()},
                           "corpus": {"vocab": len(text.words), "zipf_s": 1.07, "doc_words": "40-60", "query_words": "5-15",
                                      "encoder": f"hashing:{DIM}"}}
    res["store"] = ensure_store(args.index, args.chunks, text, args.batch)
    log.info("store: %s", res["store"])
    EVENTS.take()

    res["anns"] = {}
    truth = None
    for ann in [a for a in args.anns.split(",") if a]:
        gc.collect()
        ix = open_index(args.index, ann=ann)
        r: dict[str, Any] = {}
        try:
            xq = ix.encoder.encode(queries)  # (nq, dim)
            log.info("%s: building", ann)
            r["build"] = full_build(ix)
            log.info("%s: %s", ann, r["build"])
            r["queries"], found = measure_queries(ix, queries, xq)
            if ann == "flat":
                truth = ground_truth(ix, xq, found)
            elif truth is not None:
                r["recall"] = recall(truth, ix, xq, found)
            log.info("%s: %s %s", ann, r["queries"], r.get("recall"))
            if args.sweep and truth is not None and ann != "flat":
                r["sweep"] = sweep(ix, queries, xq, truth)
            if args.writes:
                r["incremental"] = incremental(ix, args.index, args.chunks, text, queries, xq, r["build"]["rebuild_s"],
                                               args.writes)
                log.info("%s: incremental %s", ann, r["incremental"])
            r["add_ten"] = add_ten(ix, text, queries)
            log.info("%s: add-10 %s", ann, r["add_ten"]["median"])
            if not args.no_merge:
                r["merge"] = merge(ix, text, queries, xq)
                log.info("%s: merge %s", ann, r["merge"])
        finally:
            ix.close()
        res["anns"][ann] = r
        if args.out:
            write_json(args.out, res)

    sizes = [int(s) for s in args.small.split(",") if s and int(s) < args.chunks]
    if sizes:
        res["small"] = small_sizes(args.index, sizes, text, queries, args.batch)
    if args.pq_check:
        res["pq_check"] = pq_check(args.index, args.pq_check)
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    res["loadavg_end"] = os.getloadavg()
    if args.out:
        write_json(args.out, res)
    print(report(res))
    return 0


def write_json(path: Path, res: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))


if __name__ == "__main__":
    sys.exit(main())
