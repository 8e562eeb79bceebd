"""End-to-end question answering: retrieve, rerank and read over a whole corpus, scored by SQuAD's EM/F1.

The dataset is a BEIR folder whose queries are SQuAD questions (`../shared/data/squad-dev-retrieval`:
the 2,067 SQuAD dev paragraphs as corpus) and a SQuAD file holding their gold answers. Unlike `eval
squad`, where the reader is handed the right paragraph, here it must first be found among all of them.

The reader reads the top passages once per question; every answer-scoring variant (see
`engine.rank_answers`) is then scored from those same spans, so variants compare on equal terms.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from ..errors import BadArgument, CorpusError
from .beir import ProgressFactory, default_index_path, no_progress
from .squad import exact_match, f1, load_squad

# (scoring, passage weight, whether the calibration's ranker then orders the candidates; the last is Index.ask's)
DEFAULT_VARIANTS = (("span", 0.0, False), ("margin", 0.0, False), ("margin", 0.5, False), ("margin", 1.0, False),
                    ("margin", 0.5, True))


def evaluate_ask(
    dataset: str | Path,
    answers_file: str | Path,
    *,
    split: str = "test",
    mode: str = "hybrid",
    index_path: str | Path | None = None,
    model: str | None = None,
    reranker: str | None = None,
    reader: str | None = None,
    rerank: bool = True,
    passages: int = 5,
    limit: int | None = 200,
    seed: int = 42,
    variants: tuple[tuple[str, float, bool], ...] = DEFAULT_VARIANTS,
    precision: str = "auto",
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """EM/F1 of the best answer `Index.ask` would give, per answer-scoring variant, on a seeded sample of
    `limit` judged questions; also how often the gold paragraph was among the passages read, how often
    it abstained, by the calibrated confidence as `Index.ask` decides (an abstention scores 0: every SQuAD v1.1 question has an answer), and EM/F1 had
    it never abstained."""
    from ..engine import Index, rank_answers
    from ..readers import count_records
    from ..readers.beir import load_qrels, load_queries
    from ..search.qa import CANDIDATES, judge, shortlist

    dataset = Path(dataset)
    if not (dataset / "corpus.jsonl").is_file():
        raise CorpusError(f"{dataset} is not a BEIR folder (no corpus.jsonl)")
    if passages < 1:
        raise BadArgument(f"passages must be at least 1, not {passages}")
    gold = {ex.id: ex.answers for ex in load_squad(answers_file)}
    qrels = load_qrels(dataset, split)
    queries = load_queries(dataset)
    qids = [q for q in qrels if q in queries and q in gold]
    if not qids:
        raise CorpusError(f"none of the questions judged in {dataset} have answers in {answers_file}")
    judged = len(qids)
    if limit is not None and limit < len(qids):
        qids = sorted(random.Random(seed).sample(qids, limit))
    path = Path(index_path) if index_path is not None else default_index_path(dataset, model)
    totals = {v: {"exact_match": 0.0, "f1": 0.0, "abstained": 0, "em_always": 0.0, "f1_always": 0.0} for v in variants}
    found = 0
    t0 = time.perf_counter()
    with Index.open(path, model=model, create=True, reranker=reranker, reader=reader, precision=precision) as ix:
        with progress("indexing", count_records(dataset, "beir"), "docs") as advance:
            ix.add_corpus(dataset, format="beir", on_progress=advance)
        t0 = time.perf_counter()
        with progress("answering", len(qids), "questions") as advance:
            for q in qids:
                hits = ix.search(queries[q], k=passages, mode=mode, rerank=rerank)
                found += any(h.doc_id in qrels[q] for h in hits)
                spans = ix.reader.read(queries[q], [h.text for h in hits], per_passage=CANDIDATES) if hits else []
                for v in variants:
                    pool = rank_answers(spans, hits, scoring=v[0], passage_weight=v[1])
                    ranked = shortlist(pool, hits, ix.calibration if v[2] else None, CANDIDATES)
                    if not ranked:
                        totals[v]["abstained"] += 1
                        continue
                    text = ranked[0].text
                    em, f = max(exact_match(text, g) for g in gold[q]), max(f1(text, g) for g in gold[q])
                    totals[v]["em_always"] += em  # as if the reader never abstained
                    totals[v]["f1_always"] += f
                    if judge(ranked, hits, ix.calibration, None, pool).abstained:  # as `Index.ask` decides
                        totals[v]["abstained"] += 1
                        continue
                    totals[v]["exact_match"] += em
                    totals[v]["f1"] += f
                advance(1)
        seconds = time.perf_counter() - t0
        threshold = ix.calibration.min_confidence if ix.calibration is not None else None
        reader_name = ix.reader.name
    n = len(qids)
    results = [
        {
            "scoring": v[0],
            "passage_weight": v[1],
            "ranker": v[2],
            "exact_match": round(100 * t["exact_match"] / n, 2),
            "f1": round(100 * t["f1"] / n, 2),
            "abstained": round(t["abstained"] / n, 4),
            "exact_match_never_abstaining": round(100 * t["em_always"] / n, 2),
            "f1_never_abstaining": round(100 * t["f1_always"] / n, 2),
        }
        for v, t in totals.items()
    ]
    return {
        "dataset": dataset.resolve().name,
        "questions": n,
        "sampled_from": judged if n < judged else None,
        "mode": mode,
        "rerank": rerank,
        "passages": passages,
        "gold_paragraph_read": round(found / n, 4),
        "reader": reader_name,
        "min_confidence": threshold,
        "variants": results,
        "seconds": round(seconds, 1),
        "seconds_per_question": round(seconds / n, 3),
    }
