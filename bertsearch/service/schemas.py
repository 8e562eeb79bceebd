"""The service's request and response bodies, typed so that the OpenAPI schema is exact, with the caps stated."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

MAX_K = 100
"""Most results one search returns."""
MAX_QUERY_CHARS = 2_000
"""Longest query or question, in characters (the encoder reads 256 word pieces of it anyway)."""
MAX_BATCH = 32
"""Most queries in one batch search."""
MAX_DOCUMENTS = 1_000
"""Most documents in one write."""
MAX_BODY_BYTES = 16 * 2**20
"""Largest request body."""
MAX_IDS = 1_000
"""Most ids in one delete."""

Mode = Literal["hybrid", "dense", "lexical"]
Query = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="Words to search for (not blank).")
Filter = Field(default=None, max_length=MAX_QUERY_CHARS,
               description="A metadata filter, e.g. \"year >= 2020 and lang = 'en'\" (see the filter grammar).")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Typed(Strict):
    """A request whose numbers must be numbers: `"k": true` or `"k": "5"` is refused (422), not read as 1 or 5."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(Typed):
    query: str = Query
    k: int = Field(default=10, ge=1, le=MAX_K, description=f"Results to return (at most {MAX_K}).")
    mode: Mode = "hybrid"
    where: str | None = Filter
    rerank: StrictBool = Field(default=False, description="Re-score the top candidates with the cross-encoder.")
    rerank_depth: int | None = Field(default=None, ge=1, le=MAX_K, description="Candidates the cross-encoder re-scores.")
    rerank_penalty: float | None = Field(default=None, ge=0, le=100, description="Logits lost per first-stage place.")


class BatchSearchRequest(Typed):
    queries: list[str] = Field(min_length=1, max_length=MAX_BATCH, description=f"At most {MAX_BATCH} queries.")
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: Mode = "hybrid"
    where: str | None = Filter
    rerank: StrictBool = False


class AskRequest(Typed):
    question: str = Query
    k: int = Field(default=3, ge=1, le=20, description="Answers to return.")
    passages: int = Field(default=5, ge=1, le=20, description="Top passages the reader reads.")
    hits: int | None = Field(default=None, ge=1, le=MAX_K, description="Hits to return (default: passages).")
    mode: Mode = "hybrid"
    where: str | None = Filter
    rerank: StrictBool = True
    min_confidence: float | None = Field(default=None, ge=0, le=1, description=(
        "Answer only when the answer's confidence reaches this probability (default: the calibration's; "
        "0 answers whenever a span is found)."))


class HitModel(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str
    text: str = Field(description="The chunk that matched best: text[start:end] of the document.")
    chunk_id: int | None
    start: int
    end: int
    scores: dict[str, float]
    ranks: dict[str, int]
    metadata: dict[str, Any]
    page: int | None = Field(default=None, description="The page the chunk starts on (1-based) for a document "
                             "with pages, such as a PDF; null for others.")


class SearchResponse(BaseModel):
    query: str = Field(description="The query as searched (cut to what the model reads when longer).")
    mode: Mode
    k: int
    hits: list[HitModel]
    timings: dict[str, float] = Field(description="Seconds per stage: retrieve, rerank.")


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]


class AnswerModel(BaseModel):
    text: str
    score: float
    doc_id: str
    chunk_id: int | None
    start: int = Field(description="Offset of the answer in its document's text.")
    end: int
    title: str
    context: str = Field(description="The passage the answer was read from.")
    context_start: int
    confidence: float | None = Field(description="The calibrated probability that the answer is right.")
    page: int | None = Field(default=None, description="The page the answer is on (a PDF), else null.")


class AskResponse(BaseModel):
    question: str
    answers: list[AnswerModel] = Field(description="Best first; empty when the reader found no answer.")
    abstained: bool = Field(description="True: no answer reached min_confidence (an honest 'no answer').")
    hits: list[HitModel]
    timings: dict[str, float] = Field(description="Seconds per stage: retrieve, rerank, read.")
    no_answer_probability: float | None = Field(description="The calibrated probability that the index holds no answer.")
    best_candidate: AnswerModel | None = Field(description="When abstaining: the best candidate, with its confidence.")
    min_confidence: float | None = Field(description="The confidence an answer had to reach.")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # other keys become metadata, as in a JSONL corpus

    id: str = Field(min_length=1, max_length=1_000)
    text: str = Field(max_length=MAX_BODY_BYTES)
    title: str = Field(default="", max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentBody(BaseModel):
    """A document's fields for PUT /documents/{id} (the id comes from the path)."""

    model_config = ConfigDict(extra="allow")

    text: str = Field(max_length=MAX_BODY_BYTES)
    title: str = Field(default="", max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsIn(Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    updated_at: str


class WriteReport(BaseModel):
    read: int
    added: int
    replaced: int
    unchanged: int
    metadata_updated: int
    empty: int
    duplicates: int
    deleted: int
    chunks: int
    truncated: int
    seconds: float
    documents: int = Field(description="Documents the index holds after the write.")


class DeleteRequest(Strict):
    ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_IDS)
    where: str | None = Filter
    dry_run: StrictBool = Field(default=False, description="Say what would be deleted; delete nothing.")


class DeleteResponse(BaseModel):
    deleted: int
    would_delete: list[str] | None = Field(default=None, description="With dry_run: the ids that would go.")
    documents: int


class ErrorBody(BaseModel):
    status: int
    code: str = Field(description="bad_request, unauthorized, forbidden, not_found, conflict, too_large, "
                                  "overloaded, busy, not_ready, read_only, internal, not_available, disk_full")
    message: str = Field(description="What went wrong and how to fix it.")
    kind: str | None = Field(default=None, description="The bertsearch exception a program would get for this in "
                                                       "process (BadQuery, BadFilter, ModelMismatch, ...), when there "
                                                       "is one; `bertsearch.connect` raises it")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "loading"]
    models: dict[str, str]


class Info(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    documents: int
    chunks: int
    model: str
    writable: bool
    limits: dict[str, int]
