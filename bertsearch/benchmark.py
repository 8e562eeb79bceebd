"""Speed baseline: indexing throughput and per-mode search latency, measured the way a user meets them.

Indexing is timed into a fresh index (model load timed apart); search latency is one query per call,
after one warm-up query, reported as p50/p95 per mode. With `ask=True`, also the reranked search and
`ask` (retrieve, rerank, read), with each stage's mean; with `shell=True`, a real `bertsearch shell` in
a pseudo-terminal: its start-up time and the time from a query's Enter to its next prompt.
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

from .search.fusion import MODES


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
    ask: bool = False,
    shell: bool = False,
    reranker: str | None = None,
    reader: str | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    from .engine import Index

    tmp = None
    if index_path is None:
        tmp = tempfile.mkdtemp(prefix="bertsearch-bench-")
        index_path = Path(tmp) / "ix"
    try:
        t0 = time.perf_counter()
        ix = Index.open(index_path, model=model, ann=ann, create=True, precision=precision, reranker=reranker, reader=reader,
                        backend=backend)
        ix.encoder.encode(["warm up"])  # loads the weights
        load_s = time.perf_counter() - t0
        used = getattr(ix.encoder, "vector_precision", None) or ("bf16" if getattr(ix.encoder, "uses_bf16", False) else "fp32")
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
        stages: dict[str, dict[str, float]] = {}
        if ask:
            pipelines = {
                "hybrid+rerank": lambda q: ix.search(q, k=k, rerank=True),
                "ask": lambda q: ix.ask(q, hits=k).timings,
            }
            for name, run in pipelines.items():
                run(queries[0])  # warm-up: loads the model
                times, per_stage = [], {}
                for q in queries:
                    t = time.perf_counter()
                    out = run(q)
                    times.append((time.perf_counter() - t) * 1000)
                    for stage, sec in (out if isinstance(out, dict) else out.timings).items():
                        per_stage.setdefault(stage, []).append(sec * 1000)
                latency[name] = {
                    "p50_ms": round(percentile(times, 50), 2),
                    "p95_ms": round(percentile(times, 95), 2),
                    "mean_ms": round(statistics.fmean(times), 2),
                }
                stages[name] = {stage: round(statistics.fmean(v), 2) for stage, v in per_stage.items()}
        info = ix.info()
        ix.close()
        shell_result = shell_latency(index_path, queries, reranker=reranker, reader=reader) if shell else None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "corpus": str(corpus),
        "model": info["model"],
        "ann": ann,
        "precision": used,
        "backend": info["backend"],
        "documents": report.read,
        "chunks": report.chunks,
        "model_load_s": round(load_s, 2),
        "index_s": round(report.seconds, 2),
        "docs_per_s": round(report.docs_per_second, 2),
        "chunks_per_s": round(report.chunks / report.seconds, 2) if report.seconds else 0.0,
        "queries": len(queries),
        "k": k,
        "latency": latency,
        **({"stage_means_ms": stages} if stages else {}),
        **({"shell": shell_result} if shell_result else {}),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.python_implementation()} {platform.python_version()}",
    }


def shell_latency(
    index_path: str | Path, queries: list[str], *, reranker: str | None = None, reader: str | None = None
) -> dict[str, Any]:
    """Run `bertsearch shell` in a pseudo-terminal as a person would: seconds from launch to the first
    prompt, and milliseconds from each query's Enter to the next prompt (answer, hits and timings drawn)."""
    import os
    import sys

    try:
        import pexpect
    except ImportError:
        from .errors import MissingDependency

        raise MissingDependency("pexpect", "benchmarking the shell") from None
    prompt = r">(\x08| )"
    args = ["-m", "bertsearch", "shell", "--index", str(index_path)]
    for flag, value in (("--reranker", reranker), ("--reader", reader)):
        if value is not None:
            args += [flag, value]
    with tempfile.TemporaryDirectory(prefix="bertsearch-bench-shell-") as home:
        env = {**os.environ, "NO_COLOR": "1", "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm",
               "BERTSEARCH_HISTORY": str(Path(home) / "history")}
        t0 = time.perf_counter()
        child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=300, dimensions=(50, 160))
        child.expect("ready in")
        child.expect(prompt)
        startup = time.perf_counter() - t0
        times = []
        for q in queries:
            child.send(q)
            child.expect_exact(q[-1])  # echoed: the line is typed, Enter not yet pressed
            t = time.perf_counter()
            child.send("\r")
            child.expect(r"total \d+ ms")
            child.expect(prompt)
            times.append((time.perf_counter() - t) * 1000)
        child.sendline(":quit")
        child.expect(pexpect.EOF)
        child.close()
    return {
        "startup_s": round(startup, 2),
        "queries": len(times),
        "enter_to_answer_p50_ms": round(percentile(times, 50), 1),
        "enter_to_answer_p95_ms": round(percentile(times, 95), 1),
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
