"""SQuAD evaluation: exact match and token F1 by the official v1.1 and v2.0 scripts' definitions.

An answer is normalised (lower case, no punctuation, no articles a/an/the, single spaces) before it is
compared; a question scores the maximum over its gold answers. In SQuAD v2.0 an unanswerable question
has the gold answer "" and scores 1 only for an empty prediction; scores are split into HasAns and NoAns,
and `find_best_thresh` finds the no-answer threshold that would have scored best.
"""

from __future__ import annotations

import json
import logging
import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadArgument, CorpusError
from .beir import ProgressFactory, no_progress

log = logging.getLogger(__name__)

PRIMARY = "f1"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


@dataclass
class Example:
    """One SQuAD question with its own context. `is_impossible` is None in v1.1 files (no such questions)."""

    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int]
    is_impossible: bool | None = None
    article: int = 0  # the article's position in the file
    paragraph: int = 0  # the paragraph's position in the file, over all articles


def load_squad(path: str | Path) -> list[Example]:
    """Every question of a SQuAD v1.1 or v2.0 JSON file, in file order."""
    path = Path(path)
    moved = lost = 0
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # (a byte-order mark, as CSV and JSONL allow)
        v2 = data.get("version") == "v2.0"
        examples = []
        p = -1
        for a, article in enumerate(data["data"]):
            for paragraph in article["paragraphs"]:
                p += 1
                for qa in paragraph["qas"]:
                    impossible = bool(qa.get("is_impossible", False)) if v2 or "is_impossible" in qa else None
                    context = paragraph["context"]
                    starts = []
                    for answer in qa["answers"]:
                        start = _located(context, answer["text"], int(answer["answer_start"]))
                        moved += start not in (-1, int(answer["answer_start"]))
                        lost += start == -1
                        starts.append(start)
                    examples.append(
                        Example(
                            id=str(qa["id"]),
                            question=qa["question"],
                            context=context,
                            answers=[a["text"] for a in qa["answers"]],
                            answer_starts=starts,
                            is_impossible=impossible,
                            article=a,
                            paragraph=p,
                        )
                    )
    except FileNotFoundError:
        raise CorpusError(f"no such file: {path}") from None
    except UnicodeDecodeError as e:  # (its repr holds the whole file)
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); save it as "
                          "UTF-8") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorpusError(f"{path} is not a SQuAD JSON file (data -> paragraphs -> qas): {e!r}") from None
    if not examples:
        raise CorpusError(f"{path} holds no questions")
    if moved or lost:
        log.warning("%s: %d answers' answer_start did not point at their text: %d found nearby and moved there, %d not "
                    "in their context at all (marked -1: training leaves them out)", path, moved + lost, moved, lost)
    return examples


def _located(context: str, text: str, start: int) -> int:
    """Where answer `text` is in `context`: at `start` when it is there, else the occurrence nearest to it (a file whose
    offsets are off, from another tokenisation or an edit), else -1. Found 2026-12-06: a file with offsets 40
    characters off trained the reader on the wrong spans, 34 of 36, without a word."""
    if not text.strip():  # (an empty answer marks no span: it trained on one of no length)
        return -1
    if 0 <= start and context[start:start + len(text)] == text:
        return start
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    return min(found, key=lambda a: abs(a - start)) if found else -1


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official definition)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not truth:  # v2.0: an empty answer matches only an empty answer
        return float(pred == truth)
    same = sum((Counter(pred) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: Example) -> list[str]:
    """The answers a prediction is compared with: [""] for an unanswerable question (as in v2.0)."""
    golds = [a for a in example.answers if normalize_answer(a)]
    return golds if golds and not example.is_impossible else [""]


def find_best_thresh(
    predictions: dict[str, str], raw: dict[str, float], na_margins: dict[str, float], has_answer: dict[str, bool]
) -> tuple[float, float]:
    """(best score in %, threshold) when answering only questions whose margin is <= the threshold.

    As the official v2.0 script: start from abstaining everywhere and answer questions in order of
    rising margin, keeping the best running score. One change: abstaining everywhere reports a threshold
    below every margin (the official 0.0 assumes probabilities; margins can be negative).
    """
    score = best = sum(1 for q in raw if not has_answer[q])
    best_thresh = min([0.0, *(na_margins[q] - 1.0 for q in raw)])
    for q in sorted(raw, key=lambda q: na_margins[q]):
        if has_answer[q]:
            score += raw[q]
        elif predictions.get(q):
            score -= 1
        if score > best:
            best, best_thresh = score, na_margins[q]
    return 100.0 * best / len(raw), best_thresh


def score_predictions(
    examples: list[Example], predictions: dict[str, str], na_margins: dict[str, float] | None = None
) -> dict[str, Any]:
    """EM and F1 in % over `examples` (a missing prediction scores 0), plus v2.0's splits for v2.0 data.

    `na_margins` (v2.0 only): per question, how strongly the model prefers "no answer" (higher: abstain);
    without it every margin is 0, as the official script does without a probability file.
    """
    if not examples:
        raise CorpusError("no questions to score")
    em_raw = {ex.id: max(exact_match(predictions.get(ex.id, ""), g) for g in gold_answers(ex)) for ex in examples}
    f1_raw = {ex.id: max(f1(predictions.get(ex.id, ""), g) for g in gold_answers(ex)) for ex in examples}
    total = len(examples)
    out: dict[str, Any] = {
        "exact_match": 100.0 * sum(em_raw.values()) / total,
        "f1": 100.0 * sum(f1_raw.values()) / total,
        "total": total,
        "primary_metric": PRIMARY,
    }
    if all(ex.is_impossible is None for ex in examples):
        return out
    has_answer = {ex.id: not ex.is_impossible for ex in examples}
    for label, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [q for q, h in has_answer.items() if h == wanted]
        out[f"{label}_exact"] = 100.0 * sum(em_raw[q] for q in ids) / len(ids) if ids else 0.0
        out[f"{label}_f1"] = 100.0 * sum(f1_raw[q] for q in ids) / len(ids) if ids else 0.0
        out[f"{label}_total"] = len(ids)
    margins = na_margins if na_margins is not None else {q: 0.0 for q in em_raw}
    margins = {q: margins.get(q, 0.0) for q in em_raw}
    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, em_raw, margins, has_answer)
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, margins, has_answer)
    return out


def predict(
    examples: list[Example],
    reader: Any,
    *,
    batch_size: int = 16,
    abstain: bool = True,
    progress: ProgressFactory = no_progress,
) -> tuple[dict[str, str], dict[str, float]]:
    """The reader's answer to each question from its own context ("" when it abstains, if `abstain`), and
    the margin null score - best span score that a no-answer threshold is compared with."""
    predictions: dict[str, str] = {}
    margins: dict[str, float] = {}
    with progress("answering", len(examples), "questions") as advance:
        for i in range(0, len(examples), batch_size):
            part = examples[i : i + batch_size]
            results = reader.read_batch(
                [ex.question for ex in part], [[ex.context] for ex in part], top_k=1, batch_size=batch_size
            )
            for ex, spans in zip(part, results):
                predictions[ex.id] = "" if (abstain and reader.abstains(spans)) or not spans else spans[0].text
                margins[ex.id] = spans[0].null_score - spans[0].score if spans else float("inf")
            advance(len(part))
    return predictions, margins


def evaluate_examples(
    examples: list[Example], reader: Any, *, batch_size: int = 16, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    """Scores of `reader` on in-memory examples, with speed and the threshold it used. The no-answer
    threshold applies to SQuAD 2.0 data only: every v1.1 question has an answer, and its official score
    is of the best span."""
    v2 = any(ex.is_impossible is not None for ex in examples)
    t0 = time.perf_counter()
    predictions, margins = predict(examples, reader, batch_size=batch_size, abstain=v2, progress=progress)
    seconds = time.perf_counter() - t0
    return {
        **score_predictions(examples, predictions, margins),
        "threshold_used": reader.no_answer_threshold if v2 else None,
        "reader": reader.name,
        "seconds": round(seconds, 3),
        "questions_per_second": round(len(examples) / seconds, 2) if seconds > 0 else 0.0,
    }


def evaluate_squad(
    path: str | Path,
    reader: Any,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Evaluate an extractive reader on a SQuAD v1.1 or v2.0 file (its first `limit` questions)."""
    if limit is not None and limit < 1:
        raise BadArgument(f"limit must be at least 1, not {limit}")
    examples = load_squad(path)[:limit]
    result = {"dataset": Path(path).name, **evaluate_examples(examples, reader, batch_size=batch_size, progress=progress)}
    if hasattr(reader, "uses_bf16"):
        result["precision"] = "bf16" if reader.uses_bf16 else "fp32"
    return result
