"""Speed baseline: indexing throughput and per-mode search latency, measured the way a user meets them.

Indexing is timed into a fresh index (model load timed apart); search latency is one query per call,
after one warm-up query, reported as p50/p95 per mode.
"""

from __future__ import annotations

import csv
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .retrieval import MODES


def read_queries(path: str | Path) -> list[str]:
    """Queries from a .tsv with a `query` column, a BEIR queries.jsonl, or a text file (one per line)."""
    path = Path(path)
    if path.suffix == ".tsv":
        with path.open(newline="", encoding="utf-8") as f:
            return [row["query"] for row in csv.DictReader(f, delimiter="\t") if row.get("query")]
    if path.suffix == ".jsonl":
        import json

        return [json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip()]
    return [line.strip() for line in path.open(encoding="utf-8") if line.strip()]


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[i]


def run_benchmark(
    corpus: str | Path,
    queries: list[str],
    *,
    model: str | None = None,
    ann: str = "flat",
    k: int = 10,
    modes: tuple[str, ...] = MODES,
    index_path: str | Path | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    from .engine import Index

    tmp = None
    if index_path is None:
        tmp = tempfile.mkdtemp(prefix="bertsearch-bench-")
        index_path = Path(tmp) / "ix"
    try:
        t0 = time.perf_counter()
        ix = Index.open(index_path, model=model, ann=ann, create=True, precision=precision)
        ix.encoder.encode(["warm up"])  # loads the weights
        load_s = time.perf_counter() - t0
        used = "bf16" if getattr(ix.encoder, "uses_bf16", False) else "fp32"
        report = ix.add_corpus(corpus)
        latency: dict[str, dict[str, float]] = {}
        for mode in modes:
            ix.search(queries[0], k=k, mode=mode)  # warm-up
            times = []
            for q in queries:
                t = time.perf_counter()
                ix.search(q, k=k, mode=mode)
                times.append((time.perf_counter() - t) * 1000)
            latency[mode] = {
                "p50_ms": round(percentile(times, 50), 2),
                "p95_ms": round(percentile(times, 95), 2),
                "mean_ms": round(statistics.fmean(times), 2),
            }
        info = ix.info()
        ix.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "corpus": str(corpus),
        "model": info["model"],
        "ann": ann,
        "precision": used,
        "documents": report.read,
        "chunks": report.chunks,
        "model_load_s": round(load_s, 2),
        "index_s": round(report.seconds, 2),
        "docs_per_s": round(report.docs_per_second, 2),
        "chunks_per_s": round(report.chunks / report.seconds, 2) if report.seconds else 0.0,
        "queries": len(queries),
        "k": k,
        "latency": latency,
        "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.python_implementation()} {platform.python_version()}",
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
