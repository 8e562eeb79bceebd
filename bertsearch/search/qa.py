"""Answers: spans from the reader, ranked across passages, located in their documents."""

from __future__ import annotations

from dataclasses import replace

from ..errors import BadArgument
from ..types import Answer, Hit, Span

ANSWER_SCORINGS = ("span", "margin")


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


def locate(hit: Hit, span: Span) -> Answer:
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
    )


def abstains(spans: list[Span], threshold: float | None) -> bool:
    """No answer: there is no span, or `threshold` is set and "no answer" beats the best span by more."""
    if not spans:
        return True
    if threshold is None:
        return False
    return spans[0].null_score - spans[0].score > threshold
