"""Cross-encoder reranking: the top candidates re-scored, and ordered by score less a first-stage penalty."""

from __future__ import annotations

from typing import Any

from ..errors import BadArgument
from ..types import Hit


def rerank(reranker: Any, query: str, hits: list[Hit], depth: int, penalty: float) -> list[Hit]:
    """Re-order the top `depth` hits by the cross-encoder's score of (query, title + best chunk), less
    `penalty` for each place a hit stood below the first stage's top (see `rerank_order`);
    hits below `depth` follow in their first-stage order, unscored."""
    if depth < 1:
        raise BadArgument(f"rerank depth must be > 0, got {depth}")
    head, tail = hits[:depth], hits[depth:]
    if not head:
        return hits
    passages = [f"{h.title}\n{h.text}" if h.title else h.text for h in head]
    scores = reranker.score(query, passages)  # (n,)
    for h, s in zip(head, scores.tolist()):
        h.scores["rerank"] = float(s)
        h.score = float(s)
    ranked = rerank_order(head, penalty) + tail
    for r, h in enumerate(ranked, start=1):
        h.rank = r
        if "rerank" in h.scores:
            h.ranks["rerank"] = r
    return ranked


def rerank_order(head: list[Hit], penalty: float = 0.0) -> list[Hit]:
    """`head` (in first-stage order, each with scores["rerank"], the cross-encoder's logit) re-ordered by
    the logit less `penalty` for each place below the first stage's top: rerank - penalty * (rank - 1),
    kept as scores["fused"] when `penalty` > 0. A gap of several logits, a confident cross-encoder,
    outweighs a few places; a small one, a cross-encoder out of its depth, leaves the first stage's order.
    Ties keep the first-stage order (the sort is stable); they are common: under bfloat16 a logit near -6.6
    moves in steps of 1/32."""
    if not penalty >= 0:
        raise BadArgument(f"rerank penalty must be >= 0 (logits per first-stage place), got {penalty}")
    for r, h in enumerate(head):
        if penalty:
            h.scores["fused"] = h.scores["rerank"] - penalty * r
        else:
            h.scores.pop("fused", None)  # from an earlier order of the same hits
        h.score = h.scores.get("fused", h.scores["rerank"])
    return sorted(head, key=lambda h: -h.score)
