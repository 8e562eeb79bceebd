"""Train a cross-encoder reranker on SQuAD, or on your own query/passage pairs, with the sentence-transformers
CrossEncoderTrainer.

The script reads as numbered steps: model, data, loss, evaluator, arguments, trainer, train, save, evaluate.

Data. From a SQuAD file, each question's own paragraph is its positive, and its hard negatives are other
paragraphs of the same article and the top BM25 paragraphs among all paragraphs of the file (bertsearch's
own FTS5 index), sampled with the seed. A negative is never the positive, nor a paragraph that contains
one of the question's answers: that one is likely relevant after all (DPR filters BM25 negatives the same
way). A pairs file (JSONL or CSV/TSV) brings its own negatives; a query with fewer than asked for gets
other rows' positives. A passage too long to sit beside its query in `max_length` word pieces is not cut
by the model: a positive becomes the window that holds its answer (the first window when the answer is
not known), a negative a seeded window; these are counted in the report.

Loss. BinaryCrossEntropyLoss on (query, passage, label) rows, with pos_weight = negatives per positive so
that both classes weigh the same: the recipe of the sentence-transformers MS MARCO rerankers. It scores
each pair on its own, which is what the reranker does at search time, and lets rows shuffle freely
(a listwise loss needs all of a query's passages in one batch, which costs memory the CPU lacks).

Evaluation. CrossEncoderRerankingEvaluator (nDCG@10, MRR@10, MAP) on dev questions, each with its
paragraph and up to 9 hard negatives found the same way. The best checkpoint by nDCG@10 is the one saved;
the saved folder is evaluated again after it is read back. Checkpoints go to OUT/checkpoints, so a run
stopped on a CPU resumes where it stopped. The result is a folder any command accepts as a reranker:
float16 safetensors (read back as float32), the tokenizer, bertsearch.json, report.json and a model card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadArgument, CorpusError, MalformedRecord, MissingDependency
from ..evaluation.beir import ProgressFactory, no_progress
from ..snippets import STOPWORDS  # (question words left out of BM25 mining queries)
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
    save_weights,
    schedule_args,
    time_limit_callback,
    training_summary,
)
from .layers import layer_decay_optimizer

log = logging.getLogger(__name__)

DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
BM25_DEPTH = 10
"""Hard negatives are sampled from this many top BM25 paragraphs."""
DEV_NEGATIVES = 9
MAX_FP16_LOGIT_DIFF = 0.25  # float16 weights ship unless they move a logit more than this (rankings barely move)
"""Candidates per dev question: its paragraph and up to this many hard negatives."""
DEV_NAME = "squad_dev"
DEV_METRICS = {"ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "map": "map"}
WORK_DIR = "work"
PAIRS_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
# settings a resumed run may change: more epochs, another dev set, where it writes
_RESUMABLE = {"out_dir", "epochs", "resume", "keep_checkpoints", "dev_squad", "dev_limit", "eval_steps", "time_limit"}
_WORD = re.compile(r"\w+")


@dataclass
class Example:
    """A query, its relevant passage, and passages that are not relevant. `answer` is the character span of
    the answer in `positive` when known (SQuAD), so that a long positive is windowed around it."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    answer: tuple[int, int] | None = None


@dataclass
class Squad:
    """A SQuAD file flattened: paragraphs, the article of each, and the answerable questions."""

    paragraphs: list[str]
    article_of: list[int]
    questions: list[tuple[str, int, list[tuple[str, int]]]]  # (question, paragraph index, [(answer, start)])


# -- data --------------------------------------------------------------------------------------------


def read_squad(path: str | Path) -> Squad:
    """Read a SQuAD v1.1 or v2.0 JSON file (`evaluation.squad.load_squad`) as paragraphs and questions.
    Unanswerable v2.0 questions are left out: they have no positive."""
    from ..evaluation.squad import load_squad

    squad = Squad([], [], [])
    position: dict[int, int] = {}  # paragraph in the file -> index in squad.paragraphs
    for ex in load_squad(path):
        if ex.paragraph not in position:
            position[ex.paragraph] = len(squad.paragraphs)
            squad.paragraphs.append(ex.context)
            squad.article_of.append(ex.article)
        if ex.answers and not ex.is_impossible and ex.answer_starts[0] >= 0:  # (-1: the answer is not in the text)
            squad.questions.append((ex.question, position[ex.paragraph], list(zip(ex.answers, ex.answer_starts))))
    if not squad.questions:
        raise CorpusError(f"{path} holds no answerable questions")
    return squad


def bm25_candidates(
    paragraphs: list[str], queries: list[str], depth: int, *, progress: ProgressFactory = no_progress
) -> list[list[int]]:
    """The top `depth` paragraphs by BM25 for each query (paragraph indices, best first), from a throwaway
    bertsearch index (FTS5, porter stemming). Common question words are left out of the queries."""
    from ..engine import Index

    stripped = []
    for q in queries:
        words = [w for w in _WORD.findall(q) if w.lower() not in STOPWORDS]
        stripped.append(" ".join(words) if words else q)
    out: list[list[int]] = []
    with tempfile.TemporaryDirectory(prefix="bertsearch-bm25-") as tmp, Index.open(
        Path(tmp) / "index", create=True, model="hashing:8"
    ) as ix:
        # lower-cased: FTS5 folds case anyway, and HashingEncoder miscounts words whose lower case is longer (İ)
        ix.add(({"id": str(i), "text": t.lower()} for i, t in enumerate(paragraphs)), batch_size=1000)
        with progress("mining BM25 negatives", len(queries), "questions") as advance:
            for i in range(0, len(stripped), 256):
                part = stripped[i : i + 256]
                todo = [j for j, q in enumerate(part) if q.strip()]
                hits = ix.batch_search([part[j] for j in todo], k=depth, mode="lexical") if todo else []
                found = dict(zip(todo, hits))
                out.extend([int(h.doc_id) for h in found.get(j, [])] for j in range(len(part)))
                advance(len(part))
    return out


def bm25_cache_path(cache_dir: Path, paragraphs: list[str], queries: list[str], depth: int) -> Path:
    """Where `cached_bm25_candidates` keeps the candidates of these queries over these paragraphs."""
    key = hashlib.sha256(f"bm25 v1 {depth} {' '.join(sorted(STOPWORDS))}".encode())
    for text in (*paragraphs, "\x00", *queries):
        key.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return Path(cache_dir) / f"bm25-{key.hexdigest()[:16]}.json"


def cached_bm25_candidates(
    paragraphs: list[str],
    queries: list[str],
    depth: int,
    *,
    cache_dir: Path | None,
    progress: ProgressFactory = no_progress,
) -> list[list[int]]:
    """`bm25_candidates`, kept in `cache_dir` under a hash of the paragraphs, the queries, the depth and the
    stopwords, so that a resumed run (mining SQuAD train took about half an hour on one core) mines once. A file
    that does not hold candidates of these questions (damaged, cut short) is mined again and replaced."""
    if cache_dir is None:
        return bm25_candidates(paragraphs, queries, depth, progress=progress)
    path = bm25_cache_path(cache_dir, paragraphs, queries, depth)
    try:
        mined = json.loads(path.read_text(encoding="utf-8"))
        n = len(paragraphs)
        if isinstance(mined, list) and len(mined) == len(queries) and all(
            isinstance(hits, list) and all(type(p) is int and 0 <= p < n for p in hits) for hits in mined
        ):
            log.info("BM25 candidates of %d questions read from %s", len(queries), path)
            return mined
        log.warning("%s does not hold BM25 candidates of these questions; mining them again", path)
    except (OSError, ValueError):
        pass
    mined = bm25_candidates(paragraphs, queries, depth, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(mined, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)
    return mined


def squad_examples(
    path: str | Path,
    *,
    negatives: int,
    limit: int | None = None,
    bm25: bool = True,
    same_article: bool = True,
    random_negatives: int = 0,
    seed: int = 42,
    cache_dir: Path | None = None,
    progress: ProgressFactory = no_progress,
) -> list[Example]:
    """One example per question (a seeded sample of `limit` of them): its paragraph, up to `negatives`
    hard negatives, half from the top BM25 paragraphs and half from its article when both are on (either
    fills in when the other runs short), and `random_negatives` paragraphs of other articles drawn at random.
    The easy random ones give the new head a signal to start from: on hard negatives alone a CPU run stayed
    at chance loss for 120 steps. A question's negatives depend only on the seed and the question. With
    `cache_dir`, the mined BM25 candidates are kept there and read back by a later call on the same data."""
    squad = read_squad(path)
    n = len(squad.questions)
    chosen = list(range(n)) if limit is None else sorted(random.Random(seed).sample(range(n), min(limit, n)))
    lowered = [p.lower() for p in squad.paragraphs]
    by_article: dict[int, list[int]] = {}
    for p, a in enumerate(squad.article_of):
        by_article.setdefault(a, []).append(p)
    mined: list[list[int]] = []
    if bm25 and negatives > 0:
        mined = cached_bm25_candidates(
            squad.paragraphs,
            [squad.questions[i][0] for i in chosen],
            BM25_DEPTH + 1,
            cache_dir=cache_dir,
            progress=progress,
        )
    examples = []
    for j, qi in enumerate(chosen):
        question, pos, answers = squad.questions[qi]
        positive = squad.paragraphs[pos]
        texts = [a.lower() for a, _ in answers if a.strip()]
        usable = {
            p for p in (*(mined[j] if mined else ()), *(by_article[squad.article_of[pos]] if same_article else ()))
            if p != pos and squad.paragraphs[p] != positive and not any(t in lowered[p] for t in texts)
        }
        lexical = [p for p in mined[j] if p in usable][:BM25_DEPTH] if mined else []
        article = [p for p in by_article[squad.article_of[pos]] if p in usable] if same_article else []
        rng = random.Random(f"{seed}:{qi}")
        picked = _pick(rng, lexical, article, negatives) if (bm25 or same_article) else []
        picked += _random_others(rng, squad, pos, texts, lowered, random_negatives)
        answer, start = answers[0]
        negs = [squad.paragraphs[p] for p in picked]
        examples.append(Example(question, positive, negs, (start, start + len(answer))))
    return examples


def _pick(rng: random.Random, lexical: list[int], article: list[int], n: int) -> list[int]:
    """`n` distinct paragraphs, half (rounded up) from `lexical` when `article` has any, the rest from `article`."""
    want = (n + 1) // 2 if article else n
    picked = rng.sample(lexical, min(want, len(lexical)))
    rest = [p for p in article if p not in picked]
    picked += rng.sample(rest, min(n - len(picked), len(rest)))
    if len(picked) < n:
        more = [p for p in lexical if p not in picked]
        picked += rng.sample(more, min(n - len(picked), len(more)))
    return picked


def _random_others(rng: random.Random, squad: Squad, pos: int, texts: list[str], lowered: list[str], n: int) -> list[int]:
    """Up to `n` distinct paragraphs from articles other than `pos`'s that contain none of the answers."""
    picked: list[int] = []
    others = len(squad.paragraphs) - 1
    for _ in range(20 * n):
        if len(picked) == n or others <= 0:
            break
        p = rng.randrange(len(squad.paragraphs))
        if (p not in picked and squad.article_of[p] != squad.article_of[pos]
                and not any(t in lowered[p] for t in texts)):
            picked.append(p)
    return picked


def read_pairs(path: str | Path) -> list[Example]:
    """Examples from a pairs file. JSONL: one object a line with "query", "positive", and "negatives" (a
    list) or "negative" (a string or a list). CSV/TSV: a header with query, positive and optionally negative
    columns (negative, negative_2, ...). Rows sharing a query and positive are merged, negatives pooled.
    A malformed line raises CorpusError naming file:line."""
    path = Path(path)
    kind = PAIRS_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise BadArgument(f"{path} is not a pairs file: give pairs as .jsonl, .csv or .tsv (one query and its "
                          "positive passage a line)"
                          + ("; a SQuAD file trains the reranker or the reader (--train)" if path.suffix == ".json" else ""))
    if not path.is_file():
        raise CorpusError(f"no pairs file at {path}")
    rows = _jsonl_pairs(path) if kind == "jsonl" else _delimited_pairs(path, "," if kind == "csv" else "\t")
    merged: dict[tuple[str, str], Example] = {}
    for query, positive, negs in rows:
        ex = merged.setdefault((query, positive), Example(query, positive))
        ex.negatives.extend(n for n in negs if n not in ex.negatives and n != positive)
    if not merged:
        raise CorpusError(f"{path} holds no (query, positive) pairs")
    return list(merged.values())


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CorpusError(f"{where}: '{key}' must be a non-empty string")
    return value


def _jsonl_pairs(path: Path) -> Iterator[tuple[str, str, list[str]]]:
    from ..readers.jsonl import iter_json_lines

    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        if isinstance(obj, MalformedRecord):
            raise CorpusError(f"{where}: {obj.problem}")
        if not isinstance(obj, dict):
            raise CorpusError(f"{where}: expected a JSON object with query, positive and negatives")
        negs = obj.get("negatives", obj.get("negative", []))
        negs = [negs] if isinstance(negs, str) else negs
        if not isinstance(negs, list):
            raise CorpusError(f"{where}: 'negatives' must be a list of strings")
        yield (
            _text(obj.get("query"), "query", where),
            _text(obj.get("positive"), "positive", where),
            [_text(n, "negatives", where) for n in negs],
        )


def _delimited_pairs(path: Path, delimiter: str) -> Iterator[tuple[str, str, list[str]]]:
    from ..readers.delimited import iter_rows

    columns: tuple[int, int, list[int]] | None = None
    for item in iter_rows(path, delimiter=delimiter):
        if isinstance(item, MalformedRecord):
            raise CorpusError(f"{item.source}:{item.line}: {item.problem}")
        header, line, row = item
        if columns is None:
            names = [h.lower() for h in header]
            if "query" not in names or "positive" not in names:
                raise CorpusError(f"{path}:1: the header needs 'query' and 'positive' columns, found {header}")
            columns = names.index("query"), names.index("positive"), [i for i, h in enumerate(names) if h.startswith("negative")]
        q_col, p_col, n_cols = columns
        where = f"{path}:{line}"
        negs = [row[i] for i in n_cols if row[i].strip()]
        yield _text(row[q_col], "query", where), _text(row[p_col], "positive", where), negs


def positives_of(examples: list[Example]) -> dict[str, set[str]]:
    """Every positive of each query."""
    relevant: dict[str, set[str]] = {}
    for ex in examples:
        relevant.setdefault(ex.query, set()).add(ex.positive)
    return relevant


def complete_negatives(
    examples: list[Example],
    negatives: int,
    seed: int,
    *,
    pool: list[str] | None = None,
    relevant: dict[str, set[str]] | None = None,
) -> int:
    """Bring each example to `negatives` negatives, in place: a seeded sample of its own when it has more,
    passages drawn from `pool` (by default the examples' positives) when it has fewer, never one of the
    query's positives (`relevant`: by default those among the examples) nor one it has. An example stays
    short only when the pool runs out. Returns how many were added."""
    pool = list(dict.fromkeys(pool if pool is not None else (ex.positive for ex in examples)))
    relevant = relevant if relevant is not None else positives_of(examples)
    added = 0
    for i, ex in enumerate(examples):
        rng = random.Random(f"{seed}:{i}")
        if len(ex.negatives) > negatives:
            ex.negatives = rng.sample(ex.negatives, negatives)
        elif len(ex.negatives) < negatives:
            taken = set(ex.negatives) | relevant.get(ex.query, set()) | {ex.positive}
            need = negatives - len(ex.negatives)
            for p in rng.sample(pool, min(len(pool), need + len(taken))):
                if need and p not in taken:
                    ex.negatives.append(p)
                    need -= 1
                    added += 1
    return added


def fit_to_window(
    examples: list[Example], tokenizer: Any, *, max_length: int, stride: int, seed: int
) -> dict[str, int]:
    """Replace, in place, each passage too long to sit beside its query in `max_length` word pieces by one of
    its windows (see `bertsearch.models.reranker.window_spans`): a positive by the window holding its answer
    (the first window when the answer is unknown), a negative by a seeded window. Returns the counts."""
    from ..models.reranker import fit_queries, window_spans

    queries, budgets, cut_queries = fit_queries(tokenizer, [ex.query for ex in examples], max_length)
    flat = [p for ex in examples for p in (ex.positive, *ex.negatives)]
    flat_budgets = [b for ex, b in zip(examples, budgets) for _ in range(1 + len(ex.negatives))]
    spans = window_spans(tokenizer, flat, flat_budgets, stride)
    counts = {
        "windowed_positives": 0,
        "positives_without_answer_window": 0,
        "windowed_negatives": 0,
        "cut_queries": cut_queries,
    }
    pos = 0
    for i, (ex, q) in enumerate(zip(examples, queries)):
        ex.query = q
        windows = spans[pos]
        if len(windows) > 1:
            counts["windowed_positives"] += 1
            a, b = _answer_window(windows, ex.answer)
            if ex.answer is None or not a <= ex.answer[0] < b:
                counts["positives_without_answer_window"] += 1
            if ex.answer is not None:
                ex.answer = (ex.answer[0] - a, ex.answer[1] - a)
            ex.positive = ex.positive[a:b]
        rng = random.Random(f"{seed}:window:{i}")
        for j, windows in enumerate(spans[pos + 1 : pos + 1 + len(ex.negatives)]):
            if len(windows) > 1:
                counts["windowed_negatives"] += 1
                a, b = rng.choice(windows)
                ex.negatives[j] = ex.negatives[j][a:b]
        pos += 1 + len(ex.negatives)
    return counts


def _answer_window(windows: list[tuple[int, int]], answer: tuple[int, int] | None) -> tuple[int, int]:
    """The first window holding the whole answer, else the first holding its start, else the first."""
    if answer is not None:
        for a, b in windows:
            if a <= answer[0] and answer[1] <= b:
                return a, b
        for a, b in windows:
            if a <= answer[0] < b:
                return a, b
    return windows[0]


def to_rows(examples: list[Example]) -> dict[str, list[Any]]:
    """Columns for BinaryCrossEntropyLoss: query, passage, label (1.0 for a positive, 0.0 for a negative)."""
    rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    for ex in examples:
        for passage, label in ((ex.positive, 1.0), *((n, 0.0) for n in ex.negatives)):
            rows["query"].append(ex.query)
            rows["passage"].append(passage)
            rows["label"].append(label)
    return rows


def detect_train_format(path: str | Path) -> str:
    """'squad' for a .json file, 'pairs' for .jsonl/.ndjson/.csv/.tsv."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "squad"
    if suffix in PAIRS_SUFFIXES:
        return "pairs"
    raise BadArgument(f"cannot tell the format of {path}: give SQuAD JSON (.json), or pairs as .jsonl, .csv or .tsv")


# -- training ----------------------------------------------------------------------------------------


def train_reranker(
    out_dir: str | Path,
    *,
    train_squad: str | Path | None = None,
    train_pairs: str | Path | None = None,
    dev_squad: str | Path | None = None,
    base: str = DEFAULT_BASE,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 3e-5,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    max_length: int = 256,
    stride: int = 64,
    negatives_per_query: int = 3,
    bm25_negatives: bool = True,
    same_article_negatives: bool = True,
    random_negatives: int = 1,
    limit: int | None = None,
    dev_limit: int | None = 500,
    bf16: bool = False,
    seed: int = 42,
    resume: bool = True,
    layer_lr_decay: float | None = None,
    eval_steps: int | None = None,
    keep_checkpoints: bool = False,
    time_limit: float | None = None,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Fine-tune `base` (a new one-score head on its encoder) as a reranker; returns the report that is also
    written to OUT/report.json.

    Train on `train_squad` (hard negatives mined from the file) or `train_pairs` (JSONL/CSV/TSV with your own
    negatives); `limit` trains on a seeded sample of that many questions. With `dev_squad`, a seeded sample
    of `dev_limit` dev questions is scored after every epoch (or every `eval_steps`), and the best checkpoint
    is the one saved. `time_limit` (minutes) ends training early, evaluated and checkpointed, so that the same
    call resumes it.
    """
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k != "progress"}
    _check(settings)
    try:
        import datasets
        import torch
        import transformers
        from sentence_transformers.cross_encoder import (
            CrossEncoder,
            CrossEncoderTrainer,
            CrossEncoderTrainingArguments,
        )
        from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
        from transformers import PrinterCallback
    except ImportError as e:
        raise MissingDependency("datasets accelerate", f"training a reranker ({e})") from None

    from ..models import resolve_model_path
    from ..models.reranker import SETTINGS_FILE, check_cross_encoder

    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    work = out_dir / WORK_DIR  # mined BM25 candidates, kept until the run ends so that a resume skips mining
    cuda = torch.cuda.is_available()
    check_out(out_dir, resume=resume)
    last = resume_point(checkpoints, settings, _RESUMABLE, resume=resume)
    transformers.set_seed(seed)

    base_path = resolve_model_path(base)
    # 1. data first, so that a bad training file is told before the model loads: (query, passage, label) rows
    t0 = time.perf_counter()
    if train_squad is not None:
        examples = squad_examples(
            train_squad, negatives=negatives_per_query, limit=limit, bm25=bm25_negatives,
            same_article=same_article_negatives, random_negatives=random_negatives, seed=seed, cache_dir=work,
            progress=progress,
        )
        filled = 0
    else:
        examples = read_pairs(train_pairs)  # type: ignore[arg-type]
        if limit is not None:
            examples = random.Random(seed).sample(examples, min(limit, len(examples)))
        filled = complete_negatives(examples, negatives_per_query, seed)
        if not any(ex.negatives for ex in examples):  # (said after the model loaded, and named SQuAD's options)
            raise CorpusError(
                f"{train_pairs} gives no negatives: its {len(examples)} distinct (query, positive) pairs have none of "
                "their own, and the other pairs' positives are theirs too or missing; give pairs with a 'negative' "
                "field, or more distinct queries and passages")
    # 2. model: the base encoder with a new one-logit head (a bi-encoder folder is converted; its pooling is dropped)
    loading = time.perf_counter()
    model = CrossEncoder(
        str(base_path),
        num_labels=1,
        max_length=max_length,
        device="cuda" if cuda else "cpu",
        local_files_only=True,
        model_kwargs={"dtype": torch.float32},
    )
    if max_length > int(getattr(model.model.config, "max_position_embeddings", max_length)):
        positions = model.model.config.max_position_embeddings
        raise BadArgument(f"max_length {max_length} is more than {base} reads ({positions} word pieces)")
    if not getattr(model.tokenizer, "is_fast", False):
        raise BadArgument(f"base model {base} has no fast tokenizer (tokenizer.json); windowing passages needs one")
    tokenizer = model.tokenizer
    t0 += time.perf_counter() - loading  # the data's seconds leave the model's loading out

    # passages too long for the window are windowed, not cut
    windowing = fit_to_window(examples, tokenizer, max_length=max_length, stride=stride, seed=seed)
    if windowing["positives_without_answer_window"]:
        log.warning("%d positives longer than the window were cut to their first window (their answer is not known)",
                    windowing["positives_without_answer_window"])
    rows = to_rows(examples)
    n_pos = len(examples)
    n_neg = len(rows["label"]) - n_pos
    if n_neg == 0:
        raise CorpusError("no negatives found for any training question; turn on BM25 or same-article negatives")
    train_dataset = datasets.Dataset.from_dict(rows)
    dev = []
    dev_windowing: dict[str, int] = {}
    if dev_squad is not None:
        dev = squad_examples(
            dev_squad, negatives=DEV_NEGATIVES, limit=dev_limit, seed=seed, cache_dir=work, progress=progress
        )
        dev_windowing = fit_to_window(dev, tokenizer, max_length=max_length, stride=stride, seed=seed)
    data_seconds = time.perf_counter() - t0
    log.info("%d training queries -> %d rows (%d negatives); %d dev queries; data in %.1fs",
             n_pos, len(rows["label"]), n_neg, len(dev), data_seconds)

    # 3. loss: binary cross-entropy on logits; positives weigh as much as all their negatives together
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(n_neg / n_pos))

    # 4. evaluator: rerank each dev question's paragraph among its hard negatives; nDCG@10 is primary
    evaluator = None
    if dev:
        evaluator = CrossEncoderRerankingEvaluator(
            samples=[{"query": ex.query, "positive": [ex.positive], "negative": ex.negatives} for ex in dev],
            at_k=10,
            name=DEV_NAME,
            batch_size=2 * batch_size,
        )
    best_metric = f"eval_{DEV_NAME}_ndcg@10"

    # 5. arguments: AdamW with linear warmup and decay; evaluate and save every epoch (or eval_steps)
    steps_per_epoch = math.ceil(len(rows["label"]) / batch_size)
    args = CrossEncoderTrainingArguments(
        **schedule_args(
            checkpoints=checkpoints,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            eval_steps=eval_steps,
            best_metric=best_metric if evaluator is not None else None,
            steps_per_epoch=steps_per_epoch,
            cuda=cuda,
            bf16=bf16,
            seed=seed,
        ),
        data_seed=seed,
    )

    # 6. trainer
    stopper = time_limit_callback(time_limit)
    model.model_card_data.generate_widget_examples = False  # (its progress bar leaked into stderr)
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=loss,
        evaluator=evaluator,
        callbacks=[progress_callback(progress), stopper],
    )
    trainer.remove_callback(PrinterCallback)  # it prints logs to stdout, which carries data
    if layer_lr_decay is not None:  # the trainer uses an optimizer it is given instead of making its own
        trainer.optimizer = layer_decay_optimizer(trainer, layer_lr_decay)

    # 7. train, from the latest checkpoint when there is one
    output, train_seconds = run_trainer(trainer, checkpoints, settings, last)
    history = trainer.state.log_history

    # 8. save the best model as float16 safetensors whose config says float32, and check it reads back so
    check_pairs = [[q, p] for q, p in zip(rows["query"][:16], rows["passage"][:16])]
    best = trainer.model
    reference = best.predict(check_pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)
    fp32_state = {k: v.detach().clone() for k, v in best.state_dict().items()}
    weights = save_weights(best, out_dir, create_model_card=False)  # the card is ours, written after evaluation
    saved = CrossEncoder(str(out_dir), device="cuda" if cuda else "cpu", local_files_only=True)
    dtype = str(next(saved.parameters()).dtype).replace("torch.", "")
    again = saved.predict(check_pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)
    diff = float(abs(again - reference).max())
    if dtype != "float32" or diff > MAX_FP16_LOGIT_DIFF:
        log.warning("float16 weights read back as %s, logits off by up to %.4f: saving float32 instead", dtype, diff)
        best.float().load_state_dict(fp32_state)
        weights = save_weights(best, out_dir, half=False, create_model_card=False)
        saved = CrossEncoder(str(out_dir), device="cuda" if cuda else "cpu", local_files_only=True)
    check_cross_encoder(str(out_dir), out_dir)
    reranker_json = {"max_length": max_length, "stride": stride, "scores": "logits"}
    (out_dir / SETTINGS_FILE).write_text(json.dumps(reranker_json, indent=2) + "\n", encoding="utf-8")

    # 9. evaluate what was saved
    final = dev_metrics(evaluator(saved), DEV_METRICS, DEV_NAME) if evaluator is not None else None

    report = {
        "model": str(out_dir),
        "base": base,
        "settings": settings,
        "reranker": reranker_json,
        "weights": {"dtype": weights, "read_back_as": dtype, "max_logit_diff_vs_fp32": round(diff, 5)},
        "loss": {"name": "BinaryCrossEntropyLoss", "pos_weight": round(n_neg / n_pos, 4)},
        "resumed_from": last,
        "data": {
            "source": str(train_squad if train_squad is not None else train_pairs),
            "format": "squad" if train_squad is not None else "pairs",
            "train_queries": n_pos,
            "train_rows": len(rows["label"]),
            "negatives": n_neg,
            "negatives_filled_from_other_positives": filled,
            **windowing,
            "dev_queries": len(dev),
            "dev_candidates": sum(1 + len(ex.negatives) for ex in dev),
            "dev_windowing": dev_windowing,
            "seconds": round(data_seconds, 1),
        },
        **training_summary(trainer, output, seconds=train_seconds, resumed_from=last, stopper=stopper),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "dev_per_evaluation": per_evaluation(history, DEV_METRICS, DEV_NAME),
        "dev": final,
        "machine": machine(),
        "command": _command(settings),
    }
    finish(out_dir, report, _model_card(report), keep=keep_checkpoints, work=(checkpoints, work))
    return report


def _check(s: dict[str, Any]) -> None:
    if (s["train_squad"] is None) == (s["train_pairs"] is None):
        raise BadArgument("give one training file: train_squad (SQuAD JSON) or train_pairs (JSONL/CSV/TSV)")
    check_settings(s)
    if s["negatives_per_query"] < 1:
        raise BadArgument(f"negatives_per_query must be at least 1, not {s['negatives_per_query']}")
    if s["random_negatives"] < 0:
        raise BadArgument(f"random_negatives must be >= 0, not {s['random_negatives']}")
    if not s["max_grad_norm"] >= 0:  # (0: no clipping, as for the other trainers)
        raise BadArgument(f"max_grad_norm must be >= 0 (0: no clipping), not {s['max_grad_norm']}")
    if s["weight_decay"] < 0:
        raise BadArgument(f"weight_decay must be >= 0, not {s['weight_decay']}")
    if s["max_length"] < 32:
        raise BadArgument(f"max_length must be at least 32 word pieces, not {s['max_length']}")
    for name in ("train_squad", "train_pairs", "dev_squad"):
        if s[name] is not None and not Path(s[name]).is_file():
            raise CorpusError(f"no file at {s[name]} (given as {name})")


def _command(s: dict[str, Any]) -> str:
    """The `bertsearch train reranker` command line that reproduces these settings."""
    train = s["train_squad"] if s["train_squad"] is not None else s["train_pairs"]
    parts = ["bertsearch train reranker", f"--train {train}", f"--out {s['out_dir']}", f"--base {s['base']}"]
    if s["dev_squad"] is not None:
        parts.append(f"--dev {s['dev_squad']}")
    for key in ("epochs", "batch_size", "lr", "warmup_ratio", "weight_decay", "max_grad_norm", "max_length", "stride",
                "negatives_per_query", "random_negatives", "limit", "dev_limit", "layer_lr_decay", "eval_steps", "seed",
                "time_limit"):
        if s[key] is not None:
            flag = "negatives" if key == "negatives_per_query" else key.replace("_", "-")
            parts.append(f"--{flag} {s[key]}")
    if s["bf16"]:
        parts.append("--bf16")
    for key in ("bm25_negatives", "same_article_negatives"):
        if not s[key]:
            parts.append(f"--no-{key.replace('_', '-')}")
    return " ".join(parts)


def _model_card(r: dict[str, Any]) -> str:
    s = r["settings"]
    d = r["data"]
    dev = r["dev"]
    per_eval = "\n".join(
        f"| {e['epoch']:.2f} | {e['step']} | {e.get('ndcg@10', float('nan')):.4f} | {e.get('mrr@10', float('nan')):.4f} |"
        for e in r["dev_per_evaluation"]
    )
    if dev:
        score = (f"nDCG@10 {dev['ndcg@10']:.4f}, MRR@10 {dev['mrr@10']:.4f}, MAP {dev['map']:.4f} reranking each of "
                 f"{d['dev_queries']} questions of {Path(s['dev_squad']).name} (a seeded sample) among its own "
                 f"paragraph and up to {DEV_NEGATIVES} hard negatives (same article and BM25)")
    else:
        score = "not evaluated (no dev set given)"
    if d["format"] == "squad":
        data = (f"SQuAD ({Path(d['source']).name}): {d['train_queries']} questions, each with its paragraph as the "
                f"positive and {s['negatives_per_query']} hard negatives (other paragraphs of its article and top "
                "BM25 paragraphs, never one containing an answer)"
                + (f" and {s['random_negatives']} random paragraph(s) of other articles" if s.get("random_negatives") else ""))
        licence = ("SQuAD (Rajpurkar et al., 2016) is licensed CC BY-SA 4.0; a model trained on it is shared under "
                   "the same licence. The base model keeps its own licence (all-MiniLM-L6-v2: Apache-2.0).")
        card_licence = "cc-by-sa-4.0"
    else:
        data = (f"query/passage pairs from {Path(d['source']).name}: {d['train_queries']} queries, "
                f"{d['negatives']} negatives")
        licence = "The training pairs carry their own licence; the base model keeps its own licence."
        card_licence = "other"
    return model_card(
        r,
        title="Cross-encoder reranker for bertsearch",
        tags=["cross-encoder", "reranker", "text-ranking", "bertsearch"],
        card_licence=card_licence,
        about=f"""A one-logit relevance head on the encoder of `{r['base']}`, fine-tuned with bertsearch's own training
code (sentence-transformers CrossEncoderTrainer, {r['loss']['name']} with pos_weight {r['loss']['pos_weight']}) on
{data}. Input: a query and a passage in at most {s['max_length']} word pieces; bertsearch scores longer passages
in windows overlapping by {s['stride']} word pieces and keeps the best. Scores are raw logits: higher is more
relevant.""",
        score=score,
        notes=f"""| epoch | step | nDCG@10 | MRR@10 |
|---|---|---|---|
{per_eval}

Weights are {r['weights']['dtype']} safetensors; `config.json` says float32 so they load back as float32 for CPU
inference (largest logit difference to the float32 model: {r['weights']['max_logit_diff_vs_fp32']}).
`bertsearch.json` holds the window settings.""",
        licence=licence,
        use=f"""## Use

```
bertsearch search "your question" --index indexes/mine --rerank --reranker {r['model']}
```

```python
from bertsearch.models.reranker import load_reranker
scores = load_reranker("{r['model']}").score("your question", ["passage one", "passage two"])
```""",
    )
