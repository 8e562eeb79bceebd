"""Indexing throughput of the encoder backends against plain sentence-transformers, in one run, alternating.

On the same SciFact abstracts (title, newline, text) and the same all-MiniLM-L6-v2 weights:
  plain  sentence-transformers in torch fp32, batch 32, truncating at 256 word pieces, into a faiss flat index
  torch  bertsearch's index (chunks that cut nothing, bfloat16 autocast where the CPU has it), torch backend
  onnx   the same, ONNX Runtime backend (int8)
Models are loaded (and the ONNX export made) before any timing; each round times each contender once, in turn.

    python scripts/bench_backends.py --docs 600 --rounds 3 --json bench-backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=SCIFACT)
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    import bertsearch
    from bertsearch.models import DEFAULT_ENCODER, load_encoder, resolve_model_path

    rows = [json.loads(line) for line in args.corpus.open(encoding="utf-8")][: args.docs]
    docs = [{"id": r["_id"], "title": r.get("title", ""), "text": r["text"]} for r in rows]
    texts = [f"{d['title']}\n{d['text']}" for d in docs]
    path = resolve_model_path(DEFAULT_ENCODER)
    plain = SentenceTransformer(str(path), device="cpu")
    plain.max_seq_length = 256
    plain.encode(["warm up"])
    load_encoder(None, backend="onnx").encode(["warm up"])  # makes the ONNX export once, before any timing

    def run_plain() -> float:
        t = time.perf_counter()
        xb = plain.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        index = faiss.IndexFlatIP(xb.shape[1])
        index.add(np.ascontiguousarray(xb, dtype=np.float32))
        return time.perf_counter() - t

    def run_bertsearch(backend: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            ix = bertsearch.open_index(f"{tmp}/ix", create=True, backend=backend)  # loads the model: not timed
            ix.encoder.encode(["warm up"])
            t = time.perf_counter()
            ix.add(docs)
            seconds = time.perf_counter() - t
            ix.close()
        return seconds

    contenders = {"plain": run_plain, "torch": lambda: run_bertsearch("torch"), "onnx": lambda: run_bertsearch("onnx")}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, fn in contenders.items():
            times[name].append(fn())
            print(f"round {r + 1} {name:<6} {len(docs) / times[name][-1]:6.1f} docs/s", flush=True)
    rate = {name: len(docs) / statistics.median(ts) for name, ts in times.items()}
    out = {"machine": f"{cpu_model()}, {os.cpu_count()} cpus", "docs": len(docs), "rounds": args.rounds,
           "docs_per_s": {k: round(v, 1) for k, v in rate.items()},
           "ratio_to_plain": {k: round(v / rate["plain"], 2) for k, v in rate.items()},
           "seconds": times, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps({k: out[k] for k in ("docs_per_s", "ratio_to_plain")}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
