"""Answers: spans from the reader, ranked across passages, located in their documents."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadArgument
from ..types import Answer, Hit, Span

ANSWER_SCORINGS = ("span", "margin")
# spans read per passage, and candidates judged together, as the calibration was fitted (`open_ask.collect`): an
# answer's lead over the next one is one of its signals, so its confidence is computed among this many
MAX_ANSWERS = 20
"""The most answers `ask` gives (the service's limit too): past a few, the answers are copies and fragments, and
reading each passage for a thousand spans took minutes (found 2026-12-06)."""
CANDIDATES = 3


def rank_answers(spans: list[Span], hits: list[Hit], *, scoring: str = "span", passage_weight: float = 0.0) -> list[Span]:
    """Spans from several passages, best first, each with `score` set to what ranked it.

    "span" compares the start + end logits as they are; "margin" compares each span's lead over its own
    passage's no-answer score, which puts passages on one scale (a reader's logits are not calibrated
    across inputs). `passage_weight` adds that multiple of the passage's cross-encoder score (when it has
    one). `null_score` moves with `score` so that the reader's abstention test keeps its meaning."""
    if scoring not in ANSWER_SCORINGS:
        raise BadArgument(f"answer scoring must be one of {', '.join(ANSWER_SCORINGS)}, not {scoring!r}")
    out = []
    for sp in spans:
        shift = -sp.null_score if scoring == "margin" else 0.0
        if passage_weight:
            shift += passage_weight * hits[sp.passage].scores.get("rerank", 0.0)
        out.append(replace(sp, score=sp.score + shift, null_score=sp.null_score + shift))
    return sorted(out, key=lambda sp: (-sp.score, sp.passage, sp.start))


def locate(hit: Hit, span: Span, *, confidence: float | None = None) -> Answer:
    """A reader span in a hit's chunk, located in the original document."""
    return Answer(
        text=span.text,
        score=span.score,
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        start=hit.start + span.start,
        end=hit.start + span.end,
        title=hit.title,
        context=hit.text,
        context_start=hit.start,
        confidence=confidence,
    )


def distinct(ranked: list[Span]) -> list[Span]:
    """`ranked` without the spans that repeat a better one: the same words (as SQuAD normalises them), words within
    or around a better one's, or an overlap of it in the same passage. The answers shown are then different
    answers, not copies of the first."""
    from .confidence import normalize, same_answer

    kept: list[Span] = []
    seen: list[str] = []
    for sp in ranked:
        norm = f" {normalize(sp.text)} "
        if any(same_answer(norm, s) for s in seen):  # the same words, or words of a better one ("1928", "in 1928")
            continue
        if any(k.passage == sp.passage and k.start < sp.end and sp.start < k.end for k in kept):
            continue
        kept.append(sp)
        seen.append(norm)
    return kept


def shortlist(pool: list[Span], hits: list[Hit], calibration: Any, k: int) -> list[Span]:
    """The `k` answers to show from `pool` (every span read, ranked by `rank_answers`): the copies taken out
    (`distinct`), then best first by the calibration's ranker when it has one (`Calibration.order`)."""
    candidates = distinct(pool)
    if calibration is not None:
        candidates = calibration.order(candidates, hits, pool)
    return candidates[:k]


@dataclass
class Judgement:
    """Whether to answer: each candidate's confidence (None without a calibration), the probability that the
    corpus holds no answer, the bar used, and the verdict."""

    confidences: list[float | None]
    no_answer: float | None
    min_confidence: float
    abstained: bool


def judge(ranked: list[Span], hits: list[Hit], calibration: Any, min_confidence: float | None,
          pool: list[Span] | None = None) -> Judgement:
    """The confidence of each candidate in `ranked` (best first, see `distinct`; `pool`: the spans `distinct` chose
    from, see `confidence.features`), and whether to abstain: when there is no candidate, or the best one's
    confidence is under `min_confidence` (default: the calibration's). Without a calibration every candidate is
    answered (confidence None)."""
    from . import confidence as conf

    if calibration is None:
        return Judgement([None] * len(ranked), None, min_confidence or 0.0, not ranked)
    bar = min_confidence if min_confidence is not None else calibration.min_confidence
    if not ranked:
        return Judgement([], 1.0, bar, True)
    rows = conf.features(ranked, hits, pool)
    reranked = any("rerank" in h.scores for h in hits)
    models = calibration.models(reranked)
    p = [round(float(x), 4) for x in models[0](rows)]
    no_answer = round(float(models[1](rows[:1])[0]), 4)
    return Judgement(p, no_answer, bar, p[0] < bar)
