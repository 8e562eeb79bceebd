"""BM25 with and without the words at least half the documents hold (`Store._informative`), on one store.

For each query, the same `Store.bm25` call three times, in turn: as bertsearch runs it (those words left out of
the FTS5 query, their document counts kept from earlier queries), the same with the counts made afresh (as a
one-shot command does) and with the whole query; reports p50/p95 of each, the ratios, and how often the top k
agree: in order, and up to ties (the scores rank by rank within 1e-4, the same documents above the k-th score). Queries: those of
--queries (a BEIR queries.jsonl, a .tsv or a text file), or bench_scale.py's synthetic Zipf queries.

    python scripts/bench_bm25.py indexes/beir-scifact-default-openvino --queries ../shared/data/scifact/queries.jsonl
    python scripts/bench_bm25.py indexes/scale-1m -n 30          # the million-document store of bench_scale.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    from bertsearch.benchmark import percentile, read_queries
    from bertsearch.store.sqlite import Store

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path)
    ap.add_argument("--queries", type=Path, default=None)
    ap.add_argument("-n", type=int, default=100, help="queries to time")
    ap.add_argument("-k", type=int, default=100)
    args = ap.parse_args()
    if args.queries is not None:
        queries = read_queries(args.queries)[: args.n]
    else:
        from bench_scale import ZipfText

        queries = ZipfText().queries(args.n)
    store = Store(args.index / Store.FILE)
    pruned = Store._informative
    times: dict[str, list[float]] = {"pruned": [], "whole": [], "afresh": []}
    same = ties = kept_same = 0
    try:
        for i, q in enumerate(queries):
            got = {}
            names = ("pruned", "whole", "afresh")
            for name in names[i % 3:] + names[: i % 3]:
                Store._informative = (lambda self, q: None) if name == "whole" else pruned
                if name == "afresh":
                    store._df_generation = None  # the words' document counts forgotten: counted again
                t = time.perf_counter()
                got[name] = store.bm25(q, args.k)
                times[name].append((time.perf_counter() - t) * 1000)
            a, b = got["pruned"], got["whole"]
            kept_same += got["afresh"] == a
            same += [x[2] for x in a] == [y[2] for y in b]
            # up to ties: the scores rank by rank within 1e-4 (a word left out adds 1e-6 a time), and the same
            # documents above the last tie, which k cuts where it falls
            line = b[-1][1] + 1e-4 if b else 0.0
            ties += (len(a) == len(b) and all(abs(x[1] - y[1]) < 1e-4 for x, y in zip(a, b))
                     and {x[2] for x in a if x[1] > line} == {y[2] for y in b if y[1] > line})
    finally:
        Store._informative = pruned
    n_docs = store.counts()["documents"]
    store.close()
    out = {"index": str(args.index), "documents": n_docs, "queries": len(queries), "k": args.k,
           **{f"{n}_p50_ms": round(percentile(t, 50), 2) for n, t in times.items()},
           **{f"{n}_p95_ms": round(percentile(t, 95), 2) for n, t in times.items()},
           "p50_ratio": round(percentile(times["whole"], 50) / percentile(times["pruned"], 50), 2),
           "counts_kept_p50_ratio": round(percentile(times["afresh"], 50) / percentile(times["pruned"], 50), 2),
           "same_top_k_counts_kept_or_afresh": kept_same, "same_top_k_order": same, "same_top_k_up_to_ties": ties, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
