"""bertsearch against two peers with the same all-MiniLM-L6-v2 weights, in one run, on SciFact (issue #21).

Contenders, each in a process of its own, all given the packaged model folder and the same text per document
(title, newline, text):
  bertsearch        `bertsearch.open_index(create=True)` with no backend argument (the engine's default; the output
                    records the backend and precision it chose), `Index.add` per slice; search hybrid and dense,
                    plus rerank (`search(rerank=True)`) and `ask` on a seeded sample of the queries
  bertsearch-torch  the same with backend="torch"
  plain             sentence-transformers in torch fp32, batch 32, 256 word pieces, normalised, faiss IndexFlatIP
  txtai-dense       txtai `Embeddings(path=folder, content=True, maxlength=256, faiss={"components": "IDMap,Flat"})`
  txtai-hybrid      the same with hybrid=True (dense + BM25 over txtai's terms index, convex fusion, weights 0.5)
txtai is pinned to 256 word pieces (its default reads the tokenizer's 512, not the model's 256) and to an exact
flat index: on more than 5,000 vectors its default is IVF132,Flat with nprobe 8, approximate, where every other
contender searches exactly. It mean-pools (the model's 1_Pooling) and L2-normalises, as sentence-transformers does.

Indexing: the corpus goes to the contenders in slices (--slice documents), each slice to each contender in turn, the
order turning each slice, so that a change in a shared machine's load falls on all alike (as bench_backends.py).
txtai builds its index with `index()` on the first slice and `upsert()` on each later one: an upsert appends to the
faiss index (no rebuild) and, for hybrid, merges the new postings into the terms index and recomputes the IDFs,
which is txtai's incremental path, as `Index.add` is bertsearch's (on 300 abstracts, one `index()` and `index()` plus
two upserts gave the same top 10, scores included, for 30 queries). Models load before any timing. plain and txtai
read the first 256 word pieces of each document; bertsearch chunks a longer one (71% of SciFact's) and encodes it all.
The driver and the workers import a copy of bertsearch/ made at the start (others edit the tree meanwhile).
Search: each (contender, mode) answers one query per call, k=10, after a warm-up call; the queries go in blocks
(--block) to each (contender, mode) in turn, the order turning each block. Latency is timed inside the worker on these
top-10 calls, which also give nDCG@10 and MRR@10; recall@100 comes from untimed top-100 calls afterwards. Rerank and
ask are timed the same way on a seeded sample (--ask-queries) for the bertsearch contenders.
Quality: the SciFact test queries (qrels/test.tsv), scored by `bertsearch.evaluation.beir.scores`. With --docs N
only the first N abstracts are indexed, and only the judgments of those documents count (queries left with none
are dropped): figures then compare with each other, not with full SciFact.
bertsearch's FAISS index follows its store: chunks added since the base are searched beside it (numpy, exactly) until
they pass 10,000 (merge_min); filled in slices, SciFact's 9,978 chunks stay that way ("vectors" in the output says
base and delta). --rebuild-vectors rebuilds it after the last slice, timed and counted in bertsearch's indexing.
Memory: the worker's peak RSS (ru_maxrss) after indexing and search, and at the end (bertsearch then holds the
reranker and reader too); disk: the index saved (bertsearch's folder, faiss.write_index, txtai's `save`).

    nice -n 5 python scripts/bench_peers.py --docs 400 --json logs/bench-peers-try.json
    nice -n 5 python scripts/bench_peers.py --json logs/bench-peers.json > logs/bench-peers.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_backends import cpu_model  # (scripts/ is this script's folder, first on sys.path)

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
MODES = {"bertsearch": ("hybrid", "dense"), "bertsearch-torch": ("hybrid", "dense"), "plain": ("dense",),
         "txtai-dense": ("dense",), "txtai-hybrid": ("hybrid",)}
CONTENDERS = tuple(MODES)
Run = dict[str, dict[str, float]]


def load_data(folder: Path, n_docs: int) -> tuple[list[dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """The first n_docs abstracts, the judged test queries, and their judgments of those abstracts."""
    from bertsearch.readers.beir import load_qrels, load_queries

    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:n_docs]
    docs = [{"id": str(r["_id"]), "title": r.get("title") or "", "text": r["text"]} for r in rows]
    ids = {d["id"] for d in docs}
    queries = load_queries(folder)
    qrels = {q: {d: s for d, s in rel.items() if d in ids} for q, rel in load_qrels(folder, "test").items() if q in queries}
    qrels = {q: rel for q, rel in qrels.items() if rel}
    return docs, {q: queries[q] for q in qrels}, qrels


def ranked(ids: list[str]) -> dict[str, float]:
    """Scores from ranks (trec_eval sorts by score); a repeated id keeps its best place."""
    out: dict[str, float] = {}
    for i, d in enumerate(ids):
        out.setdefault(d, float(len(ids) - i))
    return out


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def folder_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)


class Worker:
    """One contender, in its own process: indexes slices and answers queries, timing each call itself."""

    def __init__(self, name: str, tmp: Path) -> None:
        import bertsearch
        from bertsearch.models import DEFAULT_ENCODER, resolve_model_path

        self.name, self.tmp, self.count = name, tmp, 0
        folder = str(resolve_model_path(DEFAULT_ENCODER))
        self.info: dict[str, Any] = {"model": folder, "bertsearch_from": str(Path(bertsearch.__file__).parent)}
        if name.startswith("bertsearch"):
            self.ix = bertsearch.open_index(tmp / "ix", create=True, **({"backend": "torch"} if name.endswith("torch") else {}))
            self.ix.encoder.encode(["warm up"])
            enc = self.ix.encoder
            self.info |= {"backend": self.ix.config.backend, "precision": getattr(self.ix.config, "precision", None),
                          "encoder_precision": getattr(enc, "precision", None), "encoder": type(enc).__name__,
                          "bf16": getattr(enc, "uses_bf16", None), "max_tokens": self.ix.config.max_tokens}
        elif name == "plain":
            import faiss
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(folder, device="cpu")
            self.model.max_seq_length = 256
            self.model.encode(["warm up"])
            self.flat = faiss.IndexFlatIP(self.model.get_embedding_dimension())
            self.ids: list[str] = []
        else:
            from importlib.metadata import version

            import txtai

            self.emb = txtai.Embeddings(path=folder, content=True, maxlength=256, hybrid=name == "txtai-hybrid",
                                        faiss={"components": "IDMap,Flat"})
            self.emb.transform("warm up")
            self.info |= {"txtai": version("txtai"),
                          "config": {k: v for k, v in self.emb.config.items() if k != "path"}}
        if "torch" in sys.modules:  # (not imported here: a bertsearch process on OpenVINO runs without it)
            self.info["torch_threads"] = sys.modules["torch"].get_num_threads()
        self.info["torch_loaded"] = "torch" in sys.modules

    def add(self, part: list[dict[str, str]]) -> None:
        if self.name.startswith("bertsearch"):
            self.ix.add(part)
        elif self.name == "plain":
            import numpy as np

            xb = self.model.encode([f"{d['title']}\n{d['text']}" for d in part], batch_size=32,
                                   normalize_embeddings=True, convert_to_numpy=True)
            self.flat.add(np.ascontiguousarray(xb, dtype=np.float32))
            self.ids += [d["id"] for d in part]
        else:
            rows = [(d["id"], f"{d['title']}\n{d['text']}", None) for d in part]
            (self.emb.upsert if self.count else self.emb.index)(rows)
        self.count += len(part)

    def search(self, query: str, k: int, mode: str) -> list[str]:
        if self.name.startswith("bertsearch"):
            if mode == "ask":
                return [h.doc_id for h in self.ix.ask(query).hits]
            hits = self.ix.search(query, k=k, mode="hybrid" if mode == "rerank" else mode, rerank=mode == "rerank")
            return [h.doc_id for h in hits]
        if self.name == "plain":
            xq = self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True)
            _, idx = self.flat.search(xq, k)
            return [self.ids[i] for i in idx[0] if i >= 0]
        return [r["id"] for r in self.emb.search(query, k)]

    def vector_state(self) -> dict[str, int] | None:
        """bertsearch's FAISS base and the delta searched beside it (chunks added since the base, below merge_min)."""
        st = getattr(getattr(self, "ix", None), "vectors", None)
        st = st.current() if st is not None and hasattr(st, "current") else None
        return None if st is None else {"base": int(st.base.count), "delta": len(st.delta_ids)}

    def disk_mb(self) -> float:
        if self.name.startswith("bertsearch"):
            return folder_mb(self.tmp / "ix")
        if self.name == "plain":
            import faiss

            faiss.write_index(self.flat, str(self.tmp / "flat.faiss"))
            return folder_mb(self.tmp)
        self.emb.save(str(self.tmp / "txtai"))
        return folder_mb(self.tmp / "txtai")


def worker(name: str, args: argparse.Namespace) -> None:
    """The worker's loop: a JSON command a line on stdin, a JSON answer a line on stdout. Anything the libraries print
    goes to stderr, so the protocol's stdout stays clean."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    docs, queries, _ = load_data(args.data, args.docs)
    slices = [docs[i : i + args.slice] for i in range(0, len(docs), args.slice)]
    with tempfile.TemporaryDirectory() as tmp:
        w = Worker(name, Path(tmp))
        print(json.dumps(w.info, default=str), file=out, flush=True)
        for line in sys.stdin:
            op, *rest = json.loads(line)
            if op == "add":
                t = time.perf_counter()
                w.add(slices[rest[0]])
                answer: Any = time.perf_counter() - t
            elif op == "search":
                mode, k, qids = rest
                answer = {"ms": [], "run": {}}
                for q in qids:
                    t = time.perf_counter()
                    got = w.search(queries[q], k, mode)
                    answer["ms"].append((time.perf_counter() - t) * 1000)
                    answer["run"][q] = ranked(got)
            elif op == "finish":  # the vector state searches will see; with --rebuild-vectors, bertsearch's rebuilt
                t = time.perf_counter()
                if args.rebuild_vectors and name.startswith("bertsearch"):
                    w.ix.vectors.rebuild()
                answer = {"seconds": time.perf_counter() - t, "vectors": w.vector_state()}
            elif op == "mem":
                answer = peak_mb()
            else:  # "end"
                answer = {"peak_mb_end": peak_mb(), "disk_mb": w.disk_mb()}
            print(json.dumps(answer), file=out, flush=True)


class Pool:
    """The contenders' processes, driven over their stdin and stdout."""

    def __init__(self, names: list[str], args: argparse.Namespace) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for var in ("BERTSEARCH_QUERY_BACKEND", "BERTSEARCH_BACKEND"):  # the engine's own defaults, not a setting's
            env.pop(var, None)
        cmd = [sys.executable, __file__, "--data", str(args.data), "--docs", str(args.docs), "--slice", str(args.slice),
               "--src", str(args.src), *(["--rebuild-vectors"] if args.rebuild_vectors else [])]
        self.procs = {n: subprocess.Popen([*cmd, "--worker", n], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True, env=env) for n in names}
        self.info = {n: self.read(n) for n in names}

    def read(self, name: str) -> Any:
        line = self.procs[name].stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"the {name} worker died (its error is above)")
        return json.loads(line)

    def call(self, name: str, *cmd: Any) -> Any:
        self.procs[name].stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.procs[name].stdin.flush()  # type: ignore[union-attr]
        return self.read(name)

    def close(self) -> None:
        for p in self.procs.values():
            p.stdin.close()  # type: ignore[union-attr]
            p.wait()


def alternate(pool: Pool, tasks: list[tuple[str, str]], qids: list[str], block: int) -> dict[tuple[str, str], dict]:
    """Each task (contender, mode) answers every query once, timed, k=10, after a warm-up; blocks of queries go to
    the tasks in turn, the order turning each block."""
    for name, mode in tasks:
        pool.call(name, "search", mode, 10, qids[:1])
    got: dict[tuple[str, str], dict] = {t: {"ms": [], "run": {}} for t in tasks}
    for b, i in enumerate(range(0, len(qids), block)):
        k = b % len(tasks)
        for t in tasks[k:] + tasks[:k]:
            answer = pool.call(t[0], "search", t[1], 10, qids[i : i + block])
            got[t]["ms"] += answer["ms"]
            got[t]["run"] |= answer["run"]
    return got


def partial(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """What is measured so far, to the JSON file: a later failure then loses only what came after."""
    if args.json:
        args.json.write_text(json.dumps({"partial": True, "contenders": res}, indent=2) + "\n")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from bertsearch.benchmark import percentile
    from bertsearch.evaluation.beir import scores

    names = [c for c in args.contenders.split(",") if c]
    if unknown := set(names) - set(CONTENDERS):
        raise SystemExit(f"unknown contenders {sorted(unknown)}; use {', '.join(CONTENDERS)}")
    docs, queries, qrels = load_data(args.data, args.docs)
    qids = list(queries)
    sample = sorted(random.Random(args.seed).sample(qids, min(args.ask_queries, len(qids))))
    load_start, src = os.getloadavg(), source()
    pool = Pool(names, args)
    spent = dict.fromkeys(names, 0.0)
    for i in range(-(-len(docs) // args.slice)):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            spent[name] += pool.call(name, "add", i)
    finish = {name: pool.call(name, "finish") for name in names}
    for name in names:
        spent[name] += finish[name]["seconds"]
    res: dict[str, dict[str, Any]] = {
        n: {"info": pool.info[n], "index_seconds": round(spent[n], 2), "docs_per_s": round(len(docs) / spent[n], 2),
            "vectors": finish[n]["vectors"], "rebuild_seconds": round(finish[n]["seconds"], 2), "search": {}}
        for n in names}
    print("indexed: " + ", ".join(f"{n} {r['docs_per_s']} docs/s" for n, r in res.items()), flush=True)
    partial(args, res)
    tasks = [(n, m) for n in names for m in MODES[n]]
    timed = alternate(pool, tasks, qids, args.block)
    for (name, mode), got in timed.items():
        top100 = pool.call(name, "search", mode, 100, qids)["run"]
        s10, s100 = scores(qrels, got["run"]), scores(qrels, top100)
        res[name]["search"][mode] = {"p50_ms": round(percentile(got["ms"], 50), 2),
                                     "p95_ms": round(percentile(got["ms"], 95), 2), "ndcg@10": round(s10["ndcg@10"], 4),
                                     "mrr@10": round(s10["mrr@10"], 4), "recall@100": round(s100["recall@100"], 4)}
    for name in names:
        res[name]["peak_mb_index_search"] = pool.call(name, "mem")
    partial(args, res)
    extra = [(n, m) for n in names if n.startswith("bertsearch") for m in ("rerank", "ask")]
    if extra and sample:
        sub = {q: qrels[q] for q in sample}
        for (name, mode), got in alternate(pool, extra, sample, args.block).items():
            res[name]["search"][mode] = {"p50_ms": round(percentile(got["ms"], 50), 2),
                                         "p95_ms": round(percentile(got["ms"], 95), 2), "queries": len(sample)}
            if mode == "rerank":  # the sample's nDCG@10, reranked and not, to show what the rerank buys
                res[name]["search"][mode]["ndcg@10"] = round(scores(sub, got["run"])["ndcg@10"], 4)
                res[name]["search"][mode]["hybrid_ndcg@10_same_sample"] = round(
                    scores(sub, {q: timed[(name, "hybrid")]["run"][q] for q in sample})["ndcg@10"], 4)
    for name in names:
        res[name] |= pool.call(name, "end")
    pool.close()
    return report(args, res, len(docs), len(qids), len(sample), load_start) | {"bertsearch_source": src}


def report(args: argparse.Namespace, res: dict[str, dict[str, Any]], n_docs: int, n_queries: int, n_sample: int,
           load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The figures, the ratios, a printed table; the JSON document."""
    ratios: dict[str, Any] = {}
    if "plain" in res:
        base = res["plain"]
        ratios["to_plain"] = {n: {"docs_per_s": round(r["docs_per_s"] / base["docs_per_s"], 2),
                                  "dense_p50_speedup": round(base["search"]["dense"]["p50_ms"] / r["search"]["dense"]["p50_ms"], 2),
                                  "dense_ndcg@10_diff": round(r["search"]["dense"]["ndcg@10"] - base["search"]["dense"]["ndcg@10"], 4)}
                              for n, r in res.items() if "dense" in r["search"]}
    vs: dict[str, Any] = {}
    for b in (n for n in res if n.startswith("bertsearch")):
        for t, mode in (("txtai-dense", "dense"), ("txtai-hybrid", "hybrid")):
            if t in res:
                mine, theirs = res[b]["search"][mode], res[t]["search"][mode]
                row = {"index_speedup": round(res[b]["docs_per_s"] / res[t]["docs_per_s"], 2),
                       "p50_speedup": round(theirs["p50_ms"] / mine["p50_ms"], 2),
                       "p95_speedup": round(theirs["p95_ms"] / mine["p95_ms"], 2),
                       "ndcg@10_diff": round(mine["ndcg@10"] - theirs["ndcg@10"], 4)}
                row["ahead"] = row["index_speedup"] > 1 and row["p50_speedup"] > 1 and row["ndcg@10_diff"] >= 0
                vs[f"{b} {mode} vs {t}"] = row
    ratios["bertsearch_to_txtai"] = vs
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "machine": {"cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "load_average_start": load_start,
                       "load_average_end": os.getloadavg(), "python": platform.python_version()},
           "docs": n_docs, "queries": n_queries, "ask_queries": n_sample, "slice": args.slice, "block": args.block,
           "rebuild_vectors": args.rebuild_vectors,
           "note": None if n_docs >= 5183 else f"only the first {n_docs} abstracts indexed: nDCG counts only their "
                                               "judgments, so it does not compare with full SciFact",
           "contenders": res, "ratios": ratios}
    print(f"\n{out['machine']['cpu']}, {out['machine']['cpus']} cpus, load {load_start[0]:.2f} at the start, "
          f"{out['machine']['load_average_end'][0]:.2f} at the end; {n_docs} docs, {n_queries} queries"
          + (f"; NOTE: {out['note']}" if out["note"] else ""))
    print(f"{'contender':<17}{'mode':<7}{'docs/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'nDCG@10':>9}{'R@100':>8}"
          f"{'peak MB':>9}{'end MB':>8}{'disk MB':>9}  backend")
    for n, r in res.items():
        for mode, s in r["search"].items():
            q = f"{s['ndcg@10']:9.4f}" if "ndcg@10" in s else " " * 9
            rc = f"{s['recall@100']:8.4f}" if "recall@100" in s else " " * 8
            print(f"{n:<17}{mode:<7}{r['docs_per_s']:8.1f}{s['p50_ms']:9.1f}{s['p95_ms']:9.1f}{q}{rc}"
                  f"{r['peak_mb_index_search']:9.0f}{r['peak_mb_end']:8.0f}"
                  f"{r['disk_mb']:9.1f}  {r['info'].get('backend', '')} {r['info'].get('encoder_precision') or ''}")
    for n, r in ratios.get("to_plain", {}).items():
        print(f"to plain: {n:<17} docs/s x{r['docs_per_s']}, dense p50 speedup x{r['dense_p50_speedup']}, "
              f"nDCG@10 {r['dense_ndcg@10_diff']:+.4f}")
    for k, r in vs.items():
        print(f"{k:<40} indexing x{r['index_speedup']}, p50 x{r['p50_speedup']}, p95 x{r['p95_speedup']}, "
              f"nDCG@10 {r['ndcg@10_diff']:+.4f}  {'AHEAD' if r['ahead'] else 'not ahead'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SCIFACT, help="a BEIR folder (default: SciFact)")
    ap.add_argument("--docs", type=int, default=10**9, help="index only the first N abstracts (default: all)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, of: " + ", ".join(CONTENDERS))
    ap.add_argument("--slice", type=int, default=100, help="documents each contender indexes in its turn")
    ap.add_argument("--block", type=int, default=10, help="queries each (contender, mode) answers in its turn")
    ap.add_argument("--ask-queries", type=int, default=100, help="seeded sample of queries for rerank and ask")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rebuild-vectors", action="store_true",
                    help="bertsearch: rebuild its FAISS index after the last slice (timed, counted in indexing)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        sys.path.insert(0, str(args.src))
        worker(args.worker, args)
        return 0
    # a copy of this tree's bertsearch as it stands now, for the driver and every worker: others may edit the tree
    # during the run, and a module imported late must not come from another version than the ones imported early
    with tempfile.TemporaryDirectory() as src:
        shutil.copytree(ROOT / "bertsearch", Path(src) / "bertsearch", ignore=shutil.ignore_patterns("__pycache__"))
        args.src = Path(src)
        sys.path.insert(0, src)
        out = bench(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def source() -> dict[str, Any]:
    """Which bertsearch was measured: the commit, and the files of bertsearch/ that differed from it at the start."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], check=False, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted": [line.split(maxsplit=1)[-1] for line in git("status", "--porcelain", "bertsearch").splitlines()]}


if __name__ == "__main__":
    sys.exit(main())
