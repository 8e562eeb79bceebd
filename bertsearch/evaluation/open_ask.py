"""Open-corpus question answering: the two cases a user meets, the answer in the index or not in it at all.

SQuAD v1.1 dev's 48 articles are dealt, by a seeded shuffle, into four groups: dev-indexed, dev-absent,
test-indexed and test-absent. The paragraphs of the indexed groups make one index. The questions of an indexed
article are *answerable* (their paragraph is in the index); those of an absent article are *out of corpus*
(nothing in the index speaks of their article); SQuAD v2.0's unanswerable questions on an indexed article, written
to have a plausible answer in their own paragraph, are a third, *adversarial*, case that is reported but not
tuned for. The confidence is fitted, and the default `min_confidence` chosen, on the dev groups' questions; the
figures are reported on the test groups', which nothing was tuned on.

`collect` runs the pipeline (hybrid retrieval, cross-encoder rerank, the reader over the top passages) once per
question and keeps everything the answer and its confidence are computed from, so that `fit` and `report` run
again in a second, without the models.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BadArgument, CorpusError
from ..search.qa import CANDIDATES
from .beir import ProgressFactory, no_progress
from .squad import exact_match, f1

GROUPS = ("dev-indexed", "dev-absent", "test-indexed", "test-absent")
CASES = ("answerable", "out_of_corpus", "adversarial")

log = logging.getLogger(__name__)


def deal_articles(titles: list[str], seed: int = 0) -> dict[str, str]:
    """Each article title -> its group, dealt round-robin over a seeded shuffle (12 articles a group)."""
    order = sorted(titles)
    random.Random(seed).shuffle(order)
    return {t: GROUPS[i % len(GROUPS)] for i, t in enumerate(order)}


def load_articles(path: str | Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError) as e:
        raise CorpusError(f"{path} is not a SQuAD JSON file ({e})") from None
    return data


def paragraphs(articles: list[dict[str, Any]], groups: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The documents of the index: every paragraph of an indexed article."""
    for art in articles:
        if groups.get(art["title"], "").endswith("indexed"):
            for i, p in enumerate(art["paragraphs"]):
                yield {"id": f"{art['title']}_{i}", "title": art["title"].replace("_", " "), "text": p["context"]}


def questions(v11: list[dict[str, Any]], v20: list[dict[str, Any]] | None, groups: dict[str, str],
              per_case: dict[str, int | None], seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of questions per split and case (None: all of them): {qid, split, case, question, gold,
    paragraph}."""
    pools: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for art in v11:
        group = groups[art["title"]]
        split, where = group.split("-")
        case = "answerable" if where == "indexed" else "out_of_corpus"
        for i, p in enumerate(art["paragraphs"]):
            for qa in p["qas"]:
                pools.setdefault((split, case), []).append({
                    "qid": qa["id"], "split": split, "case": case, "question": qa["question"],
                    "gold": sorted({a["text"] for a in qa["answers"]}), "paragraph": f"{art['title']}_{i}",
                })
    for art in v20 or []:
        group = groups.get(art["title"])
        if group is None or not group.endswith("indexed"):
            continue
        split = group.split("-")[0]
        for p in art["paragraphs"]:
            for qa in p["qas"]:
                if qa.get("is_impossible"):
                    pools.setdefault((split, "adversarial"), []).append({
                        "qid": qa["id"], "split": split, "case": "adversarial", "question": qa["question"],
                        "gold": [], "paragraph": None,
                    })
    out = []
    for (split, case), pool in sorted(pools.items()):
        n = per_case.get(case, 0)
        pool = sorted(pool, key=lambda q: q["qid"])
        if n is not None and n < len(pool):
            pool = sorted(random.Random(f"{seed}-{split}-{case}").sample(pool, n), key=lambda q: q["qid"])
        out.extend(pool)
    return out


def pipeline(ix: Any, passages: int) -> dict[str, Any]:
    """What made a record's answers: the weights of the encoder, cross-encoder and reader, the runtime and precision
    each ran in (the answers differ a little between them), and the passages read."""
    return {"encoder": ix.config.fingerprint, "reranker": ix.reranker.fingerprint(), "reader": ix.reader.fingerprint(),
            "passages": passages,
            "runtime": {"encoder": f"{ix.config.backend} {getattr(ix.encoder, 'vector_precision', 'fp32')}",
                        "reranker": _runtime(ix.reranker), "reader": _runtime(ix.reader)}}


def _runtime(model: Any) -> str:
    model = getattr(model, "inner", model)  # the model under the index's thread-sharing wrapper
    return f"{type(model).__name__} {'bf16' if getattr(model, 'uses_bf16', False) else 'fp32'}"


def collect(ix: Any, qs: list[dict[str, Any]], out: Path, *, passages: int = 5, per_passage: int = CANDIDATES,
            progress: ProgressFactory = no_progress) -> list[dict[str, Any]]:
    """Ask each question through `ix` and append a record per question to `out` (JSONL); questions already in
    `out` are not asked again, so an interrupted run resumes. Records that other models made are refused: they
    would report those models' answers as these'."""
    made_by = pipeline(ix, passages)
    done = {}
    if out.exists():
        for line in out.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["qid"]] = r
    _check_made_by(out, done.values(), made_by)
    todo = [q for q in qs if q["qid"] not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f, progress("asking", len(todo), "questions") as advance:
        for q in todo:
            hits = ix.search(q["question"], k=passages, rerank=True)
            spans = ix.reader.read(q["question"], [h.text for h in hits], per_passage=per_passage) if hits else []
            r = {**q,
                 "hits": [{"doc_id": h.doc_id, "title": h.title, "start": h.start, "end": h.end,
                           "rerank": h.scores.get("rerank"), "hybrid": h.scores.get("hybrid")} for h in hits],
                 "spans": span_records(spans),
                 "timings": hits.timings, "pipeline": made_by}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            done[q["qid"]] = r
            advance(1)
    return [done[q["qid"]] for q in qs]


def span_records(spans: list[Any]) -> list[dict[str, Any]]:
    """The reader's spans as a record keeps them (`Span(**d)` reads one back)."""
    return [{"passage": s.passage, "text": s.text, "start": s.start, "end": s.end, "score": s.score,
             "null_score": s.null_score} for s in spans]


def _check_made_by(out: Path, records: Any, made_by: dict[str, Any]) -> None:
    unknown = 0
    unsaid: set[str] = set()  # what records of an older version do not say (the runtime, before 2026-12-06)
    for r in records:
        theirs = r.get("pipeline")
        if theirs is None:
            unknown += 1
            continue
        unsaid |= {k for k in made_by if k not in theirs}
        differ = [k for k in made_by if k in theirs and theirs[k] != made_by[k]]
        if differ:
            raise BadArgument(
                f"{out} holds answers of another pipeline ({', '.join(f'{k} {theirs.get(k)}, not {made_by[k]}' for k in differ)}):"
                " give --records a new file, or delete it to ask afresh")
    if unknown:
        log.warning("%d records in %s do not say which models made them (collected before bertsearch recorded it); "
                    "they are reused as they are: delete the file to ask afresh with these models", unknown, out)
    if unsaid:
        log.warning("records in %s do not say their %s (collected before bertsearch recorded it); they are reused as "
                    "they are: delete the file to ask afresh", out, " or ".join(sorted(unsaid)))


def correct(record: dict[str, Any], text: str) -> tuple[float, float]:
    """EM and F1 of an answer text against the record's gold answers (0 for a question that has none)."""
    if not record["gold"]:
        return 0.0, 0.0
    return max(exact_match(text, g) for g in record["gold"]), max(f1(text, g) for g in record["gold"])


def read_records(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise BadArgument(f"no records at {p}; run the collection first")
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]



def build_and_collect(
    squad_v11: str | Path,
    records: str | Path,
    *,
    squad_v20: str | Path | None = None,
    index_path: str | Path | None = None,
    model: str | None = None,
    reranker: str | None = None,
    reader: str | None = None,
    per_case: dict[str, int | None] | None = None,
    passages: int = 5,
    seed: int = 0,
    precision: str = "auto",
    progress: ProgressFactory = no_progress,
) -> list[dict[str, Any]]:
    """Index the indexed groups' paragraphs (once; later runs reuse the index) and collect the records."""
    from ..engine import Index

    v11 = load_articles(squad_v11)
    v20 = load_articles(squad_v20) if squad_v20 is not None else None
    groups = deal_articles([a["title"] for a in v11], seed)
    per_case = per_case if per_case is not None else {"answerable": None, "out_of_corpus": 300, "adversarial": 200}
    qs = questions(v11, v20, groups, per_case, seed)
    path = Path(index_path) if index_path is not None else Path("indexes") / f"squad-open-{seed}"
    with Index.open(path, model=model, create=True, reranker=reranker, reader=reader, precision=precision) as ix:
        docs = list(paragraphs(v11, groups))
        with progress("indexing", len(docs), "docs") as advance:
            ix.add(docs, on_progress=advance, prune=True, prune_unrelated=True)
        return collect(ix, qs, Path(records), passages=passages, progress=progress)


# -- fitting and reporting (no models: the records hold everything) ---------------------------------------


def candidates(record: dict[str, Any], cal: Any = None, *, k: int | None = CANDIDATES, reranked: bool = True,
               scoring: str = "margin", passage_weight: float = 0.5) -> tuple[list, list, list]:
    """The record's answer candidates as `Index.ask` shows them (distinct, in `cal`'s ranker's order when it has
    one, the first `k`; None: all), its hits, and every span ranked (what `distinct` chose from). `reranked=False`:
    as a search without the cross-encoder would see them."""
    from ..search.qa import rank_answers, shortlist
    from ..types import Hit, Span

    hits = [Hit(rank=i + 1, doc_id=h["doc_id"], score=0.0, title=h.get("title", ""), text="", chunk_id=None,
                start=h["start"], end=h["end"],
                scores={"rerank": h["rerank"]} if reranked and h.get("rerank") is not None else {})
            for i, h in enumerate(record["hits"])]
    spans = [Span(**s) for s in record["spans"]]
    pool = rank_answers(spans, hits, scoring=scoring, passage_weight=passage_weight)
    return shortlist(pool, hits, cal, len(pool) if k is None else k), hits, pool


def fit(records: list[dict[str, Any]], *, split: str = "dev", max_abstained: float = 0.10) -> Any:
    """Fit the calibration on the `split` questions of the answerable and out-of-corpus cases: first the ranker
    (the expected F1 of every distinct candidate of the answerable questions), then, on the answer each question
    then gets, the confidence (F1 >= 0.5) and the no-answer probability (out of corpus); and choose
    `min_confidence`: the bar that maximises the mean of answerable F1 (an abstention scores 0) and the
    out-of-corpus no-answer rate, among those that abstain on at most `max_abstained` of answerable questions for
    nine corpora in ten like the dev articles (the 90th percentile of a bootstrap over them: how often a question
    goes unanswered varies more between articles than between questions, from 3% to 22% at one bar over SQuAD's,
    so a bar that met the cap only on the dev articles' mean would break it on about half of corpora). Each model
    is fitted twice, with and without the cross-encoder's scores (for searches not reranked)."""
    from ..search import confidence as conf

    dev = [r for r in records if r["split"] == split and r["case"] in ("answerable", "out_of_corpus")]
    missing = [c for c in ("answerable", "out_of_corpus") if not any(r["case"] == c for r in dev)]
    if missing:
        raise BadArgument(f"no {' or '.join(c.replace('_', '-') for c in missing)} {split} questions to fit the "
                          "calibration on: give --per-case at least one of each")
    models: dict[str, Any] = {}
    for plain in (False, True):
        prefix = "plain_" if plain else ""
        rows, expected = [], []
        for r in dev:
            if r["case"] == "answerable":
                shown, hits, pool = candidates(r, k=None, reranked=not plain)
                rows += conf.features(shown, hits, pool)
                expected += [correct(r, c.text)[1] for c in shown]
        ranker = conf.Logistic.fit(rows, expected, features=conf.RANK_FEATURES) if rows else None
        order = conf.Calibration(confidence=None, no_answer=None, min_confidence=0.0, ranker=ranker)
        rows, right, absent = [], [], []
        for r in dev:
            shown, hits, pool = candidates(r, order, reranked=not plain)
            if shown:
                rows.append(conf.features(shown, hits, pool)[0])
                right.append(float(correct(r, shown[0].text)[1] >= 0.5))
                absent.append(float(r["case"] == "out_of_corpus"))
        models[prefix + "ranker"] = ranker
        models[prefix + "confidence"] = conf.Logistic.fit(rows, right)
        models[prefix + "no_answer"] = conf.Logistic.fit(rows, absent)
    cal = conf.Calibration(min_confidence=0.0, **models)
    judged = _judged(dev, cal)
    answerable = [(j, r) for j, r in zip(judged, dev) if r["case"] == "answerable"]
    bound = _abstained_bound([j for j, _ in answerable], [article(r) for _, r in answerable])
    best, chosen = None, 0.0
    for bar in [i / 100 for i in range(96)]:
        if bound(bar) > max_abstained:
            continue
        m = _measure(judged, bar)
        score = (m["answerable"]["f1"] / 100 + m["out_of_corpus"]["no_answer"]) / 2
        if best is None or score > best + 1e-12:
            best, chosen = score, bar
    cal.min_confidence = chosen
    cal.fitted_on = {"split": split, "questions": len(dev), "max_answerable_abstained": max_abstained,
                     "rule": "best mean of answerable F1 and out-of-corpus no-answer rate, the cap held by the 90th "
                             "percentile of a bootstrap over the articles",
                     "answerable_abstained": _measure(judged, chosen)["answerable"]["abstained"],
                     "answerable_abstained_90th_percentile": round(bound(chosen), 4)}
    return cal


def article(record: dict[str, Any]) -> str:
    """The SQuAD article a question was written on (its paragraph's id is TITLE_N)."""
    return (record.get("paragraph") or "").rsplit("_", 1)[0]


def _abstained_bound(judged: list[dict[str, Any]], articles: list[str], *, quantile: float = 90.0,
                     resamples: int = 2000, seed: int = 0) -> Any:
    """bar -> the `quantile`th percentile of the abstention rate over `resamples` bootstrap draws of the articles
    (each drawn article bringing all its questions)."""
    import numpy as np

    names = sorted(set(articles))
    which = np.asarray([names.index(a) for a in articles])
    confidence = np.asarray([j["confidence"] if j["found"] and j["confidence"] is not None else
                             (-1.0 if not j["found"] else 2.0) for j in judged])  # no candidate: always abstains
    asked = np.bincount(which, minlength=len(names)).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))

    def bound(bar: float) -> float:
        abstained = np.bincount(which, weights=(confidence < bar).astype(float), minlength=len(names))
        return float(np.percentile(abstained[draws].sum(axis=1) / asked[draws].sum(axis=1), quantile))

    return bound


def _judged(records: list[dict[str, Any]], cal: Any) -> list[dict[str, Any]]:
    """Per record, what any bar's verdict needs: its case, the best candidate's confidence (None without one; a
    calibration without a bar answers it), and that candidate's EM and F1."""
    from ..search.qa import judge

    out = []
    for r in records:
        ranked, hits, pool = candidates(r, cal)
        p = None
        if ranked:
            p = judge(ranked, hits, cal, 0.0, pool).confidences[0]
        em, f = correct(r, ranked[0].text) if ranked else (0.0, 0.0)
        out.append({"case": r["case"], "found": bool(ranked), "confidence": p, "em": em, "f1": f})
    return out


def measure(records: list[dict[str, Any]], cal: Any, bar: float | None = None, *, bins: int = 10) -> dict[str, Any]:
    """By case: F1 and EM (an abstention scores 0), abstained, answered wrongly (F1 < 0.5), and for answerable
    questions F1 had it never abstained; the expected calibration error of the answer confidence over the
    answerable and out-of-corpus questions; the reliability table. Without a calibration (`cal` None): the
    reader's order, answering whenever a span is found."""
    if bar is None:
        bar = cal.min_confidence if cal is not None else 0.0
    return _measure(_judged(records, cal), bar, bins=bins)


def _measure(judged: list[dict[str, Any]], bar: float, *, bins: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conf_pairs: list[tuple[float, float]] = []
    for case in CASES:
        js = [j for j in judged if j["case"] == case]
        if not js:
            continue
        em = f = f_always = abst = wrong = 0.0
        for j in js:
            if j["found"]:
                f_always += j["f1"]
                if case != "adversarial" and j["confidence"] is not None:
                    conf_pairs.append((j["confidence"], float(j["f1"] >= 0.5)))
            if not j["found"] or (j["confidence"] is not None and j["confidence"] < bar):
                abst += 1
                continue
            em += j["em"]
            f += j["f1"]
            wrong += j["f1"] < 0.5
        n = len(js)
        out[case] = {"questions": n, "f1": round(100 * f / n, 2), "exact_match": round(100 * em / n, 2),
                     "abstained": round(abst / n, 4), "no_answer": round(abst / n, 4),
                     "answered_wrongly": round(wrong / n, 4), "f1_never_abstaining": round(100 * f_always / n, 2)}
    out["calibration"] = reliability(conf_pairs, bins)
    out["min_confidence"] = bar
    return out


def reliability(pairs: list[tuple[float, float]], bins: int = 10) -> dict[str, Any]:
    """Expected calibration error (equal-width bins, weighted by count) and the per-bin table."""
    table = []
    ece = 0.0
    n = len(pairs)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in pairs if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if not inside:
            continue
        conf = sum(p for p, _ in inside) / len(inside)
        acc = sum(y for _, y in inside) / len(inside)
        ece += len(inside) / n * abs(acc - conf)
        table.append({"bin": [lo, hi], "count": len(inside), "confidence": round(conf, 4), "accuracy": round(acc, 4)})
    return {"ece": round(ece, 4), "questions": n, "bins": table}


def old_rule(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """What the reader's raw no-answer margin did before calibration: abstain when "no answer" beats the best
    span by more than `threshold` logits (span scoring by margin plus half the passage's cross-encoder score)."""
    from ..search.qa import rank_answers
    from ..types import Span

    out = {}
    for case in CASES:
        rs = [r for r in records if r["case"] == case]
        if not rs:
            continue
        f = abst = 0.0
        for r in rs:
            _, hits, _ = candidates(r, k=1)
            ranked = rank_answers([Span(**s) for s in r["spans"]], hits, scoring="margin", passage_weight=0.5)
            if not ranked or ranked[0].null_score - ranked[0].score > threshold:
                abst += 1
                continue
            f += correct(r, ranked[0].text)[1]
        out[case] = {"f1": round(100 * f / len(rs), 2), "abstained": round(abst / len(rs), 4)}
    return out


def plot_reliability(calibration: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """A reliability diagram (PNG) of `measure(...)["calibration"]`, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    bins = calibration["bins"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.bar([(b["bin"][0] + b["bin"][1]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09,
           alpha=0.6, label="share right, per bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="C1",
            label="mean confidence vs share right")
    for b in bins:
        ax.annotate(str(b["count"]), ((b["bin"][0] + b["bin"][1]) / 2, b["accuracy"]), ha="center",
                    va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("answer confidence")
    ax.set_ylabel("share of answers right (F1 >= 0.5)")
    ax.set_title(title or f"ECE {calibration['ece']:.3f} over {calibration['questions']} questions", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def evaluate_open_corpus(
    squad_v11: str | Path,
    *,
    squad_v20: str | Path | None = None,
    records: str | Path | None = None,
    fit_to: str | Path | None = None,
    plot: str | Path | None = None,
    per_case: dict[str, int | None] | None = None,
    seed: int = 0,
    progress: ProgressFactory = no_progress,
    **index_kwargs: Any,
) -> dict[str, Any]:
    """The open-corpus evaluation: collect (or reuse) the records, fit a calibration on the dev split when
    `fit_to` names a file to write it to (else use the reader's own), and report on the test split."""
    from ..models.reader import DEFAULT_READER_PATH
    from ..search import confidence as conf

    records_path = Path(records) if records is not None else Path("indexes") / f"squad-open-{seed}.records.jsonl"
    recs = build_and_collect(squad_v11, records_path, squad_v20=squad_v20, per_case=per_case, seed=seed,
                             progress=progress, **index_kwargs)
    if fit_to is not None:
        cal = fit(recs)
        cal.save(fit_to)
    else:
        reader = index_kwargs.get("reader")
        cal = conf.load(reader if reader not in (None, "default") else DEFAULT_READER_PATH)
        if cal is None:
            raise BadArgument("the reader has no confidence calibration; pass --fit FILE to fit one")
    test = [r for r in recs if r["split"] == "test"]
    dev = [r for r in recs if r["split"] == "dev"]
    threshold = _reader_threshold(index_kwargs.get("reader"))
    report = {
        "records": str(records_path),
        "seed": seed,
        "min_confidence": cal.min_confidence,
        "test": measure(test, cal),
        "dev": measure(dev, cal),
        "test_before_calibration": old_rule(test, threshold) if threshold is not None else None,
        "reader_threshold": threshold,
        "calibration": str(fit_to) if fit_to is not None else "the reader's own",
    }
    if plot is not None:
        drawn = plot_reliability(report["test"]["calibration"], plot,
                                 f"test split: ECE {report['test']['calibration']['ece']:.3f} over "
                                 f"{report['test']['calibration']['questions']} questions")
        report["plot"] = str(drawn) if drawn else "not drawn: matplotlib is not installed"
    return report


def _reader_threshold(reader: str | None) -> float | None:
    from ..models.reader import DEFAULT_READER_PATH, _read_settings

    path = DEFAULT_READER_PATH if reader in (None, "default") else Path(reader)
    value = _read_settings(path).get("no_answer_threshold") if path.is_dir() else None
    return float(value) if value is not None else None
