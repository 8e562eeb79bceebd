"""Unsupervised domain adaptation of the bi-encoder from the corpus alone: `bertsearch adapt` (GPL-style).

Each step writes its result into OUT/work and is skipped when that file is already there, so a stopped
run resumes and every step can be run and inspected on its own (`steps`):

1. `queries`: pseudo-queries from the index's chunks (`queries.jsonl`). With `query_source="sentences"`
   (the default), in the inverse-cloze manner: a sentence (or a span of a long one) of a chunk is the
   query, the chunk (under its document's title, usually without the sentence: `remove_query`) the
   positive. With `"titles"`, a document's title (of four words or more) is the query and its first chunk,
   without the title, the positive; `"both"` makes both kinds. With `"findings"`, a claim-like sentence
   of the document's later half (where an abstract states what it found), its lead-in ("These results
   suggest that") cut off, is the query and the chunk that holds it (under the title; without the
   sentence with probability `remove_query`) the positive;
2. `mine`: negatives for each pseudo-query from the index itself (dense search with the current model;
   the source document never counts) (`triples.jsonl`);
3. `label` (`loss="margin-mse"` only): the cross-encoder scores (query, positive) and (query, negative);
   the margin between the two is the label (`labelled.jsonl`);
4. `train`, with one of two losses (`OUT/work/trained`; skipped when that folder holds a model):
   - `mnrl` (the default): multiple-negatives ranking loss on the pseudo-pairs: each query against its
     own positive, its mined negative and every other passage of the batch. No teacher is needed.
   - `margin-mse` (GPL): the bi-encoder learns to reproduce the cross-encoder's margins, first rescaled
     to the bi-encoder's own range (`margin_scale`): a cross-encoder's logit margins run to 5 and more
     while a normalised bi-encoder's cosine margins stay within 2, and regressing on unscaled margins
     wrecked the encoder on SciFact (dense nDCG@10 0.656 -> 0.418). With the shipped SQuAD-trained
     cross-encoder as teacher it still lost on SciFact with the rescaling (0.535).
   A seeded share of the pseudo-queries (`holdout`, whole documents) is kept out of training and ranked
   before and after it; when the adapted model ranks them worse, the report says so and a warning is
   logged. The check is necessary, not sufficient: on SciFact the held-out pseudo-queries improved
   (nDCG@10 0.768 -> 0.833) while the real claims got worse (0.656 -> 0.604), so an adapted model is
   evaluated on real queries before it replaces the one an index serves.
5. `average` (always runs): OUT is `average` x the trained weights + (1 - average) x the start model's
   (the encoder adapted from: `base` or the index's), and the held-out pseudo-queries are ranked again.
   Trained alone, every recipe measured on SciFact lost to the packaged encoder; the average keeps most of
   what the packaged encoder knows (see `_average`). With `with_runs` (`--with`), other runs' trained
   encoders from the same start model are averaged in first: the trained weights are the runs' mean.
   `average` defaults to the uniform average of the N runs and the start model, N/(N+1): 0.5 for one run.

With `mlm`, masked-language-model pre-training on the corpus runs first (15% of tokens: 80% [MASK], 10%
random, 10% unchanged) and the bi-encoder starts from that encoder (`mlm/`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import BadArgument, MissingDependency
from ..evaluation.beir import ProgressFactory, no_progress
from .common import (
    check_finite,
    check_lr,
    dev_metrics,
    machine,
    progress_callback,
    refuse_index_folder,
    resume_point,
    run_trainer,
    schedule_args,
    warmup_steps,
    write_json,
)

log = logging.getLogger(__name__)

STEPS = ("queries", "mine", "label", "train", "average")
LOSSES = ("mnrl", "margin-mse")
QUERY_SOURCES = ("sentences", "titles", "both", "findings")
HOLDOUT_METRICS = {"cosine_ndcg@10": "ndcg@10", "cosine_recall@10": "recall@10", "cosine_mrr@10": "mrr@10"}
# settings a resumed training may change: more epochs, what is averaged in afterwards, which steps run
_RESUMABLE = {"out_dir", "steps", "epochs", "holdout_corpus", "average", "with_runs"}
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
# What a finding is introduced with, cut off so that the rest reads as a claim: a section heading in
# capitals ("CONCLUSIONS"), a connective ("Taken together,"), a reporting clause ("These results suggest that").
# A heading ends in a colon or runs into a capitalised word; "NADPH oxidase ..." keeps its acronym.
_HEADING = re.compile(r"^(?:[A-Z][A-Z /&-]{3,}[A-Z](?::\s*|\s+(?=[A-Z])))+")
_CONNECTIVE = re.compile(
    r"^(?:in (?:conclusion|summary|sum|addition|contrast|particular)|taken together|together|collectively|overall|"
    r"thus|therefore|hence|finally|here|importantly|moreover|furthermore|however|consequently|accordingly|"
    r"notably|remarkably|surprisingly|interestingly|conversely|similarly|altogether|as a result|consistent with (?:these|this|our|the|previous) \w+(?: \w+)?)\s*,?\s+", re.IGNORECASE)
_REPORTING = re.compile(
    r"^(?:(?:these|our|the|this|present|current|both)\s+){1,2}(?:results?|data|findings?|observations?|studies|study|"
    r"work|experiments?|analys[ie]s|evidence|report|paper|trial)\s+(?:\w+ly\s+)?(?:suggests?|indicates?|shows?|"
    r"demonstrates?|reveals?|supports?|establish(?:es)?|identif(?:y|ies)|implies|imply|confirms?|provides? evidence|"
    r"highlights?|argues?|points? to the conclusion)\s+(?:that\s+)?|"
    r"^we\s+(?:here\s+|now\s+|further\s+|also\s+)?(?:show|showed|shown|find|found|demonstrate|demonstrated|report|"
    r"reported|conclude|concluded|propose|identify|identified|observe|observed|provide evidence|reveal|revealed|"
    r"establish|established|suggest|confirm|confirmed)\s+(?:here\s+)?(?:that\s+)?|"
    r"^it (?:is|was) (?:concluded|found|shown|demonstrated|suggested|observed) that\s+", re.IGNORECASE)


def finding_queries(text: str, rng: random.Random, n: int = 1, *, min_words: int = 5,
                    max_words: int = 30) -> list[tuple[str, int, int]]:
    """Claim-like pseudo-queries from a document: up to `n` sentences of its later half (where an abstract
    states its results and conclusions), each with what introduces it cut off ("CONCLUSIONS", "Taken
    together,", "These results suggest that") and of `min_words` to `max_words` words then. Returns
    (query, start, end) with the character span of the whole sentence in `text`, for cutting it out of a
    passage."""
    spans, start = [], 0
    for m in _SENTENCE.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text.rstrip())))
    found = []
    for a, b in spans[len(spans) // 2 :]:
        claim = " ".join(text[a:b].split())
        for pattern in (_HEADING, _CONNECTIVE, _REPORTING, _CONNECTIVE):
            claim = pattern.sub("", claim, count=1)
        if min_words <= len(claim.split()) <= max_words:
            found.append((claim[:1].upper() + claim[1:], a, b))
    return rng.sample(found, min(n, len(found)))


def cut_query(passage: str, query: str) -> str:
    """`passage` with each occurrence of `query` replaced by a space. The words match across any run of white
    space: a pseudo-query's words are joined by single spaces, where the passage may have a newline or two spaces."""
    return re.sub(r"\s+".join(map(re.escape, query.split())), " ", passage)


def crop_queries(text: str, rng: random.Random, *, min_words: int = 4, max_words: int = 24) -> str | None:
    """An inverse-cloze pseudo-query from a passage: one of its sentences, cut to a window of at most
    `max_words` words; None when no sentence has `min_words`."""
    sentences = [s for s in _SENTENCE.split(text) if len(s.split()) >= min_words]
    if not sentences:
        return None
    words = rng.choice(sentences).split()
    if len(words) > max_words:
        start = rng.randrange(len(words) - max_words + 1)
        words = words[start : start + max_words]
    return " ".join(words)


def adapt(
    index: str | Path,
    out_dir: str | Path,
    *,
    steps: tuple[str, ...] = STEPS,
    queries_per_doc: int = 2,
    query_source: str = "sentences",
    limit: int | None = None,
    negatives: int = 2,
    remove_query: float = 0.9,
    reranker: str | None = None,
    base: str | None = None,
    mlm: bool = False,
    mlm_epochs: int = 1,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    max_length: int = 256,
    margin_scale: float | None = None,
    loss: str = "mnrl",
    holdout: int = 200,
    holdout_corpus: int = 1000,
    average: float | None = None,
    with_runs: tuple[str | Path, ...] = (),
    bf16: bool = False,
    seed: int = 42,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Run the chosen steps (see the module docstring); returns what each produced, also in OUT/adapt.json.
    Training resumes from OUT/checkpoints only when they come from a run with the same settings."""
    settings = {k: str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, tuple) else v
                for k, v in locals().items() if k != "progress"}
    from ..engine import Index
    from ..models import encoder_path

    unknown = set(steps) - set(STEPS)
    if unknown:
        raise BadArgument(f"unknown adapt steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if query_source not in QUERY_SOURCES:
        raise BadArgument(f"unknown pseudo-query source {query_source!r}; choose from {', '.join(QUERY_SOURCES)}")
    if loss not in LOSSES:
        raise BadArgument(f"unknown adapt loss {loss!r}; choose from {', '.join(LOSSES)}")
    if negatives < 1 or queries_per_doc < 1 or not 0 <= remove_query <= 1 or holdout < 0 or (
            average is not None and not 0 < average <= 1):
        raise BadArgument("negatives and queries_per_doc must be at least 1, holdout at least 0, remove_query in "
                          "[0, 1], average in (0, 1]")
    if not steps:
        raise BadArgument(f"no adapt steps given; choose from {', '.join(STEPS)} (all of them by default)")
    check_lr(lr)
    if not 0 <= max_grad_norm < float("inf"):
        raise BadArgument(f"max_grad_norm must be a number >= 0, not {max_grad_norm!r}")
    out_dir = Path(out_dir)
    refuse_index_folder(out_dir)
    previous = json.loads((out_dir / "adapt.json").read_text()) if (out_dir / "adapt.json").exists() else {}
    model = sorted(p.name for p in out_dir.glob("*") if p.name in ("config.json", "modules.json")
                   or p.suffix == ".safetensors")
    if model and not previous:  # (a model adapt made has its adapt.json beside it)
        raise BadArgument(f"{out_dir} already holds a model ({', '.join(model)}) that adapt did not make, which this "
                          "run would replace; give --out a folder of its own")
    if not (Path(index) / "store.db").is_file():  # (before OUT/work is made for nothing)
        from ..errors import IndexNotFound

        raise IndexNotFound(str(index))
    if base is not None:
        encoder_path(base)  # a model that is not there, or not an encoder (a reranker), is named now, not after the mining
    work = out_dir / "work"
    _same_work(previous.get("made_with", {}), settings, steps, work)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"index": str(index), "out": str(out_dir), "steps": {}}
    rng = random.Random(seed)
    with Index.open(index) as ix:
        start_model = base or ix.config.model
        if "average" in steps and Path(ix.config.model).resolve() == out_dir.resolve():
            raise BadArgument(f"{index} serves {out_dir}: averaging again would change the encoder under its vectors; "
                              f"copy {out_dir} to a new folder, run --steps average with --out there, then reindex")
        # what the average step averages with: the model training started from, as recorded when the trained
        # weights are already there (once the index serves OUT, the index's model is no longer that one)
        trained = work / "trained"
        recorded = previous.get("steps", {}).get("train", {}).get("adapted_from")
        average_start = base or (recorded if recorded and (trained / "modules.json").is_file() else start_model)
        # --with, and checkpoints to resume, are checked now, not after half an hour of training
        other_runs = _other_runs(with_runs, trained, average_start) if "average" in steps else []
        run = {**settings, "base": start_model}
        last = None
        if "train" in steps and not (trained / "modules.json").is_file():
            last = resume_point(out_dir / "checkpoints", run, _RESUMABLE, resume=True, fix=(
                f"run with the same settings (only --epochs may change), give another --out, or delete "
                f"{out_dir / 'checkpoints'} and {work} to start over with these settings"))
        # 1. pseudo-queries
        qfile = work / "queries.jsonl"
        if "queries" in steps and not qfile.exists():
            t0 = time.perf_counter()
            rows = []
            ids = sorted(ix.store.ids())
            if limit is not None:
                ids = sorted(rng.sample(ids, min(limit, len(ids))))
            with progress("cropping queries", len(ids), "docs") as advance:
                for doc_id in ids:
                    doc = ix.store.document(doc_id)  # (with its rowid, which `Index.get` leaves out)
                    if doc is None:
                        advance(1)
                        continue
                    spans = [(a, b) for _, a, b in ix.store.doc_chunks([doc["rowid"]]).get(doc["rowid"], [])]
                    title = " ".join(doc["title"].split())
                    if query_source in ("titles", "both") and len(title.split()) >= 4:
                        # the title as the query, the first chunk (without the title) as its positive
                        a, b = spans[0] if spans else (0, len(doc["text"]))
                        rows.append({"query": title, "doc_id": doc_id, "start": a, "end": b,
                                     "positive": doc["text"][a:b]})
                    if query_source == "findings":
                        for q, a, b in finding_queries(doc["text"], rng, queries_per_doc):
                            # the chunk that holds the sentence (the first of two that overlap on it)
                            c, d = next(((c, d) for c, d in spans if c <= a and b <= d),
                                        next(((c, d) for c, d in spans if c <= a < d), (0, len(doc["text"]))))
                            passage = doc["text"][c:d]
                            if rng.random() < remove_query:
                                passage = doc["text"][c:max(c, a)] + " " + doc["text"][min(b, d):d]
                            passage = " ".join(passage.split())
                            rows.append({"query": q, "doc_id": doc_id, "start": c, "end": d,
                                         "positive": f"{title}\n{passage}" if title else passage})
                    for _ in range(queries_per_doc if query_source in ("sentences", "both") else 0):
                        a, b = rng.choice(spans) if spans else (0, len(doc["text"]))
                        passage = doc["text"][a:b]
                        q = crop_queries(passage, rng)
                        if q is None:
                            break
                        positive = cut_query(passage, q) if rng.random() < remove_query else passage
                        rows.append({"query": q, "doc_id": doc_id, "start": a, "end": b,
                                     "positive": f"{doc['title']}\n{positive}".strip() if doc["title"] else positive})
                    advance(1)
            _write_jsonl(qfile, rows)
            report["steps"]["queries"] = {"queries": len(rows), "documents": len(ids), "source": query_source,
                                          "seconds": round(time.perf_counter() - t0, 1)}
        # 2. negatives from the index
        tfile = work / "triples.jsonl"
        if "mine" in steps and not tfile.exists():
            t0 = time.perf_counter()
            rows = _read_jsonl(qfile, "queries")
            triples = []
            with progress("mining negatives", len(rows), "queries") as advance:
                for i in range(0, len(rows), 64):
                    part = rows[i : i + 64]
                    for row, hits in zip(part, ix.batch_search([r["query"] for r in part], k=negatives + 10, mode="dense")):
                        others = [h for h in hits if h.doc_id != row["doc_id"]][: negatives + 5]
                        for h in random.Random(f"{seed}:{row['query']}").sample(others, min(negatives, len(others))):
                            triples.append({**row, "negative": f"{h.title}\n{h.text}".strip() if h.title else h.text,
                                            "negative_id": h.doc_id})
                    advance(len(part))
            _write_jsonl(tfile, triples)
            report["steps"]["mine"] = {"triples": len(triples), "seconds": round(time.perf_counter() - t0, 1)}
    # 3. cross-encoder margins
    lfile = work / "labelled.jsonl"
    if "label" in steps and loss != "margin-mse":
        log.info("label: skipped, the %s loss needs no cross-encoder margins", loss)
    elif "label" in steps and not lfile.exists():
        from ..models.reranker import load_reranker

        t0 = time.perf_counter()
        rows = _read_jsonl(tfile, "mine")
        ce = load_reranker(reranker)
        with progress("labelling margins", len(rows), "triples") as advance:
            for i in range(0, len(rows), 64):
                part = rows[i : i + 64]
                scores = ce.score_batch([r["query"] for r in part], [[r["positive"], r["negative"]] for r in part])
                for r, (p, n) in zip(part, scores):
                    r["margin"] = float(p - n)
                advance(len(part))
        _write_jsonl(lfile, rows)
        margins = [r["margin"] for r in rows]
        report["steps"]["label"] = {"triples": len(rows), "reranker": ce.name,
                                    "mean_margin": round(sum(margins) / max(1, len(margins)), 4),
                                    "seconds": round(time.perf_counter() - t0, 1)}
    # 4. training (after optional MLM pre-training on the corpus), into OUT/work/trained
    train_rows = None
    if "train" in steps and (trained / "modules.json").is_file():
        log.info("train: skipped, %s exists (delete it to train again)", trained)
    elif "train" in steps:
        start = start_model
        if mlm:
            start = str(_mlm(index, out_dir / "mlm", start_model, epochs=mlm_epochs, batch_size=batch_size, lr=lr,
                             max_length=max_length, bf16=bf16, seed=seed, limit=limit, progress=progress))
            report["steps"]["mlm"] = {"model": start}
        train_rows = _read_jsonl(*((lfile, "label") if loss == "margin-mse" else (tfile, "mine")))
        report["steps"]["train"] = _train(
            train_rows, out_dir, trained, start, loss=loss, holdout=holdout, holdout_corpus=holdout_corpus, epochs=epochs,
            batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
            max_length=max_length, bf16=bf16, seed=seed, margin_scale=margin_scale, progress=progress, last=last,
            run=run,
        )
        report["steps"]["train"]["adapted_from"] = start_model
    # 5. the trained weights averaged with the start model's, into OUT
    if "average" in steps:
        if not (trained / "modules.json").is_file():
            raise BadArgument(f"{trained} is missing: run the 'train' step first (--steps train)")
        if train_rows is None:
            train_rows = _read_jsonl(*((lfile, "label") if loss == "margin-mse" else (tfile, "mine")))
        runs = [trained, *other_runs]
        share = average if average is not None else len(runs) / (len(runs) + 1)  # uniform: 0.5 for one run
        report["steps"]["average"] = _average(runs, average_start, share, out_dir, train_rows, holdout=holdout,
                                              holdout_corpus=holdout_corpus, seed=seed)
    report["machine"] = machine()
    made = {n: {k: _as_made(k, settings.get(k)) for k in keys} for n, keys in _MADE_WITH.items()
            if _STEP_OF[n] in report["steps"]}
    report["made_with"] = {**previous.get("made_with", {}), **made}  # each file of OUT/work: the settings it came from
    report["steps"] = {**previous.get("steps", {}), **report["steps"]}
    before = report["steps"].get("train", {}).get("holdout", {}).get("before")
    averaged = report["steps"].get("average", {})
    if "average" in steps and before and "holdout" in averaged:
        averaged["worse"] = averaged["holdout"]["ndcg@10"] < before["ndcg@10"]
        if averaged["worse"] and averaged["average"] < 1:
            log.warning("the averaged encoder ranks the held-out pseudo-queries worse than %s (nDCG@10 %.4f -> %.4f); "
                        "evaluate it before swapping it into an index", average_start, before["ndcg@10"],
                        averaged["holdout"]["ndcg@10"])
    write_json(out_dir / "adapt.json", report)
    return report


_MADE_WITH = {  # the settings each step's file in OUT/work was made with, that a later run would reuse
    "queries.jsonl": ("index", "query_source", "queries_per_doc", "limit", "remove_query", "seed"),
    "triples.jsonl": ("index", "query_source", "queries_per_doc", "limit", "remove_query", "seed", "negatives"),
    "labelled.jsonl": ("index", "query_source", "queries_per_doc", "limit", "remove_query", "seed", "negatives",
                       "reranker"),
    "trained": ("index", "query_source", "queries_per_doc", "limit", "remove_query", "seed", "negatives", "reranker",
                "base", "mlm", "mlm_epochs", "epochs", "batch_size", "lr", "warmup_ratio", "max_grad_norm",
                "max_length", "margin_scale", "loss"),
}
_STEP_OF = {"queries.jsonl": "queries", "triples.jsonl": "mine", "labelled.jsonl": "label", "trained": "train"}


def _as_made(key: str, value: Any) -> Any:
    """A setting as `_same_work` compares it: the index as its full path (`idx`, `idx/` and `./idx` are one index,
    from any working folder)."""
    return str(Path(value).resolve()) if key == "index" and value is not None else value


def _same_work(made_with: dict[str, dict[str, Any]], now: dict[str, Any], steps: tuple[str, ...], work: Path) -> None:
    """Refuses a run whose steps would reuse files of OUT/work that an earlier run made with other settings: a step
    whose file exists is skipped, so the new --lr, --pseudo-queries or --epochs were ignored in silence, and the old
    run's figures reported as this one's (found 2026-12-06). Files recorded before their settings were are let be."""
    for name in _MADE_WITH:
        before = made_with.get(name)
        if not before or _STEP_OF[name] not in steps or not (work / name).exists():
            continue
        changed = [k for k in before if before[k] != _as_made(k, now.get(k))]
        if changed:
            was = ", ".join(f"{k}={before[k]!r} (now {now.get(k)!r})" for k in changed)
            raise BadArgument(f"{work / name} was made by an adapt run with other settings: {was}; this run would reuse "
                              f"it; give another --out, run with those settings, or delete {work} to start over")


def _train(rows: list[dict[str, Any]], out_dir: Path, trained: Path, base: str, *, loss: str, holdout: int, holdout_corpus: int,
           last: str | None, run: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Train the encoder on the triples into `trained`, from checkpoint `last` when not None; `run` (the
    settings) goes beside the checkpoints, so that a later resume can check them."""
    try:
        import datasets
        import torch
        from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
        from sentence_transformers import SentenceTransformerTrainingArguments as Args
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
        from transformers import PrinterCallback
    except ImportError as e:
        raise MissingDependency("datasets accelerate", f"adapting an encoder ({e})") from None
    from ..models import resolve_model_path

    if not rows:
        raise BadArgument("no triples to train on; run the queries and mine steps first"
                          + (" (and label, for margin-mse)" if loss == "margin-mse" else ""))
    cuda = torch.cuda.is_available()
    model = SentenceTransformer(str(resolve_model_path(base)), device="cuda" if cuda else "cpu",
                                local_files_only=True, model_kwargs={"dtype": torch.float32})
    model.max_seq_length = min(kw["max_length"], model.max_seq_length or kw["max_length"])
    rows, check = _holdout(rows, holdout, holdout_corpus, seed=kw["seed"])  # never all of them: at most a tenth
    columns = {"query": [r["query"] for r in rows], "positive": [r["positive"] for r in rows],
               "negative": [r["negative"] for r in rows]}
    scaling: dict[str, Any] = {}
    if loss == "margin-mse":
        scaling = ({"margin_scale": kw["margin_scale"], "chosen": "given"} if kw["margin_scale"] is not None
                   else margin_scale_for(model, rows, seed=kw["seed"]))
        columns["label"] = [r["margin"] * scaling["margin_scale"] for r in rows]
        objective: Any = MarginMSELoss(model)
    else:
        objective = MultipleNegativesRankingLoss(model)
    args = Args(
        **schedule_args(
            checkpoints=out_dir / "checkpoints", epochs=kw["epochs"], batch_size=kw["batch_size"], lr=kw["lr"],
            warmup_ratio=kw["warmup_ratio"], weight_decay=0.01, max_grad_norm=kw["max_grad_norm"], eval_steps=None,
            best_metric=None, steps_per_epoch=math.ceil(len(rows) / kw["batch_size"]), cuda=cuda, bf16=kw["bf16"],
            seed=kw["seed"],
        ),
        # a passage twice in one batch would be its own negative under the in-batch loss
        batch_sampler=BatchSamplers.NO_DUPLICATES if loss == "mnrl" else BatchSamplers.BATCH_SAMPLER,
        data_seed=kw["seed"],
    )
    model.model_card_data.generate_widget_examples = False  # (its progress bar leaked into stderr)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(columns),
                                         loss=objective, callbacks=[progress_callback(kw["progress"])])
    trainer.remove_callback(PrinterCallback)
    held: dict[str, Any] = {}
    if check is not None:
        held = {"queries": len(check.queries), "corpus": len(check.corpus),
                "before": dev_metrics(check(model), HOLDOUT_METRICS, "holdout")}
    output, seconds = run_trainer(trainer, out_dir / "checkpoints", run, last)
    if check is not None:
        held["after"] = dev_metrics(check(trainer.model), HOLDOUT_METRICS, "holdout")
        held["worse"] = held["after"]["ndcg@10"] < held["before"]["ndcg@10"]
        if held["worse"]:
            log.warning("the adapted encoder ranks %d held-out pseudo-queries worse than %s (nDCG@10 %.4f -> %.4f); "
                        "evaluate it before swapping it into an index", len(check.queries), base,
                        held["before"]["ndcg@10"], held["after"]["ndcg@10"])
    trainer.model.save(str(trained))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    how = (f"MarginMSE on {len(rows)} (pseudo-query, positive, negative) triples labelled by a cross-encoder, its "
           f"margins scaled by {scaling['margin_scale']:.4g} ({scaling['chosen']})" if loss == "margin-mse" else
           f"multiple-negatives ranking loss on {len(rows)} (pseudo-query, positive, mined negative) triples")
    checked = (f" Held-out pseudo-queries ({held['queries']}): nDCG@10 {held['before']['ndcg@10']:.4f} before, "
               f"{held['after']['ndcg@10']:.4f} after." if held else "")
    (trained / "README.md").write_text(
        f"# Bi-encoder adapted by bertsearch\n\nStarted from `{base}`; trained with {how}.{checked} "
        "See adapt.json.\n", encoding="utf-8")
    return {"base": base, "loss": loss, "triples": len(rows), **scaling, "steps": trainer.state.global_step,
            "train_loss": output.training_loss, "seconds": round(seconds, 1), "resumed_from": last, "holdout": held}


def _other_runs(others: tuple[str | Path, ...], trained: Path, start: str) -> list[Path]:
    """The trained encoders of other adapt runs to average in (`--with`): a run's OUT (its work/trained) or
    a model folder. Each must have been trained from the same start model, or averaging mixes unrelated
    weights; a run that recorded another start is refused."""
    runs: list[Path] = []
    seen = {trained.resolve()}
    for other in map(Path, others):
        folder = other / "work" / "trained" if (other / "work" / "trained" / "modules.json").is_file() else other
        if not (folder / "modules.json").is_file():
            raise BadArgument(f"--with {other}: no trained encoder there (neither {other}/work/trained nor a "
                              f"sentence-transformers folder); run `bertsearch adapt --out {other}` first")
        if folder.resolve() in seen:
            raise BadArgument(f"--with {other}: that trained encoder is already in the average; name each run once")
        seen.add(folder.resolve())
        run = folder.parent.parent if folder.name == "trained" and folder.parent.name == "work" else other
        steps = json.loads((run / "adapt.json").read_text()).get("steps", {}) if (run / "adapt.json").is_file() else {}
        if folder == other and steps.get("average", {}).get("average", 1) < 1:
            raise BadArgument(f"--with {other}: that folder holds an averaged encoder and its trained weights "
                              f"({other}/work/trained) are gone; run `bertsearch adapt --out {other}` again")
        recorded = steps.get("train", {}).get("adapted_from")
        if recorded and _where(recorded) != _where(start):
            raise BadArgument(f"--with {other} was trained from {recorded}, this run from {start}: only encoders "
                              "trained from the same start model can be averaged")
        runs.append(folder)
    return runs


def _where(model: str) -> str:
    """Where a model's weights are (its name when they cannot be found), to tell two names of one model apart."""
    from ..errors import ModelNotFound
    from ..models import resolve_model_path

    try:
        return str(resolve_model_path(model))
    except ModelNotFound:
        return model


def _average(runs: list[Path], start: str, alpha: float, out_dir: Path, rows: list[dict[str, Any]], *, holdout: int,
             holdout_corpus: int, seed: int) -> dict[str, Any]:
    """OUT as `alpha` x the trained weights + (1 - alpha) x the start model's (weight-space ensembling, as in
    WiSE-FT), with the held-out pseudo-queries ranked by the result. On SciFact the trained encoder alone
    lost to the packaged one (dense nDCG@10 0.656 -> 0.612) and the average at 0.5 beat both on dense
    (0.662) with hybrid level: the average keeps what the packaged model knows and part of what training
    added. With several runs (`runs[0]` this one's, the rest from `--with`), their mean stands for the
    trained weights (a model soup): each run's own drift partly cancels out."""
    import torch
    from sentence_transformers import SentenceTransformer

    from ..models import resolve_model_path

    t0 = time.perf_counter()
    load: dict[str, Any] = {"device": "cpu", "local_files_only": True, "model_kwargs": {"dtype": torch.float32}}
    trained = runs[0]
    model = SentenceTransformer(str(trained), **load)
    ours = model.state_dict()
    # each run weighs alpha / len(runs), the start model 1 - alpha
    parts = [(alpha / len(runs), ours, "")]
    parts += [(alpha / len(runs), SentenceTransformer(str(r), **load).state_dict(),
               f"the trained encoder and --with {r} differ in shape and cannot be averaged") for r in runs[1:]]
    if alpha < 1:
        parts.append((1 - alpha, SentenceTransformer(str(resolve_model_path(start)), **load).state_dict(),
                      (f"the trained encoder and {start} differ in shape and cannot be averaged; "
                       "use --average 1 to keep the trained weights as they are")))
    for _, theirs, mismatch in parts[1:]:
        if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
            raise BadArgument(mismatch)
    model.load_state_dict({k: sum(w * sd[k] for w, sd, _ in parts) if v.is_floating_point() else v
                           for k, v in ours.items()})
    for stale in ("model.safetensors", "pytorch_model.bin"):
        (out_dir / stale).unlink(missing_ok=True)
    model.save(str(out_dir))
    info: dict[str, Any] = {"average": alpha, "with": start, "runs": [str(r) for r in runs]}
    _, check = _holdout(rows, holdout, holdout_corpus, seed=seed)
    if check is not None:
        info["holdout"] = dev_metrics(check(model), HOLDOUT_METRICS, "holdout")
    if check is not None and len(runs) > 1:  # the other runs held out their own documents, not these
        info["note"] = "the held-out pseudo-queries were kept out of this run only; the --with runs may have trained on them"
    trained_card = (trained / "README.md").read_text(encoding="utf-8") if (trained / "README.md").is_file() else ""
    soup = "" if len(runs) == 1 else (f" The trained weights are the mean of {len(runs)} runs' (this one's and "
                                      + ", ".join(f"`{r}`" for r in runs[1:]) + ").")
    mixed = soup + ("" if alpha == 1 else f" Then averaged with `{start}`: {alpha:.3g} x the trained weights + "
             f"{1 - alpha:.3g} x its own" + (f" (held-out pseudo-queries: nDCG@10 {info['holdout']['ndcg@10']:.4f})"
                                            if "holdout" in info else "") + "; the trained weights are in work/trained.")
    (out_dir / "README.md").write_text(trained_card.rstrip().replace(" See adapt.json.", "") + mixed
                                       + " See adapt.json.\n", encoding="utf-8")
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return info


def _holdout(rows: list[dict[str, Any]], n: int, corpus_size: int, *, seed: int) -> tuple[list[dict[str, Any]], Any]:
    """The training rows without those of `n` seeded documents (at most a tenth of them), and an evaluator
    that ranks one pseudo-query
    of each held-out document against its positive and up to `corpus_size` other passages (None when n is 0)."""
    docs = sorted({r["doc_id"] for r in rows})
    if n == 0 or len(docs) < 2:
        return rows, None
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    held = set(random.Random(f"{seed}:holdout").sample(docs, min(n, max(1, len(docs) // 10))))  # at most a tenth
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for r in rows:
        if r["doc_id"] in held and f"q:{r['doc_id']}" not in queries:
            queries[f"q:{r['doc_id']}"] = r["query"]
            corpus[f"p:{r['doc_id']}"] = r["positive"]
            relevant[f"q:{r['doc_id']}"] = {f"p:{r['doc_id']}"}
    train = [r for r in rows if r["doc_id"] not in held]
    others = sorted({r["negative"] for r in train if r.get("negative_id") not in held})
    for i, text in enumerate(random.Random(seed).sample(others, min(corpus_size, len(others)))):
        corpus[f"n:{i}"] = text
    evaluator = InformationRetrievalEvaluator(
        queries=queries, corpus=corpus, relevant_docs=relevant, name="holdout", ndcg_at_k=[10], mrr_at_k=[10],
        accuracy_at_k=[1], precision_recall_at_k=[10], map_at_k=[10], batch_size=32, show_progress_bar=False)
    return train, evaluator


def margin_scale_for(model: Any, rows: list[dict[str, Any]], *, sample: int = 256, seed: int = 42) -> dict[str, Any]:
    """The factor that gives the cross-encoder's margins the spread (standard deviation) of the bi-encoder's
    own margins, s(q, p) - s(q, n) with MarginMSE's dot product, on a seeded sample of the triples."""
    import torch

    part = random.Random(seed).sample(rows, min(sample, len(rows)))
    with torch.no_grad():
        q, p, n = (model.encode([r[key] for r in part], convert_to_tensor=True, batch_size=32, show_progress_bar=False)
                   for key in ("query", "positive", "negative"))
    student = ((q * p).sum(-1) - (q * n).sum(-1)).float()
    teacher = torch.tensor([r["margin"] for r in part], dtype=torch.float32)
    s_std, t_std = float(student.std()) if len(part) > 1 else 0.0, float(teacher.std()) if len(part) > 1 else 0.0
    scale = s_std / t_std if s_std > 0 and t_std > 0 else 1.0
    return {"margin_scale": round(scale, 6), "chosen": f"spread of the encoder's margins on {len(part)} triples",
            "encoder_margin_std": round(s_std, 4), "teacher_margin_std": round(t_std, 4)}


def _mlm(index: str | Path, out: Path, base: str, *, epochs: int, batch_size: int, lr: float, max_length: int,
         bf16: bool, seed: int, limit: int | None, progress: ProgressFactory = no_progress) -> Path:
    """Masked-language-model pre-training on the index's documents; returns a sentence-transformers folder
    whose transformer is the adapted encoder (mean pooling, as the base)."""
    import datasets
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
    )
    from transformers import TrainingArguments as Args

    from ..engine import Index
    from ..models import resolve_model_path

    if (out / "modules.json").is_file():
        return out
    st = SentenceTransformer(str(resolve_model_path(base)), device="cpu", local_files_only=True)
    raw = out / "transformer"
    st[0].auto_model.save_pretrained(str(raw))
    st.tokenizer.save_pretrained(str(raw))
    tok = AutoTokenizer.from_pretrained(str(raw))
    mlm_model = AutoModelForMaskedLM.from_pretrained(str(raw), dtype=torch.float32)  # the head is new when absent
    with Index.open(index) as ix:
        ids = sorted(ix.store.ids())
        if limit is not None:
            ids = sorted(random.Random(seed).sample(ids, min(limit, len(ids))))
        texts = [ix.get(i)["text"] for i in ids]
    data = datasets.Dataset.from_dict({"text": texts}).map(
        lambda b: tok(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"])
    collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15)  # 80% [MASK], 10% random, 10% kept
    warmup = warmup_steps(0.1, math.ceil(len(data) / batch_size) * epochs)
    args = Args(output_dir=str(out / "checkpoints"), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                learning_rate=lr, warmup_steps=warmup, lr_scheduler_type="linear", max_grad_norm=1.0, save_strategy="no",
                use_cpu=not torch.cuda.is_available(), bf16=bf16, seed=seed, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=mlm_model, args=args, train_dataset=data, data_collator=collator,
                      callbacks=[progress_callback(progress)])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    check_finite(mlm_model, "masked-LM model")
    missing, _ = st[0].auto_model.load_state_dict(mlm_model.base_model.state_dict(), strict=False)
    if any(not k.startswith("pooler") for k in missing):
        raise BadArgument(f"the masked-LM encoder does not fit {base}: missing {missing[:3]}")
    shutil.rmtree(raw, ignore_errors=True)
    st.save(str(out))  # the base's pooling and normalisation, with the adapted encoder
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.replace(path)  # a step's file exists only once it is complete


def _read_jsonl(path: Path, step: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BadArgument(f"{path} is missing: run the '{step}' step first (--steps {step})")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
