"""How much to trust an answer: a calibrated probability that it is right, and that the corpus holds no answer.

Both come from signals the pipeline already has, for each candidate answer (see `features`): the span's lead
over "no answer" in its passage, the cross-encoder's score of that passage and of the best passage, how many of
the passages read agree on the answer, and its lead over the best other answer. Two logistic regressions over
them, fitted on held-apart questions by the open-corpus `bertsearch eval ask SQUAD_V1.1_DEV.json --fit FILE` (see
`evaluation/open_ask.py`), turn them into probabilities:

- `confidence`: that the answer is right (SQuAD F1 >= 0.5 against a gold answer);
- `no_answer`: that the corpus holds no answer to the question at all.

A third, the `ranker`, orders a question's candidates before they are judged: a regression of each candidate's F1
on the same signals and the place of its passage (`RANK_FEATURES`), so that the answer most likely right comes
first.

A calibration is a small JSON file beside the reader's weights (`confidence.json`); the shipped reader has one.
A reader without one uses the shipped calibration, whose probabilities are then only approximate (logged once).
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Hit, Span

log = logging.getLogger(__name__)

FILE = "confidence.json"
FEATURES = ("margin", "passage_rerank", "top_rerank", "agreement", "lead", "length")
# what the ranker (see `Calibration.order`) compares candidates by: `FEATURES` that differ between the candidates of
# one question, and the place of the candidate's passage in the reranked order
RANK_FEATURES = ("margin", "passage_rerank", "agreement", "lead", "length", "place")
NO_RERANK = -10.0  # stands in for the cross-encoder's logit where a search was not reranked (a clear miss)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def same_answer(a: str, b: str) -> bool:
    """Two normalised answers (padded with a space each side) that say the same: one holds the other's words."""
    return a in b or b in a


def features(ranked: list[Span], hits: list[Hit], pool: list[Span] | None = None) -> list[dict[str, float]]:
    """The signals of each candidate in `ranked` (the answers shown, best first, as `qa.distinct` leaves them, over
    the passages `hits` that were read). `pool` is every span read, ranked (`qa.rank_answers`), before `distinct`
    took out the copies: "agreement" counts the passages whose best span in `pool` says the same answer, so the
    copies are what it counts (without `pool`, `ranked` stands in, and agreement sees only each answer's own
    passage)."""
    if not ranked:
        return []
    rerank = [h.scores.get("rerank", NO_RERANK) for h in hits]
    top_rerank = max(rerank) if rerank else NO_RERANK
    best_per_passage: dict[int, str] = {}
    for sp in pool if pool is not None else ranked:  # best first: the first span seen of a passage is its best
        best_per_passage.setdefault(sp.passage, f" {normalize(sp.text)} ")
    read = max(len(hits), 1)
    out = []
    for sp in ranked:
        norm = f" {normalize(sp.text)} "
        others = [o.score for o in ranked if not same_answer(f" {normalize(o.text)} ", norm)]
        out.append({
            "margin": sp.score - sp.null_score,  # (rank_answers moves both alike: the reader's own lead)
            "passage_rerank": rerank[sp.passage] if sp.passage < len(rerank) else NO_RERANK,
            "top_rerank": top_rerank,
            "agreement": sum(same_answer(t, norm) for t in best_per_passage.values()) / read,
            "lead": sp.score - max(others) if others else 10.0,
            "length": math.log1p(len(sp.text.split())),
            "place": float(sp.passage),  # hits are read best first: 0 is the top passage
        })
    return out


@dataclass
class Logistic:
    """p = sigmoid(w . (x - mean) / scale + b) over `features` (default `FEATURES`)."""

    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    features: list[str] | None = None

    def __call__(self, rows: list[dict[str, float]]) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        x = (_matrix(rows, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(x @ np.asarray(self.weights) + self.bias)

    @classmethod
    def fit(cls, rows: list[dict[str, float]], labels: list[float], *, features: tuple[str, ...] | None = None,
            l2: float = 1e-2, steps: int = 50) -> Logistic:
        """Maximum likelihood with a little L2, by Newton's method (IRLS). A label may be a fraction (an answer's
        F1): the fit then matches the expected share."""
        x = _matrix(rows, features)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])  # (n, d + 1)
        y = np.asarray(labels, dtype=np.float64)
        w = np.zeros(z.shape[1])
        reg = l2 * np.eye(z.shape[1])
        reg[-1, -1] = 0.0  # the bias is not shrunk
        for _ in range(steps):
            p = _sigmoid(z @ w)
            grad = z.T @ (p - y) + reg @ w
            hess = (z * (p * (1 - p))[:, None]).T @ z + reg
            step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(weights=w[:-1].tolist(), bias=float(w[-1]), mean=mean.tolist(), scale=scale.tolist(),
                   features=list(features) if features is not None else None)


@dataclass
class Calibration:
    """The two fitted models, and the default `min_confidence` chosen with them (see the module docstring); and,
    optionally, a `ranker` that orders a question's candidate answers by the expected F1 of each (`order`)."""

    confidence: Logistic
    no_answer: Logistic
    min_confidence: float
    plain_confidence: Logistic | None = None  # for searches not reranked: fitted without the cross-encoder's scores
    plain_no_answer: Logistic | None = None
    ranker: Logistic | None = None  # over RANK_FEATURES; None: candidates keep the reader's order
    plain_ranker: Logistic | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def models(self, reranked: bool) -> tuple[Logistic, Logistic]:
        if reranked or self.plain_confidence is None or self.plain_no_answer is None:
            return self.confidence, self.no_answer
        return self.plain_confidence, self.plain_no_answer

    def order(self, candidates: list[Span], hits: list[Hit], pool: list[Span] | None = None) -> list[Span]:
        """`candidates` (distinct answers, in the reader's order) best first by the ranker's expected F1, or as they
        are without a ranker. The reader's order is margin plus half the passage's cross-encoder score; the ranker
        also weighs agreement between passages, the passage's place and the answer's length, fitted on held-apart
        questions (`eval ask SQUAD_V1.1_DEV.json --fit FILE`)."""
        reranked = any("rerank" in h.scores for h in hits)
        ranker = self.ranker if reranked or self.plain_ranker is None else self.plain_ranker
        if ranker is None or len(candidates) < 2:
            return candidates
        expected = ranker(features(candidates, hits, pool))
        return [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: -expected[i])]

    def to_json(self) -> str:
        return json.dumps({"features": list(FEATURES), "min_confidence": self.min_confidence,
                           **{name: getattr(self, name).__dict__ for name in _MODELS if getattr(self, name) is not None},
                           "fitted_on": self.fitted_on}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        d = json.loads(text)
        if tuple(d.get("features", ())) != FEATURES:
            raise ValueError(f"a calibration of other features ({d.get('features')}); fit it again")
        return cls(min_confidence=float(d["min_confidence"]), fitted_on=d.get("fitted_on", {}),
                   **{name: Logistic(**d[name]) for name in _MODELS if name in d})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


_MODELS = ("confidence", "no_answer", "plain_confidence", "plain_no_answer", "ranker", "plain_ranker")
_warned: set[str] = set()


def load(reader_path: str | Path | None) -> Calibration | None:
    """The calibration beside the reader's weights, else the shipped reader's (with a warning) without its ranker
    (fitted on the shipped reader's scores, it would reorder another reader's answers on the wrong scale), else
    None."""
    from ..models.reader import DEFAULT_READER_PATH

    for folder, own in ((Path(reader_path), True) if reader_path is not None else (None, True),
                        (DEFAULT_READER_PATH, False)):
        if folder is None:
            continue
        f = folder / FILE
        if f.is_file():
            try:
                cal = Calibration.from_json(f.read_text(encoding="utf-8"))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring %s (%s)", f, e)
                continue
            foreign = not own and (reader_path is None or Path(reader_path).resolve() != DEFAULT_READER_PATH.resolve())
            if foreign:
                cal = replace(cal, ranker=None, plain_ranker=None)
            if foreign and reader_path is not None and str(reader_path) not in _warned:
                _warned.add(str(reader_path))
                log.warning("reader %s has no %s: its answers' confidence uses the shipped reader's calibration and "
                            "is only approximate (fit one on SQuAD v1.1 dev: 'bertsearch eval ask dev-v1.1.json "
                            "--reader %s --fit %s')", reader_path, FILE, reader_path, Path(reader_path) / FILE)
            return cal
    return None


def _matrix(rows: list[dict[str, float]], names: Any = None) -> np.ndarray:
    return np.asarray([[float(r[f]) for f in names or FEATURES] for r in rows], dtype=np.float64)  # (n, d)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
