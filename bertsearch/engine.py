"""The engine: composes store, vectors, encoder and ranking into index, add and search.

No SQL and no tensor code here; those live in `store` and `models`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import filters, retrieval
from .chunking import chunk_spans
from .config import IndexConfig
from .errors import BadArgument, BadQuery, BertsearchError, IndexNotFound, ModelMismatch, from_sqlite
from .filters import Filter
from .models import Encoder, load_encoder
from .store import Store, StoredDocument
from .types import Answer, AskResult, Document, Hit, IndexReport, Span

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
DocLike = Document | dict[str, Any]


class Index:
    """A search index in a folder: `store.db` (the truth), `vectors.faiss` (derived), `config.json`.

    >>> ix = Index.open("indexes/demo", create=True)
    >>> ix.add([{"id": "1", "title": "Aurora", "text": "An aurora is a natural light display..."}])
    >>> ix.search("what causes the northern lights", k=5)
    """

    VECTORS = "vectors.faiss"
    CONFIG = "config.json"

    def __init__(
        self,
        path: Path,
        store: Store,
        config: IndexConfig,
        encoder: Encoder,
        *,
        gpu: bool | None = None,
        reranker: str | None = None,
        reader: str | None = None,
        device: str | None = None,
        precision: str = "auto",
    ) -> None:
        self.path = path
        self.store = store
        self.config = config
        self.encoder = encoder
        self.gpu = gpu
        self._vectors: Any = None
        self._built_at = 0.0
        self.max_staleness = 5.0
        self.exact_subset = 20_000  # filtered dense search is exact when this few chunks match
        # chosen with the shipped cross-encoder on squad-dev-retrieval and SciFact's train claims (README,
        # "Reranking and answers"): the top DEPTH re-scored, each losing PENALTY logits per place it stood below the
        # first stage's top, so that a confident cross-encoder decides and an unsure one defers to the first stage
        self.rerank_depth = 20  # candidates the cross-encoder re-scores
        self.rerank_penalty = 0.75  # logits per first-stage place (0: the cross-encoder's order alone)
        # how answers from different passages compare (see rank_answers), chosen by `eval ask` on squad-dev-retrieval
        # (README, "Reranking and answers"): margin plus half the passage's cross-encoder score, F1 33.7 against
        # 24.7 for raw span scores at the shipped threshold, 59.8 against 44.5 never abstaining
        self.answer_scoring = "margin"
        self.answer_passage_weight = 0.5
        self.last_timings: dict[str, float] = {}
        self._reranker: Any = None
        self._reader: Any = None
        self._reranker_name: str | None = reranker
        self._reader_name: str | None = reader
        self._device = device
        self._precision = precision  # the encoder's, and the reranker's and reader's when they load
        self.created = False  # whether Index.open made this index's folder

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        model: str | None = None,
        create: bool = False,
        ann: str | None = None,
        overlap: int | None = None,
        vector_dtype: str | None = None,
        device: str | None = None,
        gpu: bool | None = None,
        reranker: str | None = None,
        reader: str | None = None,
        precision: str = "auto",
    ) -> Index:
        """Open the index at `path`; with `create=True`, make it if it does not exist.

        `model` defaults to the model the index was built with (or, for a new index, the packaged
        all-MiniLM-L6-v2). Naming a different model than the index's vectors came from is an error.
        `gpu`: search FAISS on the GPU; None (the default) uses one when faiss-gpu finds a GPU.
        `reranker` and `reader` name the cross-encoder and the extractive reader (a folder or model
        id; default: the ones shipped with bertsearch); they load on first use. `precision` is every
        model's: "auto" (bfloat16 autocast on CPUs that run it natively), "fp32" or "bf16".
        """
        from .reindex import recover

        path = Path(path)
        recover(path)  # a re-index cut off between its two renames
        db = path / Store.FILE
        made = False  # this call made the folder: a failure removes it again, never leaving a half-made index
        if not db.exists():
            if not create:
                raise IndexNotFound(str(path))
            if path.exists() and not path.is_dir():
                raise BadArgument(f"{path} is a file, not an index folder; choose another --index path")
            made = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
        try:
            store = Store(db)
        except BaseException:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        try:
            config = store.config
            if config is None:
                if not create:  # a store whose creation was cut off before its config was written
                    raise IndexNotFound(str(path))
                encoder = load_encoder(model, device=device, precision=precision)
                config = IndexConfig(
                    model=encoder.name,
                    fingerprint=encoder.fingerprint(),
                    dim=encoder.dim,
                    max_tokens=encoder.max_tokens,
                    overlap=overlap if overlap is not None else encoder.max_tokens // 8,
                    ann=ann if ann is not None else "flat",
                    vector_dtype=vector_dtype if vector_dtype is not None else "float32",
                )
                store.set_config(config)
            else:
                encoder = load_encoder(model if model is not None else config.model, device=device, precision=precision)
                _check_model(path, config, encoder, named=model is not None)
                changed = False
                if ann is not None and ann != config.ann:
                    log.info("switching the vector index of %s from %s to %s", path, config.ann, ann)
                    config.ann, changed = ann, True
                for name, value in (("overlap", overlap), ("vector_dtype", vector_dtype)):
                    if value is not None and value != getattr(config, name):
                        raise BadArgument(
                            f"{path} was built with {name}={getattr(config, name)}; it cannot change for an "
                            "existing index: index into a new folder instead"
                        )
                if changed:
                    store.set_config(config)
        except sqlite3.DatabaseError as e:
            store.close()
            raise from_sqlite(e, str(db)) from None
        except BaseException:
            store.close()
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        _mirror_config(path / cls.CONFIG, config)
        ix = cls(path, store, config, encoder, gpu=gpu, reranker=reranker, reader=reader, device=device,
                 precision=precision)
        ix.created = made
        return ix

    def close(self) -> None:
        """Close the store; using the index afterwards raises `IndexClosed`. Closing twice is harmless."""
        self.store.close()
        self._vectors = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        docs: Iterable[DocLike],
        *,
        batch_size: int = 128,
        encode_batch_size: int = 32,
        on_progress: Progress | None = None,
        prune: bool = False,
    ) -> IndexReport:
        """Add documents, replacing those whose id is already stored. Unchanged ones cost no encoder work.

        With `prune`, documents stored but absent from `docs` are deleted once all of `docs` is read
        (so an interrupted run deletes nothing).
        """
        if batch_size < 1:
            raise BadArgument(f"batch size must be > 0, got {batch_size}")
        report = IndexReport()
        t0 = time.perf_counter()
        seen: set[str] = set()  # every id read so far: a duplicate is noticed across batches, and --prune needs them
        for batch in _batched(docs, batch_size):
            self._add_batch(batch, report, encode_batch_size, seen)
            if on_progress is not None:
                on_progress(len(batch))
        if prune:
            if not seen:
                n = self.store.counts()["documents"]
                if n:
                    raise BadArgument(
                        f"read 0 documents, so --prune would delete all {n} documents of {self.path}; nothing was "
                        "deleted. Check the corpus path and its --format (and --id-field/--text-field)"
                    )
            gone = [i for i in self.store.ids() if i not in seen]
            report.deleted += self.store.delete(gone) if gone else 0
        self.refresh_vectors()
        report.seconds = time.perf_counter() - t0
        return report

    def add_corpus(
        self,
        source: str | Path,
        *,
        format: str | None = None,
        fields: Any = None,
        on_error: str = "stop",
        batch_size: int = 128,
        on_progress: Progress | None = None,
        prune: bool = False,
    ) -> IndexReport:
        """Read a corpus (JSONL, CSV/TSV, a folder of files, or BEIR) as a stream and add it.

        With `prune`, documents no longer in the corpus are deleted from the index.
        """
        from .readers import ReadStats, read_corpus

        stats = ReadStats()
        docs = read_corpus(source, format, fields=fields, on_error=on_error, stats=stats)
        if prune and on_error == "skip":
            raise BadArgument("--prune with --on-error skip could delete documents whose records are malformed; use one or the other")
        report = self.add(docs, batch_size=batch_size, on_progress=on_progress, prune=prune)
        report.skipped = stats.skipped
        report.errors = list(stats.errors)
        report.skipped_files = dict(stats.skipped_files)
        report.decoded_as = {k: list(v) for k, v in stats.decoded_as.items()}
        return report

    def _add_batch(self, batch: list[DocLike], report: IndexReport, encode_batch_size: int, seen: set[str]) -> None:
        by_id: dict[str, Document] = {}
        emptied: list[str] = []
        for raw in batch:
            report.read += 1
            doc = _as_document(raw)
            if doc.id in seen:
                report.duplicates += 1
                if report.duplicates <= 20:
                    log.warning("document id %s appears more than once in the corpus; the later one is kept", doc.id)
                by_id.pop(doc.id, None)
                if doc.id in emptied:
                    emptied.remove(doc.id)
            seen.add(doc.id)
            if not doc.text.strip():
                report.empty += 1
                emptied.append(doc.id)  # a stored document whose text is now empty leaves the index
                continue
            by_id[doc.id] = doc
        if emptied:
            gone = self.store.existing(emptied)
            if gone:
                report.deleted += self.store.delete(gone)
                log.warning("%d documents now have no text and were removed from the index: %s", len(gone),
                            ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else ""))
            for i in sorted(set(emptied) - set(gone))[:5]:
                log.warning("document %s has no text; skipped", i)
        docs = list(by_id.values())
        stored = self.store.hashes([d.id for d in docs])
        todo: list[tuple[Document, str]] = []
        same: list[Document] = []
        for d in docs:
            h = content_hash(d)
            if stored.get(d.id) == h:
                same.append(d)
                continue
            if d.id in stored:
                report.replaced += 1
            else:
                report.added += 1
            todo.append((d, h))
        if same:  # unchanged text: no encoder work, but metadata may have changed
            changed = self.store.update_metadata({d.id: d.metadata for d in same})
            report.metadata_updated += changed
            report.unchanged += len(same) - changed
        if not todo:
            return
        items, inputs = self._chunk([d for d, _ in todo], [h for _, h in todo], report)
        xb = self.encoder.encode(inputs, batch_size=encode_batch_size)  # (n_chunks, dim)
        pos = 0
        for item in items:
            item.vectors = xb[pos : pos + len(item.chunks)]
            pos += len(item.chunks)
        self.store.write(items, dtype=self.config.vector_dtype)
        report.chunks += len(inputs)

    def _chunk(self, docs: list[Document], hashes: list[str], report: IndexReport) -> tuple[list[StoredDocument], list[str]]:
        """Chunks of each document and the encoder input of each chunk (title, newline, chunk text).

        The chunker counts word pieces of the whole text; a chunk on its own can tokenize longer (a cut inside a
        word, a tokenizer that marks word starts), so each input is counted again as the model will read it, and a
        document with an input too long is chunked again on a smaller budget. What still does not fit is counted
        in `report.truncated`: the model would read only its first window."""
        enc = self.encoder
        window = min(self.config.max_tokens, enc.max_tokens) - enc.special_tokens
        text_spans = enc.token_spans([d.text for d in docs])
        title_lens = [len(s) for s in enc.token_spans([d.title for d in docs])]
        items: list[StoredDocument] = []
        inputs: list[str] = []
        for d, h, spans, n_title in zip(docs, hashes, text_spans, title_lens):
            prefix = ""
            budget = window
            if d.title and n_title <= min(self.config.title_tokens, window // 4):
                prefix, budget = d.title + "\n", window - n_title
            elif d.title:
                report.long_titles += 1
            for attempt in range(4):
                chunks = chunk_spans(d.text, spans, budget, min(self.config.overlap, budget // 2 - 1))
                texts = [prefix + d.text[c.start : c.end] for c in chunks]
                longest = max(input_tokens(enc, texts), default=0) - enc.special_tokens  # as the model reads it
                smaller = min(budget - 1, budget * window // max(longest, 1))
                if longest <= window or smaller < 4:
                    break
                budget = smaller
            if longest > window:
                report.truncated += sum(n > window + enc.special_tokens for n in input_tokens(enc, texts))
                log.warning("document %s: a chunk is longer than the %d word pieces %s reads even on a smaller "
                            "budget; the model reads only its start", d.id, window, self.config.model)
            items.append(StoredDocument(d, h, chunks, np.zeros((0, self.config.dim), dtype=np.float32)))
            inputs.extend(texts)
        return items, inputs

    def delete(self, ids: Iterable[str] = (), *, where: str | Filter | None = None, dry_run: bool = False) -> int:
        """Delete documents by id, or those matching a filter (one or the other, never both); returns how many
        were deleted, or with `dry_run` how many would be (see `to_delete` for which)."""
        ids = list(ids) if not isinstance(ids, str) else ids
        gone = self.to_delete(ids, where=where)  # checks the arguments (and the filter's fields) in every case
        if dry_run:
            return len(gone)
        if ids:
            n = self.store.delete(ids)
        else:
            n = self.store.delete_where(self._filter(where))  # type: ignore[arg-type]
        self.refresh_vectors()
        return n

    def to_delete(self, ids: Iterable[str] = (), *, where: str | Filter | None = None) -> list[str]:
        """The ids of the stored documents `delete` would delete with these arguments (a dry run)."""
        if isinstance(ids, str):
            raise BadArgument("give document ids as a list, not one string")
        ids = list(ids)
        if not ids and where is None:
            raise BadArgument("give document ids (a list) or a filter to delete")
        if ids and where is not None:
            raise BadArgument(
                "give ids or a filter, not both (--id or --where): delete by id, then by filter, as two commands; "
                "--dry-run shows what each would delete"
            )
        return self.store.existing(ids) if ids else self.store.ids_where(self._filter(where))  # type: ignore[arg-type]

    def _filter(self, where: str | Filter | None) -> Filter | None:
        """A filter parsed, its metadata fields checked against those the stored documents have: a field no
        document has (often a typo, or another case) would match nothing in silence."""
        if where is None:
            return None
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
            raise BadQuery(f"no document has the field {f.path[0]!r} that the filter names; {hint}")
        return flt

    # -- vectors ----------------------------------------------------------------------------------

    @property
    def vectors(self) -> Any:
        """The FAISS index, loaded from disk if it matches the store, else rebuilt from stored vectors.

        While another process is writing, the store's generation moves with every batch it commits;
        a reader then keeps its index for up to `max_staleness` seconds instead of rebuilding it for
        every query. Chunks deleted since are never returned (hits are looked up in the store); chunks
        added since show up at the next rebuild.
        """
        generation = self.store.generation()
        vi = self._vectors
        if vi is None or (vi.generation != generation and time.monotonic() - self._built_at > self.max_staleness):
            self._vectors = self._load_or_build(generation)
            self._built_at = time.monotonic()
        return self._vectors

    def refresh_vectors(self) -> None:
        """Bring the FAISS file up to date with the store (no encoder work: vectors come from SQLite)."""
        self._vectors = self._load_or_build(self.store.generation())
        self._built_at = time.monotonic()

    def _load_or_build(self, generation: int) -> Any:
        from .vectors import VectorIndex, gpu_available

        path = self.path / self.VECTORS
        gpu = self.gpu if self.gpu is not None else gpu_available()
        vi = VectorIndex.load(path, generation=generation, spec=self.config.ann, gpu=gpu)
        if vi is not None:
            return vi
        t0 = time.perf_counter()
        generation, ids, xb = self.store.vectors(self.config.dim, self.config.vector_dtype)
        vi = VectorIndex.build(ids, xb, self.config.ann, generation=generation, gpu=gpu)
        try:
            vi.save(path)
        except (OSError, RuntimeError) as e:  # a read-only index or a full disk still searches; the rebuild is not kept
            log.warning("could not save the vector index to %s (%s)", path, e)
        log.info("built the %s vector index over %d chunks in %.1fs", self.config.ann, len(ids), time.perf_counter() - t0)
        return vi

    # -- searching --------------------------------------------------------------------------------

    def search(
        self, query: str, k: int = 10, mode: str = "hybrid", *, where: str | Filter | None = None, rerank: bool = False
    ) -> list[Hit]:
        """The top `k` documents for `query`; mode is hybrid (default), dense or lexical.

        `where` restricts the search to documents whose metadata match a filter such as
        ``"year >= 2020 and lang = 'en'"`` (see `bertsearch.filters`); it applies before ranking, so
        k documents come back whenever k match. `rerank` re-scores the top `rerank_depth` candidates
        with the cross-encoder. Each stage's time is in `last_timings` afterwards.
        """
        return self.batch_search([query], k=k, mode=mode, where=where, rerank=rerank)[0]

    def batch_search(
        self,
        queries: list[str],
        k: int = 10,
        mode: str = "hybrid",
        *,
        where: str | Filter | None = None,
        depth: int = 100,
        rerank: bool = False,
    ) -> list[list[Hit]]:
        """Search many queries at once (the encoder sees them as one batch).

        `depth` is how many candidates each of dense and lexical contributes to hybrid fusion.
        The search reads one snapshot of the store, so a writer committing meanwhile changes nothing
        it sees half-way.
        """
        flt = self._filter(where)
        queries = self._check_queries(queries, k, mode)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        first_k = max(k, self.rerank_depth) if rerank else k
        with self.store.snapshot():
            results = self._batch_search(queries, first_k, mode, depth, flt)
        timings["retrieve"] = time.perf_counter() - t0
        if rerank:
            t1 = time.perf_counter()
            results = [self._rerank(q, hits, self.rerank_depth)[:k] for q, hits in zip(queries, results)]
            timings["rerank"] = time.perf_counter() - t1
        self.last_timings = timings
        return results

    @property
    def reranker(self) -> Any:
        """The cross-encoder (the shipped default unless `Index.open(reranker=...)` named one), loaded on first use."""
        if self._reranker is None:
            from .models.reranker import load_reranker

            self._reranker = load_reranker(self._reranker_name, device=self._device, precision=self._precision)
        return self._reranker

    @property
    def reader(self) -> Any:
        """The extractive reader (the shipped default unless `Index.open(reader=...)` named one), loaded on first use."""
        if self._reader is None:
            from .models.reader import load_reader

            self._reader = load_reader(self._reader_name, device=self._device, precision=self._precision)
        return self._reader

    def _rerank(self, query: str, hits: list[Hit], depth: int) -> list[Hit]:
        """Re-order the top `depth` hits by the cross-encoder's score of (query, title + best chunk), less
        `rerank_penalty` for each place a hit stood below the first stage's top (see `rerank_order`);
        hits below `depth` follow in their first-stage order, unscored."""
        head, tail = hits[:depth], hits[depth:]
        if not head:
            return hits
        passages = [f"{h.title}\n{h.text}" if h.title else h.text for h in head]
        scores = self.reranker.score(query, passages)  # (n,)
        for h, s in zip(head, scores.tolist()):
            h.scores["rerank"] = float(s)
            h.score = float(s)
        ranked = rerank_order(head, self.rerank_penalty) + tail
        for r, h in enumerate(ranked, start=1):
            h.rank = r
            if "rerank" in h.scores:
                h.ranks["rerank"] = r
        return ranked

    def ask(
        self,
        question: str,
        *,
        k: int = 3,
        passages: int = 5,
        mode: str = "hybrid",
        where: str | Filter | None = None,
        rerank: bool = True,
        hits: int | None = None,
    ) -> AskResult:
        """Answer a question from the index: retrieve, rerank, then read the best `passages` chunks.

        Returns up to `k` answers located in their documents (character offsets), the hits (the top
        `hits`, default `passages`, of which the reader read the first `passages`), and each stage's
        time. When the reader judges that no passage holds an answer, `answers` is empty and
        `abstained` is True: an honest "no answer" rather than an invented one.
        """
        if k < 1 or passages < 1 or (hits is not None and hits < 1):
            raise BadArgument(f"k, passages and hits must be > 0, got {k}, {passages} and {hits}")
        question = self._check_queries([question], 1, mode)[0]
        found = self.search(question, k=max(passages, hits or passages), mode=mode, where=where, rerank=rerank)
        timings = dict(self.last_timings)
        read = found[:passages]
        t0 = time.perf_counter()
        spans = self.reader.read(question, [h.text for h in read], per_passage=k) if read else []
        spans = rank_answers(spans, read, scoring=self.answer_scoring, passage_weight=self.answer_passage_weight)[:k]
        timings["read"] = time.perf_counter() - t0
        abstained = self.reader.abstains(spans) if read else True
        answers = [] if abstained else [_answer(read[s.passage], s) for s in spans]
        shown = found[: hits or passages]
        return AskResult(question=question, answers=answers, hits=shown, abstained=abstained, timings=timings)

    def _check_queries(self, queries: list[str], k: int, mode: str) -> list[str]:
        if isinstance(queries, str):
            raise BadArgument("batch_search takes a list of queries; use search() for one")
        if k < 1:
            raise BadArgument(f"k must be > 0, got {k}")
        if mode not in retrieval.MODES:
            raise BadArgument(f"unknown search mode {mode!r}; use one of {', '.join(retrieval.MODES)}")
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise BadQuery("empty query; give some words to search for")
        return [self.cut_query(q, mode)[0] for q in queries]

    def cut_query(self, query: str, mode: str = "hybrid") -> tuple[str, int | None]:
        """`query` cut to what the encoder reads (its window of word pieces; in lexical mode, as many words),
        and how many words were kept, or None when nothing was cut. Every stage sees the cut query: a longer one
        would cost the full-text search and the cross-encoder much and change nothing the encoder sees."""
        window = self.config.max_tokens - 2
        words = list(re.finditer(r"\S+", query))
        end = words[window - 1].end() if len(words) > window else len(query)
        if mode != "lexical":
            spans = self.encoder.token_spans([query[:end]])[0]
            window = min(self.config.max_tokens, self.encoder.max_tokens) - self.encoder.special_tokens
            if len(spans) > window:
                end = spans[window - 1][1]
        if end >= len(query.rstrip()):
            return query, None
        kept = len(query[:end].split())
        log.warning("query of %d words cut to its first %d words, the %d word pieces the model reads",
                    len(words), kept, window)
        return query[:end], kept

    def _batch_search(self, queries: list[str], k: int, mode: str, depth: int, flt: Filter | None) -> list[list[Hit]]:
        n = max(k, depth) if mode == "hybrid" else k
        cands: list[dict[int, retrieval.Candidate]] = [{} for _ in queries]
        if mode in ("dense", "hybrid"):
            for qi, ranked in enumerate(self._dense(queries, n, flt)):
                for r, (doc, cid, score, doc_id) in enumerate(ranked, start=1):
                    c = cands[qi].setdefault(doc, retrieval.Candidate(doc, cid, doc_id))
                    c.scores["dense"], c.ranks["dense"] = score, r
        if mode in ("lexical", "hybrid"):
            for qi, q in enumerate(queries):
                for r, (doc, score, doc_id) in enumerate(self.store.bm25(q, n, flt), start=1):
                    c = cands[qi].setdefault(doc, retrieval.Candidate(doc))
                    c.scores["lexical"], c.ranks["lexical"] = score, r
                    c.doc_id = doc_id
        results = []
        for q, cs in zip(queries, cands):
            if mode == "hybrid":
                rankings = {
                    s: [d for d, _ in sorted(((c.doc, c.ranks[s]) for c in cs.values() if s in c.ranks), key=lambda x: x[1])]
                    for s in ("dense", "lexical")
                }
                top = retrieval.rrf(rankings, k, {c.doc: c.doc_id for c in cs.values()})
                for r, (doc, score) in enumerate(top, start=1):
                    cs[doc].scores["hybrid"], cs[doc].ranks["hybrid"] = score, r
                ordered = [cs[doc] for doc, _ in top]
            else:
                ordered = sorted(cs.values(), key=lambda c: c.ranks[mode])[:k]
            results.append(self._hits(q, ordered, mode))
        return results

    def _dense(self, queries: list[str], k: int, flt: Filter | None = None) -> list[list[tuple[int, int, float, str]]]:
        vi = self.vectors
        allowed = None
        if flt is not None:
            allowed = self.store.chunk_ids_where(flt)
            if len(allowed) <= self.exact_subset:  # small subset: exact search over its stored vectors
                return self._dense_exact(queries, k, allowed)
        # A vector index behind the store (another process wrote since it was built, see `vectors`) misses the
        # chunks written since, which have larger ids: they are searched exactly beside it, from the store.
        stale = vi.generation != self.store.generation()
        new_ids, new_xb = self.store.chunks_after(vi.max_id, self.config.dim, self.config.vector_dtype) if stale else (None, None)
        if new_ids is not None and allowed is not None:
            keep = np.isin(new_ids, allowed)
            new_ids, new_xb = new_ids[keep], new_xb[keep]
        if vi.count == 0 and not (new_ids is not None and len(new_ids)):
            return [[] for _ in queries]
        xq = self.encoder.encode(queries)  # (nq, dim)
        kc = min(vi.count, max(4 * k, 64))
        while True:
            if kc > 0:
                D, I = vi.search(xq, kc, allowed)  # (nq, kc) each
            else:
                D, I = np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            if stale:  # chunks deleted or replaced since the index was built are gone from the store
                live = set(self.store.chunk_doc_ids(np.unique(I[I >= 0]).tolist()))
                gone = ~np.isin(I, list(live)) | (I < 0)
                D, I = np.where(gone, -np.inf, D), np.where(gone, -1, I)
            if self.config.ann != "flat":
                D, I = self._rescore(xq, I)
            if new_ids is not None and len(new_ids):
                D = np.concatenate([D, xq @ new_xb.T], axis=1)  # (nq, kc + n_new)
                I = np.concatenate([I, np.broadcast_to(new_ids, (len(queries), len(new_ids)))], axis=1)
                order = np.argsort(-D, axis=1, kind="stable")
                D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
            chunk_doc = self.store.chunk_doc_ids(np.unique(I[I >= 0]).tolist())
            out = [retrieval.best_chunk_per_doc(D[i], I[i], chunk_doc, k) for i in range(len(queries))]
            if kc >= vi.count or all(len(o) >= k for o in out):
                return out
            kc = min(vi.count, kc * 4)  # many chunks of few documents: look deeper

    def _dense_exact(self, queries: list[str], k: int, ids: np.ndarray) -> list[list[tuple[int, int, float, str]]]:
        if len(ids) == 0:
            return [[] for _ in queries]
        xq = self.encoder.encode(queries)  # (nq, dim)
        xb = self.store.chunk_vectors(ids.tolist(), self.config.dim, self.config.vector_dtype)  # (n, dim)
        D = xq @ xb.T  # (nq, n)
        order = np.argsort(-D, axis=1, kind="stable")
        chunk_doc = self.store.chunk_doc_ids(ids.tolist())
        return [retrieval.best_chunk_per_doc(D[i, order[i]], ids[order[i]], chunk_doc, k) for i in range(len(queries))]

    def _rescore(self, xq: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products for an approximate index's candidates, from the stored vectors."""
        ids = np.unique(I[I >= 0])
        if not len(ids):
            return np.full(I.shape, -np.inf, dtype=np.float32), I
        xb = self.store.chunk_vectors(ids.tolist(), self.config.dim, self.config.vector_dtype)  # (n, dim)
        pos = np.searchsorted(ids, np.where(I >= 0, I, ids[0] if len(ids) else 0))  # (nq, kc)
        D = np.einsum("qd,qkd->qk", xq, xb[pos]) if len(ids) else np.zeros(I.shape, dtype=np.float32)
        D = np.where(I >= 0, D, -np.inf)
        order = np.argsort(-D, axis=1, kind="stable")
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def _hits(self, query: str, cands: list[retrieval.Candidate], mode: str) -> list[Hit]:
        docs = self.store.documents([c.doc for c in cands])
        need = [c.doc for c in cands if c.chunk is None]
        chunks_by_doc = self.store.doc_chunks(need) if need else {}
        words = retrieval.query_words(query)
        spans = self.store.chunk_docs([c.chunk for c in cands if c.chunk is not None])
        hits = []
        for rank, c in enumerate(cands, start=1):
            d = docs.get(c.doc)
            if d is None:  # deleted since the search began
                continue
            if c.chunk is None:
                c.chunk = retrieval.best_lexical_chunk(d["text"], chunks_by_doc.get(c.doc, []), words)
                start, end = next(((a, b) for cid, a, b in chunks_by_doc.get(c.doc, []) if cid == c.chunk), (0, len(d["text"])))
            else:
                _, start, end = spans[c.chunk]
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
                    metadata=d["metadata"],
                )
            )
        return hits

    # -- reading ----------------------------------------------------------------------------------

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """A stored document by id (id, title, text, metadata, updated_at), or None."""
        return self.store.document(doc_id)

    def check(self, *, repair: bool = False) -> dict[str, Any]:
        """Consistency report: store problems (each a string), and whether the vector file is current.

        A vector file that is behind the store is not a problem (it is rebuilt from stored vectors on
        the next search); `repair` rebuilds it now, and rebuilds the full-text index.
        """
        from .vectors import VectorIndex

        try:
            problems = self.store.check(self.config.dim, self.config.vector_dtype)
        except sqlite3.DatabaseError as e:  # damage that SQLite cannot even check around
            raise from_sqlite(e, str(self.store.path)) from None
        if any("malformed" in p or "corrupt" in p or "not a database" in p for p in problems[:1]):
            raise from_sqlite(sqlite3.DatabaseError(problems[0]), str(self.store.path))
        if repair:
            if problems:
                self.store.repair()
            self.refresh_vectors()
            after = self.store.check(self.config.dim, self.config.vector_dtype)
        gen = self.store.generation()
        vi = VectorIndex.load(self.path / self.VECTORS, generation=gen, spec=self.config.ann)
        counts = self.store.counts()
        if vi is not None and vi.count != counts["chunks"]:
            problems.append(f"vector file holds {vi.count} vectors for {counts['chunks']} chunks")
        report = {
            "ok": not (after if repair else problems),
            "problems": problems,
            "vectors": "current" if vi is not None else "behind the store (rebuilt from stored vectors on next search)",
            **counts,
            "generation": gen,
        }
        if repair:
            report["repaired"] = problems
            report["problems"] = after
        return report

    def info(self) -> dict[str, Any]:
        """What the index holds and how it was built."""
        from .vectors import VectorIndex

        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        gen = self.store.generation()
        fresh = VectorIndex.vouched(self.path / self.VECTORS, generation=gen, spec=self.config.ann) is not None
        return {
            "path": str(self.path),
            **self.store.counts(),
            "model": self.config.model,
            "fingerprint": self.config.fingerprint,
            "dim": self.config.dim,
            "max_tokens": self.config.max_tokens,
            "overlap": self.config.overlap,
            "ann": self.config.ann,
            "vector_dtype": self.config.vector_dtype,
            "vectors_fresh": fresh,
            "generation": gen,
            "size_bytes": size,
            "last_updated": self.store.last_updated(),
            "reranker": _model_label(self._reranker_name, "reranker"),
            "reader": _model_label(self._reader_name, "reader"),
        }


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


def _model_label(name: str | None, kind: str) -> str:
    """The reranker or reader a search would use: the name given, else the shipped one (or that none is)."""
    from .models.reader import DEFAULT_READER_PATH
    from .models.reranker import PACKAGED

    if name is not None and name != "default":
        return name
    shipped = (PACKAGED if kind == "reranker" else DEFAULT_READER_PATH) / "config.json"
    return "bertsearch default (shipped)" if shipped.is_file() else f"none (no weights shipped; see bertsearch train {kind})"


def _answer(hit: Hit, span: Span) -> Answer:
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


def _mirror_config(path: Path, config: IndexConfig) -> None:
    """Keep config.json (for people and tools; the store holds the truth) in step, atomically."""
    text = config.to_json() + "\n"
    try:
        if path.exists() and path.read_text() == text:
            return
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write %s (%s)", path, e)


def input_tokens(enc: Encoder, texts: list[str]) -> list[int]:
    """Word pieces the encoder reads for each text, special tokens included."""
    count = getattr(enc, "input_tokens", None)
    if count is not None:
        return list(count(texts))
    return [len(s) + enc.special_tokens for s in enc.token_spans(texts)]


def content_hash(doc: Document) -> str:
    """What decides whether a document must be re-embedded: its title and text."""
    return hashlib.sha256(f"{doc.title}\x00{doc.text}".encode()).hexdigest()


def _check_model(path: Path, config: IndexConfig, encoder: Encoder, *, named: bool) -> None:
    fp = encoder.fingerprint()
    if fp != config.fingerprint:
        what = f"the model {encoder.name}" if named else f"the model at {config.model} has changed since indexing:"
        raise ModelMismatch(
            f"{path} holds vectors of {config.model} (fingerprint {config.fingerprint}); {what} "
            f"(fingerprint {fp}) cannot search them. Leave out --model to use the index's own model, "
            "or index into a new folder with the new model"
        )


def _as_document(raw: DocLike) -> Document:
    if isinstance(raw, Document):
        doc = raw
    elif isinstance(raw, dict):
        known = {"id", "_id", "text", "title", "metadata"}
        doc_id = raw.get("id", raw.get("_id"))
        meta = dict(raw.get("metadata") or {})
        meta.update({k: v for k, v in raw.items() if k not in known})
        doc = Document(id=doc_id, text=raw.get("text"), title=raw.get("title") or "", metadata=meta)  # type: ignore[arg-type]
    else:
        raise BadArgument(f"a document must be a dict or bertsearch.Document, got {type(raw).__name__}")
    if isinstance(doc.id, int) and not isinstance(doc.id, bool):
        doc.id = str(doc.id)
    if not isinstance(doc.id, str) or not doc.id:
        raise BadArgument(f"every document needs a non-empty string 'id'; got {doc.id!r}")
    if not isinstance(doc.text, str):
        raise BadArgument(f"document {doc.id} needs a string 'text'; got {type(doc.text).__name__}")
    if not isinstance(doc.title, str):
        doc.title = str(doc.title)
    return doc


def _batched(items: Iterable[DocLike], n: int) -> Iterator[list[DocLike]]:
    batch: list[DocLike] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["BertsearchError", "Index", "content_hash"]
