"""Measure the Milvus vector backend on milvus-lite: load rate, index build time, memory, query latency and recall.

The data are synthetic: `--n` unit vectors of `--dim` dimensions drawn around 1,000 random centres (a clustered set,
as sentence embeddings are), one chunk per document, each with the metadata {"bucket": i % 100}. Queries are drawn
the same way. Each index type runs in a process of its own (so that its RSS is its own), through
`bertsearch.vectors.milvus.MilvusBackend` over one SQLite store: what bertsearch does, not a bare pymilvus loop.

    nice python scripts/bench_milvus.py                       # 100k x 384, FLAT, HNSW, IVF_FLAT
    nice python scripts/bench_milvus.py --n 20000 --types flat

Figures per type: load (upserts from the store, then a flush; rows/s), index build (milvus-lite's background worker
builds an index per segment, partly while the load still runs: the sum of the times it logs, and the wait for it
after the load),
RSS after loading and after searching, single-query and batched (100 a call) latency p50/p95, recall@10 against an
exact search, and recall@10 under filters passing 30% and 1% of the chunks (the engine searches a filter matching at
most 20,000 chunks exactly itself, so at 100k only the 30% filter reaches Milvus through it); then an incremental
sync of 100 new documents, and a reopen (load the collection, count its rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bertsearch.config import IndexConfig
from bertsearch.filters import parse
from bertsearch.store.sqlite import Store, StoredDocument
from bertsearch.types import Chunk, Document

log = logging.getLogger("bench_milvus")
ANNS = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(len(centres), size=n)] + 0.35 * rng.normal(size=(n, dim)) / np.sqrt(dim)  # (n, dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_store(path: Path, n: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim))
    store = Store(path)
    t0 = time.perf_counter()
    for a in range(0, n, 5000):
        xb = clustered(rng, min(5000, n - a), dim, centres)
        store.write([StoredDocument(Document(f"d{a + i}", "text", metadata={"bucket": (a + i) % 100}), f"h{a + i}",
                                    [Chunk(0, 4, 1)], xb[i:i + 1]) for i in range(len(xb))])
    log.info("store of %d chunks written in %.1fs", n, time.perf_counter() - t0)
    store.close()


def percentiles(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * float(np.percentile(times, 50)), 2),
            "p95_ms": round(1000 * float(np.percentile(times, 95)), 2)}


FILTERS = {"filter30%": 30, "filter1%": 1}  # metadata bucket < cut


def truth(work: Path, args: argparse.Namespace) -> None:
    """The queries, and for each the k-th best exact score, unfiltered and under each filter (work/truth.npz): the
    child processes measure recall without holding the vectors themselves (their RSS is Milvus's)."""
    store = Store(work / "store.db")
    _, ids, xb = store.vectors(args.dim)  # (n,), (n, dim)
    centres = np.random.default_rng(args.seed).normal(size=(1000, args.dim))
    xq = clustered(np.random.default_rng(args.seed + 1), args.queries, args.dim, centres)  # (nq, dim)
    out = {"xq": xq}
    for label, cut in {"all": 100, **FILTERS}.items():
        mask = np.isin(ids, store.chunk_ids_where(parse(f"bucket < {cut}")))
        out[label] = -np.sort(-(xq @ xb[mask].T), axis=1)[:, 9]  # (nq,) the 10th best score
    np.savez(work / "truth.npz", **out)
    store.close()


def recall(store: Store, dim: int, xq: np.ndarray, I: np.ndarray, kth: np.ndarray) -> float:
    """Recall@10: the share of hits scoring at least the 10th best exact score (less 1e-5: float32 sums in another
    order swap near-ties, which no index is to blame for)."""
    found = 0
    for q, row in enumerate(I):
        row = row[row >= 0]
        if len(row):
            found += int(((store.chunk_vectors(row.tolist(), dim) @ xq[q]) >= kth[q] - 1e-5).sum())
    return found / (10 * len(I))


class _Builds(logging.Handler):
    """Sums the index build times milvus-lite's background worker logs ("bg: built N segment indexes in S s")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds = 0.0
        self.segments = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("bg: built") and len(record.args or ()) == 2:
            self.segments += int(record.args[0])
            self.seconds += float(record.args[1])


def run_type(args: argparse.Namespace) -> dict:
    """One index type, in this process: load, build, search; returns its figures."""
    from bertsearch.vectors.milvus import MilvusBackend

    builds = _Builds()
    worker_log = logging.getLogger("milvus_lite.engine.collection")
    worker_log.addHandler(builds)
    worker_log.setLevel(logging.INFO)
    worker_log.propagate = False

    work = Path(args.work)
    store = Store(work / "store.db")
    known = np.load(work / "truth.npz")
    xq = known["xq"]  # (nq, dim)
    n = store.counts()["chunks"]
    folder = work / args.run
    folder.mkdir(exist_ok=True)
    config = IndexConfig(model="bench", fingerprint="bench", dim=args.dim, max_tokens=256, ann=args.run)
    out: dict = {"index_type": ANNS[args.run], "rss_before_mb": round(rss_mb())}

    backend = MilvusBackend(folder, store, config)
    t0 = time.perf_counter()
    backend.sync(wait=False)
    load_s = time.perf_counter() - t0
    out["load_s"] = round(load_s, 1)
    out["load_rows_per_s"] = round(n / load_s)
    t0 = time.perf_counter()
    backend.wait()
    out["index_wait_after_load_s"] = round(time.perf_counter() - t0, 1)
    out["index_build_s"] = round(builds.seconds, 1)  # (milvus-lite's own timing, summed over its segments)
    out["segments"] = builds.segments
    out["rss_loaded_mb"] = round(rss_mb())

    single = []
    I = np.zeros((len(xq), 10), dtype=np.int64)
    for i in range(min(args.single, len(xq))):
        t0 = time.perf_counter()
        _, I[i:i + 1] = backend.search(xq[i:i + 1], 10)
        single.append(time.perf_counter() - t0)
    out["single"] = percentiles(single)
    batched = []
    for a in range(0, len(xq), 100):
        t0 = time.perf_counter()
        _, I[a:a + 100] = backend.search(xq[a:a + 100], 10)
        batched.append(time.perf_counter() - t0)
    out["batch100"] = percentiles(batched)
    out["batch100"]["per_query_ms"] = round(1000 * float(np.mean(batched)) / 100, 2)
    out["recall@10"] = round(recall(store, args.dim, xq, I, known["all"]), 4)
    for label, cut in FILTERS.items():
        flt = parse(f"bucket < {cut}")
        allowed = store.chunk_ids_where(flt)
        t0 = time.perf_counter()
        _, If = backend.search(xq, 10, allowed=allowed, where=flt)
        out[label] = {"batch_per_query_ms": round(1000 * (time.perf_counter() - t0) / len(xq), 2),
                      "recall@10": round(recall(store, args.dim, xq, If, known[label]), 4)}
    out["rss_searched_mb"] = round(rss_mb())

    t0 = time.perf_counter()
    count = backend._count(backend._collection)
    out["count_query_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    assert count == n, (count, n)
    centres = np.random.default_rng(args.seed).normal(size=(1000, args.dim))  # (as make_store drew them)
    new = clustered(np.random.default_rng(args.seed + 2), 100, args.dim, centres)
    store.write([StoredDocument(Document(f"{args.run}-new{i}", "text", metadata={"bucket": 0}), f"n{i}",
                                [Chunk(0, 4, 1)], new[i:i + 1]) for i in range(100)])
    t0 = time.perf_counter()
    backend.sync()
    out["sync_100_new_s"] = round(time.perf_counter() - t0, 2)
    store.delete([f"{args.run}-new{i}" for i in range(100)])
    backend.sync()
    t0 = time.perf_counter()
    backend.close()
    out["close_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    backend = MilvusBackend(folder, store, config)
    backend.sync()
    out["reopen_sync_s"] = round(time.perf_counter() - t0, 1)
    backend.close()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500, help="queries for the batched and recall figures")
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--types", default="flat,hnsw,ivf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="", help="a folder for the store and the collections (default: temporary)")
    parser.add_argument("--run", default="", help=argparse.SUPPRESS)  # one type, in a child process
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("milvus_lite", "faiss", "pymilvus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.run:
        print(json.dumps(run_type(args)))
        return
    import milvus_lite
    import pymilvus

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-milvus-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_milvus {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} CPUs, "
          f"pymilvus {pymilvus.__version__}, milvus-lite {milvus_lite.__version__}, python {platform.python_version()}")
    print(f"# {args.n} x {args.dim} synthetic clustered unit vectors (1,000 centres), {args.queries} queries; "
          f"command: {' '.join(sys.argv)}")
    if not (work / "store.db").exists():
        make_store(work / "store.db", args.n, args.dim, args.seed)
    truth(work, args)
    results = {}
    for ann in args.types.split(","):
        t0 = time.perf_counter()
        child = [sys.executable, __file__, "--run", ann, "--work", str(work)] + \
            [f"--{k}={getattr(args, k)}" for k in ("n", "dim", "queries", "single", "seed")]
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True, check=True)
        results[ann] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{ANNS[ann]:8s} {json.dumps(results[ann])}  ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
