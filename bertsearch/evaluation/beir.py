"""BEIR evaluation: index a dataset's corpus, run its queries, score with pytrec_eval.

Metrics are computed by pytrec_eval (the trec_eval implementation BEIR itself uses): nDCG@10,
Recall@100, and MRR@10 as trec_eval's reciprocal rank over each query's top 10.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadArgument, CorpusError, MissingDependency, ModelMismatch

log = logging.getLogger(__name__)

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, "int | None", str], AbstractContextManager[Advance]]
PRIMARY = "ndcg@10"


@contextmanager
def no_progress(description: str, total: int | None, unit: str = "") -> Iterator[Advance]:
    yield lambda n: None


def _pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ImportError:
        raise MissingDependency("pytrec_eval-terrier", "evaluation") from None
    return pytrec_eval


def scores(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries (a query with no results scores 0)."""
    pytrec_eval = _pytrec_eval()
    run = {q: run.get(q, {}) for q in qrels}
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda x: -x[1])[:10]) for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    n = len(qrels)
    return {
        "ndcg@10": sum(main.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels) / n,
        "recall@100": sum(main.get(q, {}).get("recall_100", 0.0) for q in qrels) / n,
        "mrr@10": sum(rr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / n,
    }


def _from_order(doc_ids: list[str]) -> dict[str, float]:
    """Scores that reproduce an order (trec_eval sorts by score)."""
    return {d: float(len(doc_ids) - i) for i, d in enumerate(doc_ids)}


def write_trec_run(path: str | Path, run: dict[str, dict[str, float]], tag: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for q, docs in run.items():
            for rank, (d, s) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), start=1):
                f.write(f"{q} Q0 {d} {rank} {s:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """A TREC run file (`QUERY Q0 DOC RANK SCORE TAG` a line), as `write_trec_run` writes it."""
    run: dict[str, dict[str, float]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadArgument(f"cannot read the run file {path}: {e}; give a TREC run file, e.g. one `eval beir --run-file` wrote") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 6:
                raise ValueError
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
        except ValueError:
            raise BadArgument(f"{path}, line {n}: not a TREC run line (QUERY Q0 DOC RANK SCORE TAG): {line[:80]!r}; "
                              "give a run file that `eval beir --run-file` wrote") from None
    return run


def paired(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
           other: dict[str, dict[str, float]]) -> dict[str, Any]:
    """`run` against `other` on the same judged queries: both nDCG@10s, the mean of the per-query differences
    (run - other) with its standard error, and how many queries each ranks better. A query `other` has no
    line for counts as scoring 0 there, as in `scores`."""
    import statistics

    pytrec_eval = _pytrec_eval()

    def per_query(r: dict[str, dict[str, float]]) -> list[float]:
        got = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate({q: r.get(q, {}) for q in qrels})
        return [got.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels]

    ours, theirs = per_query(run), per_query(other)
    diff = [a - b for a, b in zip(ours, theirs)]
    return {
        "ndcg@10": sum(ours) / len(ours),
        "other_ndcg@10": sum(theirs) / len(theirs),
        "difference": sum(diff) / len(diff),
        "standard_error": statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0,
        "better": sum(d > 1e-9 for d in diff),
        "worse": sum(d < -1e-9 for d in diff),
        "missing": sum(q not in other for q in qrels),
    }


EVAL_MARK = "eval_dataset"
"""The store's meta key where `evaluate_beir` records the dataset it last filled an index with."""


def default_index_path(dataset: str | Path, model: str | None) -> Path:
    """indexes/beir-DATASET-MODEL. A model in a local folder also gets a digest of the folder's full path:
    `adapt` leaves two encoders in every run (OUT and OUT/work/trained), and two runs' folders of the same
    name must not share an index."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", (model or "default").split("/")[-1]).strip("-").lower()
    if model and Path(model).is_dir():
        import hashlib

        slug += "-" + hashlib.sha1(str(Path(model).resolve()).encode()).hexdigest()[:8]
    return Path("indexes") / f"beir-{Path(dataset).resolve().name}-{slug}"


def _made_by(path: Path) -> str | None:
    """The runtime that made the vectors of the index at `path` (its config.json), None where there is none."""
    import json

    try:
        return str(json.loads((path / "config.json").read_text(encoding="utf-8")).get("backend", "torch"))
    except (OSError, ValueError):
        return None


def evaluate_beir(
    dataset: str | Path,
    *,
    split: str = "test",
    mode: str = "hybrid",
    index_path: str | Path | None = None,
    model: str | None = None,
    ann: str | None = None,
    k: int = 100,
    batch_size: int = 64,
    run_file: str | Path | None = None,
    compare: str | Path | None = None,
    rerank: bool = False,
    rerank_depth: int | list[int] | None = None,
    rerank_penalty: float | list[float] | None = None,
    reranker: str | None = None,
    precision: str = "auto",
    backend: str | None = None,
    limit: int | None = None,
    seed: int = 42,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Evaluate retrieval on a BEIR folder. Returns the metrics plus what was measured.

    `limit` evaluates a seeded sample of that many judged queries (the cross-encoder is slow on a CPU).
    With `rerank`, `rerank_depth` may list several depths: the candidates are scored once at the deepest,
    each shallower depth is re-ranked from the same scores, and `by_depth` holds every depth's metrics
    beside `first_stage`, the metrics of the same queries without reranking; the top level holds the
    deepest. Each depth's order is exactly what `Index.search(rerank=True)` returns at that depth.
    `rerank_penalty` works the same way for `Index.rerank_penalty` (`by_penalty`, at the deepest depth; the
    top level holds the first one listed). `compare`, a TREC run file of the same queries (another model's
    `run_file`), adds `compared`: the paired difference of nDCG@10 and its standard error (see `paired`).
    """
    import random

    from ..engine import Index, rerank_order
    from ..readers import count_records
    from ..readers.beir import load_qrels, load_queries

    dataset = Path(dataset)
    if not dataset.exists():
        raise CorpusError(f"no such folder: {dataset}; give a BEIR folder (corpus.jsonl, queries.jsonl and qrels/)")
    if not (dataset / "corpus.jsonl").is_file():
        raise CorpusError(f"{dataset} is not a BEIR folder (no corpus.jsonl); give a folder with corpus.jsonl, queries.jsonl and qrels/")
    if run_file is not None:  # a run file that cannot be written fails now, not after the evaluation
        try:
            Path(run_file).parent.mkdir(parents=True, exist_ok=True)
            with open(run_file, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise BadArgument(f"cannot write the run file {run_file} ({e.strerror}); give a path in a folder you can "
                              "write") from None
    qrels = load_qrels(dataset, split)
    queries = load_queries(dataset)
    qids = [q for q in qrels if q in queries]
    if not qids:
        raise CorpusError(f"none of the {len(qrels)} queries judged in {split} are in {dataset}/queries.jsonl")
    judged = len(qids)
    if limit is not None and limit < len(qids):
        qids = sorted(random.Random(seed).sample(qids, limit))
    qrels = {q: qrels[q] for q in qids}
    other = None
    if compare is not None:  # read before the (slow) indexing, so a bad file fails at once
        other = read_trec_run(compare)
        if not set(other) & set(qids):
            raise BadArgument(f"{compare} ranks none of the {len(qids)} queries evaluated here; compare runs of the "
                              f"same dataset and split ({dataset.name}, {split})")
    depths = sorted(set(rerank_depth)) if isinstance(rerank_depth, list) else [rerank_depth] if rerank_depth else []
    penalties = (
        list(dict.fromkeys(rerank_penalty)) if isinstance(rerank_penalty, list)
        else [rerank_penalty] if rerank_penalty is not None else []
    )
    if any(not p >= 0.0 for p in penalties):
        raise BadArgument(f"rerank penalties must be >= 0 (logits per first-stage place), got {penalties}")
    path = Path(index_path) if index_path is not None else default_index_path(dataset, model)
    if index_path is None and backend not in (None, "auto", "torch"):
        path = path.with_name(f"{path.name}-{backend}")  # another backend's vectors: an index of their own
    elif index_path is None and backend == "torch" and _made_by(path) not in (None, "torch"):
        path = path.with_name(f"{path.name}-torch")  # the default folder holds another runtime's (auto's) vectors
    opening = {"model": model, "ann": ann, "create": True, "reranker": reranker, "precision": precision,
               "backend": backend}
    try:
        ix = Index.open(path, **opening)
    except ModelMismatch:
        if index_path is not None:  # (a folder the user named is theirs: it is not indexed again unasked)
            raise
        # eval's own index of a model folder whose weights changed since (trained again, averaged again): a cache
        # that no longer fits, built again; it failed, with advice to leave out --model (found 2026-12-06)
        log.warning("%s holds vectors of an earlier version of %s (its weights changed since); indexing again", path,
                    model)
        shutil.rmtree(path)
        ix = Index.open(path, **opening)
    with ix:
        if depths:
            ix.rerank_depth = depths[-1]
        depth_used = ix.rerank_depth
        depths = depths or [depth_used]
        if penalties:
            ix.rerank_penalty = penalties[0]
        penalty_used = ix.rerank_penalty
        penalties = penalties or [penalty_used]
        by_penalty: dict[float, dict[str, dict[str, float]]] = {p: {} for p in penalties}
        made_by = ix.store.get_meta(EVAL_MARK)
        if index_path is not None and made_by is None and ix.store.counts()["documents"]:
            raise BadArgument(f"{path} holds documents that eval beir did not put there; it would make the index hold "
                              f"exactly {dataset.name}'s corpus and delete the rest. Give a new --index folder")
        here = str(dataset.resolve())
        if made_by not in (None, here):
            if index_path is not None:  # a folder the user named: another dataset's evaluation index is kept
                raise BadArgument(f"{path} holds the corpus of {made_by}, which evaluating {dataset} would replace; "
                                  "give a new --index folder, or leave --index out")
            log.warning("%s held the corpus of %s (a dataset of the same folder name); it now holds %s's", path,
                        made_by, here)
        ix.store.set_meta(EVAL_MARK, here)
        with progress("indexing", count_records(dataset, "beir"), "docs") as advance:
            # pruned: the index holds this corpus exactly, whatever another dataset of the same folder name (or an
            # --index given twice) put in it before; unchanged documents cost no encoder work
            report = ix.add_corpus(dataset, format="beir", on_progress=advance, prune=True, prune_unrelated=True)
        run: dict[str, dict[str, float]] = {}
        runs: dict[int, dict[str, dict[str, float]]] = {d: {} for d in depths}
        first: dict[str, dict[str, float]] = {}
        t0 = time.perf_counter()
        with progress("searching", len(qids), "queries") as advance:
            for i in range(0, len(qids), batch_size):
                part = qids[i : i + batch_size]
                for q, hits in zip(part, ix.batch_search([queries[q] for q in part], k=k, mode=mode, rerank=rerank,
                                                                rerank_depth=ix.rerank_depth)):
                    # scores from ranks: trec_eval orders by score, and a reranked list's tail keeps first-stage scores
                    run[q] = _from_order([h.doc_id for h in hits])
                    if rerank:
                        staged = sorted(hits, key=lambda h: h.ranks[mode])  # the first-stage order
                        first[q] = _from_order([h.doc_id for h in staged])
                        for d in depths:
                            head = rerank_order(staged[:d], penalty_used)
                            runs[d][q] = _from_order([h.doc_id for h in head + staged[d:]])
                        for p in penalties:
                            head = rerank_order(staged[: depths[-1]], p)
                            by_penalty[p][q] = _from_order([h.doc_id for h in head + staged[depths[-1] :]])
                advance(len(part))
        seconds = time.perf_counter() - t0
    if run_file is not None:
        write_trec_run(run_file, run, f"bertsearch-{mode}{'-rerank' if rerank else ''}")
    return {
        **scores(qrels, run),
        "primary_metric": PRIMARY,
        "dataset": dataset.resolve().name,
        "split": split,
        "mode": mode,
        "rerank": rerank,
        "rerank_depth": depth_used if rerank else None,
        "rerank_penalty": penalty_used if rerank else None,
        **({"first_stage": scores(qrels, first)} if rerank else {}),
        **({"by_depth": {d: scores(qrels, runs[d]) for d in depths}} if rerank and len(depths) > 1 else {}),
        **({"by_penalty": {p: scores(qrels, by_penalty[p]) for p in penalties}} if rerank and len(penalties) > 1 else {}),
        **({"compared": {"run": str(compare), **paired(qrels, run, other)}} if other is not None else {}),
        "queries": len(qids),
        "sampled_from": judged if len(qids) < judged else None,
        "index": str(path),
        "indexed": report.to_dict(),
        "search_seconds": round(seconds, 3),
        "queries_per_second": round(len(qids) / seconds, 2) if seconds > 0 else 0.0,
    }
