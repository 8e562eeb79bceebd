"""SciFact indexed twice, in one process and through Ray Data on a local Ray, and the two indexes compared.

    nice python scripts/ray_scifact.py > logs/ray-scifact.txt 2>&1
    nice python scripts/ray_scifact.py --precision fp32 --out /tmp/ray-scifact-fp32

1. index the corpus single-process into OUT/single (what `bertsearch index` does)
2. index it again into OUT/ray with `ray="local"` (`bertsearch index --ray`): ray.init() here, an actor pool
3. compare the stored vectors chunk by chunk: the same chunks, max |difference|, min and mean cosine
4. nDCG@10 (and Recall@100, MRR@10) of both, dense and hybrid, with `evaluate_beir` on the two indexes
Both folders are made afresh; the report goes to stdout, with the timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def stored_vectors(index: Path) -> dict[tuple[str, int, int, int], np.ndarray]:
    """Every chunk's vector, by (document id, chunk number, start, end)."""
    with sqlite3.connect(index / "store.db") as conn:
        rows = conn.execute('SELECT d.id, c.ord, c.start, c."end", c.vector FROM chunks c '
                            "JOIN documents d ON d.rowid = c.doc").fetchall()
    return {(d, o, a, b): np.frombuffer(v, dtype=np.float32) for d, o, a, b, v in rows}


def build(dataset: Path, path: Path, precision: str, ray: str | None) -> dict:
    from bertsearch.engine import Index
    from bertsearch.evaluation.beir import EVAL_MARK

    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    ix = Index.open(path, create=True, precision=precision, ray=ray)
    opened = time.perf_counter() - t0
    enc = ix.encoder.inner
    enc.dim  # noqa: B018 - load the model (the chunker needs its tokenizer) before the timing starts
    try:
        ix.store.set_meta(EVAL_MARK, str(dataset.resolve()))  # evaluate_beir may reuse this index
        report = ix.add_corpus(dataset, format="beir")
    finally:
        ix.close()
    out = {"open_s": round(opened, 1), "index_s": round(report.seconds, 1), "docs": report.read,
           "chunks": report.chunks, "docs_per_s": round(report.docs_per_second, 2),
           "load_avg_1min_after": round(os.getloadavg()[0], 2)}  # the CPU may be shared: a load above 2 slows both
    if ray is not None:
        out.update(ray_calls=enc.calls, actors=enc.pool_size, per_actor={k: v for k, v in enc._resources.items()
                                                                        if k != "actors"},
                   docs_per_call=enc.preferred_batch)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=SCIFACT)
    ap.add_argument("--out", type=Path, default=Path("/tmp/ray-scifact"))
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = ap.parse_args()
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                 ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(k, v)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    import ray

    from bertsearch.evaluation.beir import evaluate_beir
    from bertsearch.models.sentence import bf16_is_fast

    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus, no GPU; bf16 native: {bf16_is_fast()}")
    print(f"ray {ray.__version__}; dataset {args.dataset}; precision {args.precision}; {time.strftime('%Y-%m-%d %H:%M')}")
    # 1, 2: the two indexes
    single, rayed = args.out / "single", args.out / "ray"
    built = {"single": build(args.dataset, single, args.precision, None)}
    print(f"single-process: {json.dumps(built['single'])}", flush=True)
    built["ray"] = build(args.dataset, rayed, args.precision, "local")
    print(f"ray (local):    {json.dumps(built['ray'])}", flush=True)
    ray.shutdown()
    # 3: the vectors, chunk by chunk
    xa, xb = stored_vectors(single), stored_vectors(rayed)
    same_chunks = xa.keys() == xb.keys()
    keys = sorted(xa.keys() & xb.keys())
    a = np.stack([xa[k] for k in keys])  # (n, dim)
    b = np.stack([xb[k] for k in keys])
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    vectors = {"chunks": len(keys), "same_chunks": same_chunks, "max_abs_diff": float(np.abs(a - b).max()),
               "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
               "identical_chunks": int((a == b).all(axis=1).sum())}
    print(f"vectors: {json.dumps(vectors)}", flush=True)
    # 4: retrieval quality of both
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for mode in ("dense", "hybrid"):
        for name, path in (("single", single), ("ray", rayed)):
            r = evaluate_beir(args.dataset, mode=mode, index_path=path, precision=args.precision)
            assert r["indexed"]["added"] == 0 and r["indexed"]["replaced"] == 0, r["indexed"]  # reused, not rebuilt
            metrics.setdefault(mode, {})[name] = {k: round(r[k], 4) for k in ("ndcg@10", "recall@100", "mrr@10")}
        m = metrics[mode]
        print(f"{mode:<7} nDCG@10 single {m['single']['ndcg@10']:.4f}  ray {m['ray']['ndcg@10']:.4f}   "
              f"Recall@100 {m['single']['recall@100']:.4f} / {m['ray']['recall@100']:.4f}   "
              f"MRR@10 {m['single']['mrr@10']:.4f} / {m['ray']['mrr@10']:.4f}", flush=True)
    print(json.dumps({"built": built, "vectors": vectors, "metrics": metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
