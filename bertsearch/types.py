"""Plain data types passed between the parts. No heavy imports."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def not_text(value: str) -> bool:
    """Whether a string holds a lone surrogate: an undecodable byte (Python's surrogateescape, as in a command-line
    argument that is not UTF-8) or a JSON escape of half a character. SQLite and the models cannot take one."""
    return _SURROGATE.search(value) is not None


@dataclass
class Document:
    """A document as read from a corpus: an id, its text, an optional title and metadata."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A window of a document's text, `text[start:end]` of the document, that fits the encoder."""

    start: int
    end: int
    n_tokens: int


@dataclass
class Hit:
    """One search result: a document, the chunk that matched best, and each stage's score.

    `scores` holds the score of every stage that saw the document ("dense": cosine,
    "lexical": BM25, "hybrid": reciprocal-rank fusion; reranked: "rerank", the cross-encoder's logit, and "fused",
    that logit less the first-stage penalty, which ordered the hits) and `ranks` its 1-based rank there.
    `page` is the 1-based page where the query's rarest word in the chunk first stands (stopwords aside; where the
    chunk starts when it holds none of the words), for a document with pages (a PDF: its metadata's "page_starts", which
    `metadata` here leaves out), else None.
    """

    rank: int
    doc_id: str
    score: float
    title: str
    text: str
    chunk_id: int | None
    start: int
    end: int
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Hits(list):
    """The hits of one search, best first (a list of `Hit`), with each stage's time in seconds in `timings`."""

    def __init__(self, hits: Any = (), timings: dict[str, float] | None = None) -> None:
        super().__init__(hits)
        self.timings: dict[str, float] = dict(timings or {})


@dataclass
class IndexReport:
    """What an `add` did. `empty` counts documents with no text (a stored one whose text became empty is
    deleted, and counted in `deleted` too); `duplicates` ids read more than once (the last is kept);
    `truncated` chunks the encoder could not read whole even when chunked again on a smaller budget;
    `long_titles` titles too long to prepend to chunks; `kept_stale` indexed documents whose files are there but
    could not be read this time (their last indexed copy is kept); `skipped_files` and `decoded_as` what a folder held
    that was not read, by kind, and the files that are not UTF-8, by the encoding they were read with."""

    read: int = 0
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    empty: int = 0
    duplicates: int = 0
    skipped: int = 0
    deleted: int = 0
    chunks: int = 0
    truncated: int = 0
    long_titles: int = 0
    kept_stale: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    skipped_files: dict[str, int] = field(default_factory=dict)
    decoded_as: dict[str, list[str]] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["docs_per_second"] = round(self.docs_per_second, 2)
        return d


@dataclass
class Span:
    """An answer span a reader found in one passage: `passage[start:end] == text` (character offsets)."""

    passage: int
    """Index of the passage in the list the reader was given."""
    start: int
    end: int
    text: str
    score: float
    """start logit + end logit of the span (higher is better)."""
    null_score: float
    """start + end logit of the [CLS] "no answer" position for that passage (its best window)."""


@dataclass
class Answer:
    """An answer to a question, located in the original document: `document.text[start:end] == text`."""

    text: str
    score: float
    doc_id: str
    chunk_id: int | None
    start: int
    end: int
    title: str = ""
    context: str = ""
    """The passage the answer was read from (the hit's chunk text)."""
    context_start: int = 0
    """Where `context` starts in the document, so the span is `context[start - context_start : end - context_start]`."""
    confidence: float | None = None
    """The calibrated probability that the answer is right (None where no calibration is available)."""
    page: int | None = None
    """The page the answer is on, for a document with pages (a PDF)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AskResult:
    """What `Index.ask` found: answers best first (empty when it abstained), the hits read, the seconds each
    stage took ("retrieve", "rerank", "read"), and how sure it is."""

    question: str
    answers: list[Answer]
    hits: list[Hit]
    abstained: bool
    timings: dict[str, float] = field(default_factory=dict)
    no_answer_probability: float | None = None
    """The calibrated probability that the corpus holds no answer to the question."""
    best_candidate: Answer | None = None
    """When abstaining: the best candidate there was, with its confidence (how close it came)."""
    min_confidence: float | None = None
    """The confidence an answer had to reach."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_METADATA_DEPTH = 32
"""How deep a document's metadata may nest: metadata 300 levels deep was stored, and then every search that found
the document failed (the service could not serialise it, and the CLI's JSON output hit Python's recursion limit;
found 2026-12-06)."""


def metadata_depth(value: Any) -> int:
    """How many lists and objects deep `value` nests (0 for a plain value), without recursion; counting stops past
    MAX_METADATA_DEPTH."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, (list, tuple)):
            deepest = max(deepest, d + 1)
            if d + 1 > MAX_METADATA_DEPTH:
                return d + 1
            todo.extend((x, d + 1) for x in v)
    return deepest


def same_value(a: Any, b: Any) -> bool:
    """Whether two values of one metadata field are the same as JSON stores them (1 and True, equal in Python, are
    not): a field given twice, at the top level and in `metadata`, is refused only when they differ."""
    import json

    try:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return a is b
