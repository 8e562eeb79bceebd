"""First-stage retrieval: dense (the vector index), lexical (FTS5 BM25) and their fusion, over one snapshot of
the store, with filters applied before ranking. No model is loaded here that the mode does not need."""

from __future__ import annotations

import bisect
import itertools
import logging
import numbers
import re
from collections.abc import Callable, Iterable
from concurrent.futures import wait
from typing import Any

import numpy as np

from .. import filters
from ..errors import BadArgument, BadQuery
from ..filters import Filter
from ..snippets import STOPWORDS, match_spans
from ..types import Hit, not_text
from . import fusion

log = logging.getLogger(__name__)


def blank(text: str) -> bool:
    """Whether a query holds nothing to search for: only spaces and control characters (a NUL, say)."""
    return not any(c.isprintable() and not c.isspace() for c in text)


class Retriever:
    """Searches `store` and the vector cache `vectors` with `encoder`; `exact_subset`: a filtered dense search is
    exact over the stored vectors when at most this many chunks match."""

    def __init__(self, store: Any, vectors: Any, encoder: Any, config: Any, *, exact_subset: int = 20_000) -> None:
        self.store = store
        self.vectors = vectors
        self.encoder = encoder
        self.config = config
        self.exact_subset = exact_subset

    def search(self, queries: list[str], k: int, mode: str, depth: int, where: str | Filter | None) -> list[list[Hit]]:
        """The top `k` documents of each query (already checked and cut, see `check_queries`); `depth` candidates
        from each of dense and lexical go into hybrid fusion. One snapshot of the store: a writer committing
        meanwhile changes nothing seen half-way."""
        flt = self.filter(where)
        with self.store.snapshot():
            self.store.check_live()
            return self._batch_search(queries, k, mode, depth, flt)

    def filter(self, where: str | Filter | None) -> Filter | None:
        """A filter parsed, its metadata fields checked against those the stored documents have: a field no
        document has (often a typo, or another case) would match nothing in silence."""
        if where is None:
            return None
        if not isinstance(where, (str, Filter)):
            raise BadArgument(f"where is a filter expression (a string, such as \"year >= 2020\"), not "
                              f"{type(where).__name__}")
        flt = filters.parse(where) if isinstance(where, str) else where
        known: set[str] | None = None
        for f in filters.fields(flt):
            if f.column:
                continue
            known = self.store.fields() if known is None else known
            if f.path[0] in known or (not known and self.store.counts()["documents"] == 0):
                continue  # (an empty index matches nothing anyway)
            same = sorted(k for k in known if k.lower() == f.path[0].lower())
            hint = (f"did you mean {', '.join(repr(k) for k in same)}? Field names are case-sensitive" if same else
                    "fields are: " + (", ".join(sorted(known)[:20]) if known else "none (no document has metadata)"))
            raise filters.BadFilter(where if isinstance(where, str) else str(flt),
                                    f"no document has the field {f.path[0]!r} that it names ({hint})")
        return flt

    def check_queries(self, queries: Iterable[str], k: int, mode: str) -> list[str]:
        if isinstance(queries, str) or not isinstance(queries, Iterable):
            raise BadArgument(f"batch_search takes a list of queries, not {type(queries).__name__}; use search() for one")
        queries = list(queries)  # (a generator is read once: it was read empty the second time, and nothing found)
        check_count("k", k)
        if mode not in fusion.MODES:
            raise BadArgument(f"unknown search mode {mode!r}; use one of {', '.join(fusion.MODES)}")
        for q in queries:
            if not isinstance(q, str):
                raise BadQuery(f"a query is text, not {type(q).__name__} ({q!r:.40})")
            if blank(q):
                raise BadQuery("empty query; give some words to search for")
        return [self.cut_query(q, mode)[0] for q in queries]

    def cut_query(self, query: str, mode: str = "hybrid") -> tuple[str, int | None]:
        """`query` cut to what the encoder reads (its window of word pieces; in lexical mode, as many words),
        and how many words were kept, or None when nothing was cut. Every stage sees the cut query: a longer one
        would cost the full-text search and the cross-encoder much and change nothing the encoder sees."""
        if not_text(query):
            raise BadQuery(f"the query {query!r:.60} is not UTF-8 text (a byte the terminal or the program could not "
                           "decode); give it as UTF-8")
        window = self.config.max_tokens - 2
        words = list(re.finditer(r"\S+", query))
        end = words[window - 1].end() if len(words) > window else len(query)
        # lexical mode asks nothing of the encoder: the model is not loaded for it
        pieces = 0 if mode == "lexical" else min(self.config.max_tokens, self.encoder.max_tokens) - self.encoder.special_tokens
        if mode != "lexical" and len(query[:end].encode("utf-8")) > pieces:  # (a word piece is at least one byte)
            window = pieces
            spans = self.encoder.token_spans([query[:end]])[0]
            if len(spans) > window:
                end = spans[window - 1][1]
        if end >= len(query.rstrip()):
            return query, None
        kept = len(query[:end].split())
        log.warning("query of %d words cut to its first %d words, %s", len(words), kept,
                    f"as many as the model reads ({window})" if mode == "lexical" else
                    f"the {window} word pieces the model reads")
        return query[:end], kept

    def _batch_search(self, queries: list[str], k: int, mode: str, depth: int, flt: Filter | None) -> list[list[Hit]]:
        n = max(k, depth) if mode == "hybrid" else k
        cands: list[dict[int, fusion.Candidate]] = [{} for _ in queries]
        encoded = None
        if mode in ("dense", "hybrid"):  # the queries go to the encoder's worker now; BM25 runs meanwhile, here
            later = getattr(self.encoder, "encode_later", None)
            encoded = later(queries) if later is not None else (lambda: self.encoder.encode(queries))
        try:
            lexical = [self.store.bm25(q, n, flt) for q in queries] if mode in ("lexical", "hybrid") else []
            dense = self._dense(queries, n, flt, encoded) if encoded is not None else []
        finally:  # a search that needed no vectors (nothing passed its filter) or failed waits for the worker's call
            future = getattr(encoded, "future", None)
            if future is not None:
                wait([future])
        for qi, ranked in enumerate(dense):
            for r, (doc, cid, score, doc_id) in enumerate(ranked, start=1):
                c = cands[qi].setdefault(doc, fusion.Candidate(doc, cid, doc_id))
                c.scores["dense"], c.ranks["dense"] = score, r
        for qi, found in enumerate(lexical):
            for r, (doc, score, doc_id) in enumerate(found, start=1):
                c = cands[qi].setdefault(doc, fusion.Candidate(doc))
                c.scores["lexical"], c.ranks["lexical"] = score, r
                c.doc_id = doc_id
        results = []
        for q, cs in zip(queries, cands):
            if mode == "hybrid":
                rankings = {
                    s: [d for d, _ in sorted(((c.doc, c.ranks[s]) for c in cs.values() if s in c.ranks), key=lambda x: x[1])]
                    for s in ("dense", "lexical")
                }
                top = fusion.rrf(rankings, k, {c.doc: c.doc_id for c in cs.values()})
                for r, (doc, score) in enumerate(top, start=1):
                    cs[doc].scores["hybrid"], cs[doc].ranks["hybrid"] = score, r
                ordered = [cs[doc] for doc, _ in top]
            else:
                ordered = sorted(cs.values(), key=lambda c: c.ranks[mode])[:k]
            results.append(self._hits(q, ordered, mode))
        return results

    def _dense(self, queries: list[str], k: int, flt: Filter | None = None,
               encoded: Callable[[], np.ndarray] | None = None) -> list[list[tuple[int, int, float, str]]]:
        """`encoded`: waits for the queries' vectors (begun by the caller); None: encode them here."""
        encoded = encoded or (lambda: self.encoder.encode(queries))
        vectors = self.vectors
        allowed = None
        if flt is not None:
            allowed = self.store.chunk_ids_where(flt)
            if len(allowed) <= self.exact_subset:  # small subset: exact search over its stored vectors
                return self._dense_exact(queries, k, allowed, encoded)
        total = vectors.count()  # (the backend follows the store's change feed: up to date as of this call)
        if total == 0:
            return [[] for _ in queries]
        xq = encoded()  # (nq, dim)
        kc = min(total, max(4 * k, 64))
        while True:
            D, I = vectors.search(xq, kc, allowed=allowed, where=flt)  # (nq, <= kc) each
            if not vectors.exact:
                D, I = self._rescore(xq, I)
            # (a chunk the backend has that this snapshot of the store has not, written or deleted by another
            # thread meanwhile, has no document here and is passed over)
            chunk_doc = self.store.chunk_doc_ids(np.unique(I[I >= 0]).tolist())
            out = [fusion.best_chunk_per_doc(D[i], I[i], chunk_doc, k) for i in range(len(queries))]
            if kc >= total or all(len(o) >= k for o in out):
                return out
            kc = min(total, kc * 4)  # many chunks of few documents: look deeper

    def _dense_exact(self, queries: list[str], k: int, ids: np.ndarray,
                     encoded: Callable[[], np.ndarray]) -> list[list[tuple[int, int, float, str]]]:
        if len(ids) == 0:
            return [[] for _ in queries]
        xq = encoded()  # (nq, dim)
        xb = self.store.chunk_vectors(ids.tolist(), self.config.dim, self.config.vector_dtype)  # (n, dim)
        D = xq @ xb.T  # (nq, n)
        order = np.argsort(-D, axis=1, kind="stable")
        chunk_doc = self.store.chunk_doc_ids(ids.tolist())
        return [fusion.best_chunk_per_doc(D[i, order[i]], ids[order[i]], chunk_doc, k) for i in range(len(queries))]

    def _rescore(self, xq: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products for an approximate index's candidates, from the stored vectors (a candidate this
        snapshot of the store does not hold, written or deleted meanwhile, drops out)."""
        I = np.where(np.isin(I, self.store.existing_chunks(np.unique(I[I >= 0]).tolist())), I, -1)
        ids = np.unique(I[I >= 0])
        if not len(ids):
            return np.full(I.shape, -np.inf, dtype=np.float32), I
        xb = self.store.chunk_vectors(ids.tolist(), self.config.dim, self.config.vector_dtype)  # (n, dim)
        pos = np.searchsorted(ids, np.where(I >= 0, I, ids[0]))  # (nq, kc)
        D = np.einsum("qd,qkd->qk", xq, xb[pos])
        D = np.where(I >= 0, D, -np.inf)
        order = np.argsort(-D, axis=1, kind="stable")
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def _hits(self, query: str, cands: list[fusion.Candidate], mode: str) -> list[Hit]:
        docs = self.store.documents([c.doc for c in cands])
        need = [c.doc for c in cands if c.chunk is None]
        chunks_by_doc = self.store.doc_chunks(need) if need else {}
        words = fusion.query_words(query)
        spans = self.store.chunk_docs([c.chunk for c in cands if c.chunk is not None])
        hits = []
        for rank, c in enumerate(cands, start=1):
            d = docs.get(c.doc)
            if d is None:  # deleted since the search began
                continue
            if c.chunk is None:
                c.chunk = fusion.best_lexical_chunk(d["text"], chunks_by_doc.get(c.doc, []), words)
                start, end = next(((a, b) for cid, a, b in chunks_by_doc.get(c.doc, []) if cid == c.chunk), (0, len(d["text"])))
            else:
                _, start, end = spans[c.chunk]
            metadata = d["metadata"]
            page = None
            if PAGE_STARTS in metadata:
                page = page_at(metadata.get(PAGE_STARTS), start + _focus(d["text"][start:end], words))
            if PAGE_STARTS in metadata:  # a long list of offsets, of no use beside the page itself
                metadata = {k: v for k, v in metadata.items() if k != PAGE_STARTS}
            hits.append(
                Hit(
                    rank=rank,
                    doc_id=d["id"],
                    score=c.scores[mode],
                    title=d["title"],
                    text=d["text"][start:end],
                    chunk_id=c.chunk,
                    start=start,
                    end=end,
                    scores=dict(c.scores),
                    ranks=dict(c.ranks),
                    metadata=metadata,
                    page=page,
                )
            )
        return hits


def _focus(chunk: str, words: set[str]) -> int:
    """Where in `chunk` the query is: the first place of its rarest word there, stopwords aside ("when are the neap
    tides": "neap", though "the" and "tides" stand first), else 0. A hit's page is the page of this place."""
    spans = match_spans(chunk, words - STOPWORDS) or match_spans(chunk, words)
    if not spans:
        return 0
    seen: dict[str, list[int]] = {}
    for a, b in spans:  # (a word and its plural count as one: "Apples", "apple"; "internet" is not "interstellar")
        w = chunk[a:b].lower()
        seen.setdefault(w[:-1] if w.endswith("s") and len(w) > 3 else w, []).append(a)
    return min(seen.values(), key=lambda places: (len(places), places[0]))[0]


def check_count(name: str, n: Any) -> None:
    """Refuses a count of results, candidates or passages that is not a whole number from 1 to MAX_K."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or not 1 <= n <= fusion.MAX_K:
        raise BadArgument(f"{name} must be a whole number from 1 to {fusion.MAX_K:,}, got {n!r:.40}")


PAGE_STARTS = "page_starts"
"""The metadata key where a document with pages (a PDF, see `readers.documents`) keeps each page's start offset."""


def page_at(starts: Any, offset: int) -> int | None:
    """The 1-based page holding character `offset`, given each page's start (page 1 at 0, ascending), or None
    when `starts` is not such a list (a document without pages, or a field of that name meaning something else)."""
    if not isinstance(starts, list) or not starts or not all(type(s) is int for s in starts) \
            or any(a > b for a, b in itertools.pairwise(starts)):
        return None
    return max(1, bisect.bisect_right(starts, offset))

