"""The backends against each other and against plain sentence-transformers, in one run, alternating.

Indexing (the default): on the same SciFact abstracts (title, newline, text) and the same all-MiniLM-L6-v2 weights,
  plain          sentence-transformers in torch fp32, batch 32, truncating at 256 word pieces, into a faiss flat index
  torch          bertsearch's index (chunks that cut nothing, bfloat16 autocast where the CPU has it), torch backend
  onnx           the same, ONNX Runtime backend (int8)
  openvino       the same, OpenVINO backend (bfloat16 where the CPU has it)
  openvino-fp32  the same, OpenVINO in fp32
  openvino-int8  the same, OpenVINO with int8 weights and activations quantised as they come (--precision int8)
Each contender runs in a process of its own, filling a new index each round; the corpus goes to them in slices
(--slice documents), each slice to each contender in turn, so that the load of a shared machine, which changes from
minute to minute, falls on all of them alike. Models are loaded (and the exports made) before any timing. With --against REV,
each bertsearch contender also runs as it was at commit REV (from a git worktree of it), in the same rounds: a change
measured against the code before it in one run.

Ask (--ask): wiki-demo indexed once per encoder backend, then its 30 queries asked (`Index.ask`, the shipped rerank
depth) with the reranker and reader on torch and on OpenVINO (on the torch index, and on the OpenVINO index), each
setup in a process of its own, in turn, --rounds times; p50/p95, stage means, and how often the setups agree (answer,
abstention, top hits, confidence). With --one-shot N, also N runs each, alternating, of a whole `bertsearch ask`
process and a whole `bertsearch search` (hybrid) process on the torch index and on the OpenVINO one.

    python scripts/bench_backends.py --docs 600 --rounds 3 --json logs/bench-backends.json
    python scripts/bench_backends.py --contenders plain,openvino --against HEAD~1 --rounds 5
    python scripts/bench_backends.py --ask --rounds 3 --one-shot 5 --json logs/bench-ask.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
WIKI = ROOT / "corpora" / "wiki-demo"
CONTENDERS = ("plain", "torch", "onnx", "openvino", "openvino-fp32", "openvino-int8")


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
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, of: " + ", ".join(CONTENDERS))
    ap.add_argument("--ask", action="store_true", help="time ask on wiki-demo instead of indexing")
    ap.add_argument("--one-shot", type=int, default=0, metavar="N", help="with --ask: N whole `bertsearch ask` runs each")
    ap.add_argument("--slice", type=int, default=100, help="documents each contender indexes in its turn")
    ap.add_argument("--against", metavar="REV", help="indexing: also run each bertsearch contender as it was at this "
                    "commit (a git worktree of it), in the same rounds, named NAME@REV")
    ap.add_argument("--ask-worker", choices=["torch", "openvino"], help=argparse.SUPPRESS)
    ap.add_argument("--index-worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.against and args.ask:
        ap.error("--against times indexing only; leave out --ask")
    if args.ask_worker:
        ask_worker(args.ask_worker, args.index)
        return 0
    if args.index_worker:
        index_worker(args.index_worker, args)
        return 0
    out = bench_ask(args) if args.ask else bench_index(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def bench_index(args: argparse.Namespace) -> dict:
    import subprocess

    names = [c for c in args.contenders.split(",") if c]
    if unknown := set(names) - set(CONTENDERS):
        raise SystemExit(f"unknown contenders {sorted(unknown)}; use {', '.join(CONTENDERS)}")
    tree = None
    if args.against:  # the same workers, from the other commit's tree (its bertsearch/ first on the path)
        tree = Path(tempfile.mkdtemp(prefix="bench-against-")) / "tree"
        made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.against],
                              check=False, capture_output=True, text=True)
        if made.returncode:
            shutil.rmtree(tree.parent, ignore_errors=True)
            raise SystemExit(f"--against {args.against}: git could not check it out ({made.stderr.strip()}); "
                             "name a commit of this repository")
        names += [f"{n}@{args.against}" for n in names if n != "plain"]
    try:
        from bertsearch.models import load_encoder

        for backend in {"onnx", "openvino"} & {n.split("-")[0] for n in names}:
            load_encoder(None, backend=backend).encode(["warm up"])  # makes the export once, before any timing
        return _bench_index(args, names, tree)
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
            shutil.rmtree(tree.parent, ignore_errors=True)


def _bench_index(args: argparse.Namespace, names: list[str], tree: Path | None) -> dict:
    import subprocess

    def worker(name: str) -> subprocess.Popen:
        contender, _, rev = name.partition("@")
        script, env = Path(__file__), None
        if rev:
            script, env = tree / "scripts" / "bench_backends.py", {**os.environ, "PYTHONPATH": str(tree)}
        return subprocess.Popen([sys.executable, str(script), "--index-worker", contender, "--corpus", str(args.corpus),
                                 "--docs", str(args.docs), "--slice", str(args.slice)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    n_slices = -(-args.docs // args.slice)
    times: dict[str, list[float]] = {name: [] for name in names}
    start_load = machine()
    for r in range(args.rounds):
        # a process per contender (one runtime's idle threads never slow another's), each filling its own new index;
        # the slices of the corpus go to each in turn, the order turning each slice, so that a change in the
        # machine's load between slices falls on all alike
        workers = {name: worker(name) for name in names}
        for w in workers.values():
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        spent = dict.fromkeys(names, 0.0)
        for i in range(n_slices):
            k = (r * n_slices + i) % len(names)
            for name in names[k:] + names[:k]:
                w = workers[name]
                w.stdin.write(f"{i}\n")  # type: ignore[union-attr]
                w.stdin.flush()  # type: ignore[union-attr]
                spent[name] += float(w.stdout.readline())  # type: ignore[union-attr]
        for w in workers.values():
            w.stdin.close()  # type: ignore[union-attr]
            w.wait()
        for name in names:
            times[name].append(spent[name])
            print(f"round {r + 1} {name:<22} {args.docs / spent[name]:6.1f} docs/s", flush=True)
    rate = {name: args.docs / statistics.median(ts) for name, ts in times.items()}
    base = "plain" if "plain" in rate else names[0]
    out = {"machine": start_load, "docs": args.docs, "rounds": args.rounds, "slice": args.slice, "against": args.against,
           "docs_per_s": {k: round(v, 1) for k, v in rate.items()},
           f"ratio_to_{base}": {k: round(v / rate[base], 2) for k, v in rate.items()},
           f"round_ratios_to_{base}": {k: [round(t0 / t, 2) for t, t0 in zip(ts, times[base])] for k, ts in times.items()},
           "seconds": times, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps({k: out[k] for k in ("docs_per_s", f"ratio_to_{base}", f"round_ratios_to_{base}")}))
    return out


def index_worker(name: str, args: argparse.Namespace) -> None:
    """One contender of the indexing bench, in its own process: loads its model, says "ready", then indexes each
    slice of the corpus it is sent (a number on stdin) and answers the seconds it took."""
    import numpy as np

    rows = [json.loads(line) for line in args.corpus.open(encoding="utf-8")][: args.docs]
    docs = [{"id": r["_id"], "title": r.get("title", ""), "text": r["text"]} for r in rows]
    slices = [docs[i : i + args.slice] for i in range(0, len(docs), args.slice)]
    with tempfile.TemporaryDirectory() as tmp:
        if name == "plain":
            import faiss
            from sentence_transformers import SentenceTransformer

            from bertsearch.models import DEFAULT_ENCODER, resolve_model_path

            model = SentenceTransformer(str(resolve_model_path(DEFAULT_ENCODER)), device="cpu")
            model.max_seq_length = 256
            model.encode(["warm up"])
            flat = faiss.IndexFlatIP(model.get_embedding_dimension())

            def step(part: list[dict]) -> None:
                texts = [f"{d['title']}\n{d['text']}" for d in part]
                xb = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
                flat.add(np.ascontiguousarray(xb, dtype=np.float32))
        else:
            import bertsearch

            backend, _, precision = name.partition("-")
            ix = bertsearch.open_index(f"{tmp}/ix", create=True, backend=backend, precision=precision or "auto")
            ix.encoder.encode(["warm up"])

            def step(part: list[dict]) -> None:
                ix.add(part)
        print("ready", flush=True)
        for line in sys.stdin:
            t = time.perf_counter()
            step(slices[int(line)])
            print(time.perf_counter() - t, flush=True)


def machine() -> str:
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cpus, load average {os.getloadavg()[0]:.1f} at the start"


SETUPS = {"torch": ("torch", "torch"), "openvino": ("torch", "openvino"), "openvino-index": ("openvino", "openvino")}
"""For --ask: the index's encoder backend, and the reranker's and reader's."""


def bench_ask(args: argparse.Namespace) -> dict:
    import subprocess

    from bertsearch.benchmark import percentile
    from bertsearch.engine import Index

    start_load = machine()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("BERTSEARCH_QUERY_BACKEND", None)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for backend in ("torch", "openvino"):
            paths[backend] = Path(tmp) / backend
            with Index.open(paths[backend], create=True, backend=backend) as ix:
                ix.add_corpus(WIKI / "docs.jsonl")
                ix.ask("warm up: converts the reranker and reader once")
        # each setup in a process of its own (one runtime's idle threads never slow the other's), in turn, each round
        # in another order; the models load before the timing starts
        rounds: dict[str, list[list[dict]]] = {name: [] for name in SETUPS}
        for r in range(args.rounds):
            names = list(SETUPS)[r % len(SETUPS):] + list(SETUPS)[: r % len(SETUPS)]
            for name in names:
                index, runtime = SETUPS[name]
                done = subprocess.run([sys.executable, __file__, "--ask-worker", runtime, "--index", str(paths[index])],
                                      env=env, check=True, capture_output=True, text=True)
                rounds[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {name:<15} ask p50 {percentile([x['ms'] for x in rounds[name][-1]], 50):7.1f} ms",
                      flush=True)
        one_shot: dict[str, list[float]] = {}
        one_shot_search: dict[str, list[float]] = {}
        for r in range(args.one_shot):
            for backend in (("torch", "openvino") if r % 2 == 0 else ("openvino", "torch")):
                for command, times in (("ask", one_shot), ("search", one_shot_search)):
                    t = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "bertsearch", command, "what causes the northern lights",
                                    "--index", str(paths[backend])], env=env, check=True, capture_output=True)
                    times.setdefault(backend, []).append(round(time.perf_counter() - t, 2))
    latency = {}
    for name, runs in rounds.items():
        ms = [x["ms"] for run in runs for x in run]
        latency[name] = {"p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
                         "round_p50_ms": [round(percentile([x["ms"] for x in run], 50), 1) for run in runs],
                         "stage_means_ms": {s: round(statistics.fmean(x["stages"][s] for run in runs for x in run), 1)
                                            for s in runs[0][0]["stages"]}}
    agreement = {}
    for name in ("openvino", "openvino-index"):
        pairs = list(zip(rounds["torch"][0], rounds[name][0]))
        agreement[name] = {
            "same_answer": sum(a["answer"] == b["answer"] for a, b in pairs) / len(pairs),
            "same_abstention": sum(a["abstained"] == b["abstained"] for a, b in pairs) / len(pairs),
            "same_top_hit": sum(a["hits"][:1] == b["hits"][:1] for a, b in pairs) / len(pairs),
            "same_top5_hits": sum(a["hits"][:5] == b["hits"][:5] for a, b in pairs) / len(pairs),
            "confidence_mean_abs_diff": round(statistics.fmean(abs(a["confidence"] - b["confidence"]) for a, b in pairs), 4),
        }
    out = {"machine": start_load, "queries": len(rounds["torch"][0]), "rounds": args.rounds,
           "date": time.strftime("%Y-%m-%d"), "latency": latency,
           "p50_ratio_torch_to": {n: round(latency["torch"]["p50_ms"] / v["p50_ms"], 2) for n, v in latency.items()},
           "round_p50_ratio_torch_to": {n: [round(a / b, 2) for a, b in zip(latency["torch"]["round_p50_ms"],
                                                                          v["round_p50_ms"])] for n, v in latency.items()},
           "agreement_with_torch": agreement,
           **({"one_shot_ask_s": one_shot, "one_shot_median_s": {k: statistics.median(v) for k, v in one_shot.items()},
               "one_shot_search_s": one_shot_search,
               "one_shot_search_median_s": {k: statistics.median(v) for k, v in one_shot_search.items()}}
              if one_shot else {})}
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
    return out


def ask_worker(runtime: str, index: Path) -> None:
    """One setup of --ask, in its own process: each wiki-demo query asked once after a warm-up; a JSON line out."""
    from bertsearch.benchmark import read_queries
    from bertsearch.engine import Index

    queries = read_queries(WIKI / "queries.tsv")
    out = []
    with Index.open(index) as ix:
        ix.query_backend = runtime
        ix.ask(queries[0], hits=10)  # loads the models
        for q in queries:
            t = time.perf_counter()
            res = ix.ask(q, hits=10)
            ms = (time.perf_counter() - t) * 1000
            best = res.answers[0] if res.answers else res.best_candidate
            out.append({"ms": ms, "stages": {k: v * 1000 for k, v in res.timings.items()},
                        "answer": None if res.abstained else res.answers[0].text, "abstained": res.abstained,
                        "confidence": best.confidence if best is not None and best.confidence is not None else 0.0,
                        "hits": [h.doc_id for h in res.hits]})
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
