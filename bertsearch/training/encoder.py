"""Supervised contrastive fine-tuning of the bi-encoder: `bertsearch train encoder`.

1. data: (query, positive[, negatives]) from a pairs file (JSONL/CSV/TSV, as `train reranker` reads
   them) or from a BEIR split (each judged-relevant document, title and text, is a positive).
2. hard negatives: the top candidates of each query from the user's index (`index`, hybrid search), or
   by BM25 over the positives' pool when no index is given; a candidate the cross-encoder scores at or
   above the query's own positive (less `fn_margin`) is dropped as a likely unlabelled positive. No
   positive of a query is ever one of its negatives. Every pair trains on `hard_negatives` of them: the
   loss needs as many for each pair, so a pair that found fewer is filled up with passages drawn at
   random (seeded) from the pool, and a pool too small for that is an error.
3. loss: CachedMultipleNegativesRankingLoss on (query, positive, negative_1 .. negative_N): every other
   positive and negative in the batch is a negative too, and the gradient cache lets a large batch fit
   where 16 would (mini-batches of `mini_batch_size`).
4. dev: a held-out share of the training queries (or a BEIR dev split) ranked over their relevant
   documents plus a seeded sample of the rest; nDCG@10 and Recall@100 before training and after each
   epoch; the best epoch is kept.
5. AdamW with linear warmup over 10% of steps, lr 3e-5, batch 32, 3 epochs, clipping at 1.0 (on SciFact's
   822 training pairs, batch 32 with lr 3e-5 reached dev nDCG@10 0.850 where batch 64 with lr 2e-5
   reached 0.796: twice the steps on a small set); checkpoints every
   epoch and resume; a report and a model card beside the model.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from ..errors import BadArgument, CorpusError, MissingDependency
from ..evaluation.beir import ProgressFactory, no_progress
from .cards import model_card
from .common import (
    check_out,
    check_settings,
    dev_metrics,
    finish,
    machine,
    per_evaluation,
    progress_callback,
    resume_point,
    run_trainer,
    schedule_args,
    time_limit_callback,
    training_summary,
)
from .reranker import Example, bm25_candidates, complete_negatives, positives_of, read_pairs

log = logging.getLogger(__name__)

DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
DEV_NAME = "dev"
DEV_METRICS = {"cosine_ndcg@10": "ndcg@10", "cosine_recall@100": "recall@100", "cosine_mrr@10": "mrr@10"}
MINE_DEPTH = 30  # candidates looked at per query when mining
_RESUMABLE = {"epochs", "out_dir", "resume", "keep_checkpoints", "eval_steps", "time_limit"}


def beir_examples(dataset: str | Path, split: str) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """(query id, query, positive document id) for every relevant judgement of `split`, and the corpus
    as id -> "title\\ntext"."""
    from ..readers.beir import load_qrels, load_queries

    dataset = Path(dataset)
    if not (dataset / "corpus.jsonl").is_file():
        raise CorpusError(f"{dataset} is not a BEIR folder (no corpus.jsonl)")
    qrels, queries = load_qrels(dataset, split), load_queries(dataset)
    corpus: dict[str, str] = {}
    with open(dataset / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                corpus[str(d["_id"])] = f"{d.get('title') or ''}\n{d['text']}".strip()
    triples = [(q, queries[q], d) for q, docs in qrels.items() if q in queries for d, s in docs.items()
               if s > 0 and d in corpus]
    if not triples:
        raise CorpusError(f"no judged (query, document) pairs in {dataset}/qrels/{split}.tsv")
    return triples, corpus


def mine_negatives(
    examples: list[Example],
    *,
    n: int,
    index: str | Path | None = None,
    pool: list[str] | None = None,
    relevant: dict[str, set[str]] | None = None,
    reranker: Any = None,
    fn_margin: float = 0.0,
    seed: int = 42,
    progress: ProgressFactory = no_progress,
) -> dict[str, int]:
    """Give each example up to `n` hard negatives, in place; returns counts of what was mined and dropped.

    Candidates come from `index` (hybrid search; whole documents) or, without one, BM25 over `pool`.
    Texts equal to one of the query's positives (`relevant`: every positive of each query, by default
    those among `examples`) never count, not even among the negatives an example came with. With
    `reranker`, a candidate scoring at or above the positive less `fn_margin` is dropped as a likely
    false negative."""
    positives = relevant if relevant is not None else positives_of(examples)
    for ex in examples:
        ex.negatives = [t for t in ex.negatives if t not in positives.get(ex.query, ()) and t != ex.positive]
    queries = list(dict.fromkeys(ex.query for ex in examples))
    candidates: dict[str, list[str]] = {}
    if index is not None:
        from ..engine import Index

        with Index.open(index) as ix, progress("mining negatives", len(queries), "queries") as advance:
            for q in queries:
                hits = ix.search(q, k=MINE_DEPTH)
                docs = [ix.get(h.doc_id) for h in hits]
                candidates[q] = [f"{d['title']}\n{d['text']}".strip() if d["title"] else d["text"] for d in docs if d]
                advance(1)
    else:
        pool = list(dict.fromkeys(pool or [ex.positive for ex in examples]))
        found = bm25_candidates(pool, queries, MINE_DEPTH, progress=progress)
        candidates = {q: [pool[i] for i in idx] for q, idx in zip(queries, found)}
    stats = {"mined": 0, "dropped_as_false_negatives": 0, "without_negatives": 0}
    with progress("checking negatives", len(examples) if reranker is not None else 0, "queries") as advance:
        for i, ex in enumerate(examples):
            own = positives.get(ex.query, set()) | {ex.positive}
            # a mined document holds a positive when it is "title\ntext" and the positive its text alone (a pairs
            # file's usual form): 6 pairs in 10 got their own document as a "hard negative" (found 2026-12-06)
            held = [" ".join(p.split()) for p in own if p.strip()]
            cands = [c for c in candidates.get(ex.query, []) if c not in own and c not in ex.negatives
                     and not any(p in " ".join(c.split()) for p in held)]
            cands = cands[: max(n * 3, n)]  # the hardest few, a little more than needed for the filter
            if reranker is not None and cands:
                scores = reranker.score(ex.query, [ex.positive, *cands])
                keep = [c for c, s in zip(cands, scores[1:].tolist()) if s < float(scores[0]) - fn_margin]
                stats["dropped_as_false_negatives"] += len(cands) - len(keep)
                cands = keep
                advance(1)
            picked = cands[:n] if n <= len(cands) else cands
            random.Random(f"{seed}:{i}").shuffle(picked)
            ex.negatives = [*ex.negatives, *picked][: max(n, len(ex.negatives))]
            stats["mined"] += len(picked)
            stats["without_negatives"] += not ex.negatives
    return stats


def train_encoder(
    out_dir: str | Path,
    *,
    pairs: str | Path | None = None,
    beir: str | Path | None = None,
    split: str = "train",
    dev_split: str | None = None,
    index: str | Path | None = None,
    reranker: str | None = None,
    filter_negatives: bool = True,
    base: str = DEFAULT_BASE,
    epochs: int = 3,
    batch_size: int = 32,
    mini_batch_size: int = 16,
    lr: float = 3e-5,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    max_length: int = 256,
    hard_negatives: int = 1,
    fn_margin: float = 0.0,
    dev_fraction: float = 0.1,
    dev_corpus: int = 2000,
    limit: int | None = None,
    bf16: bool = False,
    seed: int = 42,
    resume: bool = True,
    eval_steps: int | None = None,
    keep_checkpoints: bool = False,
    time_limit: float | None = None,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Fine-tune `base` on (query, positive, `hard_negatives` negatives) with cached multiple-negatives ranking
    loss; returns the report also written to OUT/report.json. See the module docstring for each step: a pair
    that finds fewer than `hard_negatives` is filled up with random passages, never one of its query's positives.
    `time_limit` (minutes) ends training early, evaluated and checkpointed, so that the same call resumes it."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k != "progress"}
    check_settings({**settings, "stride": 0, "layer_lr_decay": None, "dev_limit": None})
    if (pairs is None) == (beir is None):
        raise BadArgument("give one source of training data: --pairs FILE or --beir FOLDER")
    if not 0 <= dev_fraction < 1 or hard_negatives < 0 or mini_batch_size < 1:
        raise BadArgument("dev_fraction must be in [0, 1), hard_negatives >= 0 and mini_batch_size >= 1")
    try:
        import datasets
        import torch
        import transformers
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
        from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
        from transformers import PrinterCallback
    except ImportError as e:
        raise MissingDependency("datasets accelerate", f"training an encoder ({e})") from None
    from ..models import encoder_path

    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    cuda = torch.cuda.is_available()
    check_out(out_dir, resume=resume)
    base_path = encoder_path(base)  # named now, before the data is read and the negatives mined
    last = resume_point(checkpoints, settings, _RESUMABLE, resume=resume)
    transformers.set_seed(seed)
    t0 = time.perf_counter()

    # 1. data, and the dev split: held-out training queries unless the dataset has one
    rng = random.Random(seed)
    corpus: dict[str, str] = {}
    if beir is not None:
        triples, corpus = beir_examples(beir, split)
        qids = sorted({q for q, _, _ in triples})
        if limit is not None:
            qids = sorted(rng.sample(qids, min(limit, len(qids))))
        dev_triples: list[tuple[str, str, str]] = []
        if dev_split is not None:
            dev_triples, _ = beir_examples(beir, dev_split)
        elif dev_fraction > 0:
            held = set(rng.sample(qids, max(1, round(dev_fraction * len(qids)))))
            dev_triples = [t for t in triples if t[0] in held]
            qids = [q for q in qids if q not in held]
        keep = set(qids)
        relevant = positives_of([Example(text, corpus[d]) for _, text, d in [*triples, *dev_triples]])
        train = [Example(text, corpus[d]) for q, text, d in triples if q in keep]
        dev_q = {q: text for q, text, _ in dev_triples}
        dev_rel = {}
        for q, _, d in dev_triples:
            dev_rel.setdefault(q, set()).add(d)
    else:
        examples = read_pairs(pairs)  # type: ignore[arg-type]
        relevant = positives_of(examples)
        rng.shuffle(examples)
        if limit is not None:
            examples = examples[:limit]
        # queries are held out, each with all its pairs: a held-out pair whose query was trained on too leaked dev
        # into training, and a dev query judged by one of its positives counted the others as misses
        queries = list(dict.fromkeys(ex.query for ex in examples))  # (in the shuffled order)
        n_dev = round(dev_fraction * len(queries)) if len(queries) > 1 else 0
        held = set(queries[:n_dev])
        dev_ex, train = [ex for ex in examples if ex.query in held], [ex for ex in examples if ex.query not in held]
        texts = list(dict.fromkeys(ex.positive for ex in examples))
        corpus = {f"p{i}": t for i, t in enumerate(texts)}
        ids = {t: k for k, t in corpus.items()}
        number = {q: f"q{i}" for i, q in enumerate(queries[:n_dev])}
        dev_q = {number[q]: q for q in queries[:n_dev]}
        dev_rel = {}
        for ex in dev_ex:
            dev_rel.setdefault(number[ex.query], set()).add(ids[ex.positive])
    if not train:
        raise CorpusError("no training pairs left after holding out the dev split; give more pairs or --dev-fraction 0")

    # 2. hard negatives, filtered by the cross-encoder; a pair short of them is filled up from the pool
    ce = None
    if hard_negatives and filter_negatives:
        from ..models.reranker import load_reranker

        ce = load_reranker(reranker)
    mined: dict[str, int] = {}
    columns: dict[str, list[str]] = {"anchor": [ex.query for ex in train], "positive": [ex.positive for ex in train]}
    if hard_negatives:
        mined = mine_negatives(train, n=hard_negatives, index=index, pool=list(corpus.values()) if not index else None,
                               relevant=relevant, reranker=ce, fn_margin=fn_margin, seed=seed, progress=progress)
        mined["filled_in"] = complete_negatives(train, hard_negatives, seed, pool=list(corpus.values()),
                                                relevant=relevant)
        short = sum(len(ex.negatives) < hard_negatives for ex in train)
        if short:
            raise CorpusError(f"{short} pairs cannot have {hard_negatives} negatives: there are too few passages "
                              "besides their query's positives; lower --hard-negatives")
        if mined["filled_in"]:
            log.warning("%d negatives of %d pairs were filled in with random passages (too few hard ones found)",
                        mined["filled_in"], len(train))
        for j in range(hard_negatives):
            columns[f"negative_{j + 1}"] = [ex.negatives[j] for ex in train]
    train_dataset = datasets.Dataset.from_dict(columns)
    data_seconds = time.perf_counter() - t0

    # 3. model and loss
    model = SentenceTransformer(str(base_path), device="cuda" if cuda else "cpu", local_files_only=True,
                                model_kwargs={"dtype": torch.float32})
    model.max_seq_length = min(max_length, model.max_seq_length or max_length)
    loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)

    # 4. dev evaluator over the dev queries' documents plus a sample of the rest
    evaluator = None
    if dev_q:
        relevant = {d for ds in dev_rel.values() for d in ds}
        others = sorted(set(corpus) - relevant)
        sample = rng.sample(others, min(dev_corpus, len(others)))
        evaluator = InformationRetrievalEvaluator(
            queries=dev_q, corpus={d: corpus[d] for d in [*sorted(relevant), *sample] if d in corpus},
            relevant_docs=dev_rel, name=DEV_NAME, ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[100],
            mrr_at_k=[10], map_at_k=[100], batch_size=2 * mini_batch_size, show_progress_bar=False,
        )
    best_metric = f"eval_{DEV_NAME}_cosine_ndcg@10"
    before = dev_metrics(evaluator(model), DEV_METRICS, DEV_NAME) if evaluator is not None and last is None else None

    # 5. arguments and trainer
    args = SentenceTransformerTrainingArguments(
        **schedule_args(
            checkpoints=checkpoints, epochs=epochs, batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio,
            weight_decay=weight_decay, max_grad_norm=max_grad_norm, eval_steps=eval_steps,
            best_metric=best_metric if evaluator is not None else None,
            steps_per_epoch=math.ceil(len(train) / batch_size), cuda=cuda, bf16=bf16, seed=seed,
        ),
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a text twice in a batch would be its own negative
        data_seed=seed,
    )
    stopper = time_limit_callback(time_limit)
    model.model_card_data.generate_widget_examples = False  # (its progress bar leaked into stderr)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                         evaluator=evaluator, callbacks=[progress_callback(progress), stopper])
    trainer.remove_callback(PrinterCallback)
    output, train_seconds = run_trainer(trainer, checkpoints, settings, last)

    # 6. save the best model and evaluate what was saved
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save(str(out_dir))
    for f in out_dir.glob("*.safetensors"):
        f.chmod(0o644)
    saved = SentenceTransformer(str(out_dir), device="cuda" if cuda else "cpu", local_files_only=True)
    after = dev_metrics(evaluator(saved), DEV_METRICS, DEV_NAME) if evaluator is not None else None
    if before and after and after.get("ndcg@10", 0) < before.get("ndcg@10", 0):  # (as adapt warns)
        log.warning("the trained encoder ranks the dev queries worse than %s (nDCG@10 %.4f -> %.4f); evaluate it before "
                    "indexing with it", base, before["ndcg@10"], after["ndcg@10"])
    history = trainer.state.log_history
    report = {
        "model": str(out_dir),
        "base": base,
        "settings": settings,
        "loss": {"name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": mini_batch_size},
        "resumed_from": last,
        "data": {
            "source": str(beir if beir is not None else pairs),
            "train_pairs": len(train),
            "dev_queries": len(dev_q),
            "dev_corpus": len(evaluator.corpus) if evaluator is not None else 0,
            "negatives_per_pair": hard_negatives,
            "hard_negatives": mined,
            "negatives_from": str(index) if index else "BM25 over the training pool",
            "filtered_by": getattr(ce, "name", None),
            "seconds": round(data_seconds, 1),
        },
        **training_summary(trainer, output, seconds=train_seconds, resumed_from=last, stopper=stopper),
        "dev_before": before,
        "dev_per_evaluation": per_evaluation(history, DEV_METRICS, DEV_NAME),
        "dev_after": after,
        "machine": machine(),
    }
    finish(out_dir, report, _model_card(report), keep=keep_checkpoints, work=(checkpoints,))
    return report


def _model_card(r: dict[str, Any]) -> str:
    b, a, d = r["dev_before"] or {}, r["dev_after"] or {}, r["data"]
    score = "not evaluated (no dev split)"
    if a:
        score = (f"nDCG@10 {b.get('ndcg@10', float('nan')):.4f} before training, {a['ndcg@10']:.4f} after "
                 f"({d['dev_queries']} queries over {d['dev_corpus']} documents)")
    negatives = ""
    if d["negatives_per_pair"]:
        negatives = (f", each with {d['negatives_per_pair']} hard negative(s) from {d['negatives_from']}"
                     + (f", filtered by {d['filtered_by']}" if d["filtered_by"] else ""))
    return model_card(
        r,
        title="Bi-encoder fine-tuned by bertsearch",
        tags=["sentence-transformers", "sentence-similarity", "bertsearch"],
        about=f"Fine-tuned from `{r['base']}` on {d['train_pairs']} (query, positive) pairs from `{d['source']}`"
        f"{negatives}, with {r['loss']['name']} (mini-batches of {r['loss']['mini_batch_size']}).",
        score=score,
        licence="The training data's licence applies to this model; the base model keeps its own.",
    )
