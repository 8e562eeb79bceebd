"""Ingestion: documents -> chunks that fit the encoder -> vectors -> one store transaction per batch.

`Ingest.add` is what `Index.add` runs. Unchanged documents (by content hash) cost no encoder work; a document
with neither text nor title leaves the index (a title alone is a one-chunk document); an id read twice keeps its
last record; with `prune`, what the corpus no longer holds is deleted once all of it is read.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import numbers
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .chunking import chunk_spans
from .config import IndexConfig
from .errors import BadArgument
from .models import Encoder
from .store import Store, StoredDocument
from .types import MAX_METADATA_DEPTH, Chunk, Document, IndexReport, metadata_depth, not_text, same_value

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
DocLike = Document | dict[str, Any]


class Ingest:
    """Writes documents into `store`, embedded by `encoder`, chunked by `config`."""

    def __init__(self, path: Path, store: Store, config: IndexConfig, encoder: Encoder) -> None:
        self.path = path
        self.store = store
        self.config = config
        self.encoder = encoder

    def add(
        self,
        docs: Iterable[DocLike],
        *,
        batch_size: int = 128,
        encode_batch_size: int = 32,
        on_progress: Progress | None = None,
        prune: bool = False,
        keep: set[str] | None = None,
        prune_unrelated: bool = False,
    ) -> IndexReport:
        """See `Index.add`. `keep`: ids a prune leaves alone although `docs` did not hold them (filled while `docs`
        is read: files that are there but could not be read this time). A prune that would delete every document
        stored before, none of whose ids `docs` held (another folder, or a subfolder, whose relative paths are other
        ids), deletes nothing and raises, unless `prune_unrelated` (an evaluation's own index, made to hold a
        corpus exactly)."""
        if batch_size < 1:
            raise BadArgument(f"batch size must be > 0, got {batch_size}")
        # an encoder whose every call has a start-up cost (Ray: an actor pool, the model loaded in each) asks for more
        # documents per batch; each batch is still one store transaction
        batch_size = max(batch_size, getattr(self.encoder, "preferred_batch", None) or 0)
        report = IndexReport()
        t0 = time.perf_counter()
        before = self.store.counts()["documents"] if prune else 0
        seen: set[str] = set()  # every id read so far: a duplicate is noticed across batches, and --prune needs them
        counted: set[str] = set()  # ids counted as added, replaced or unchanged: a later duplicate is not counted again
        added: set[str] = set()  # ids new to the index (what a refused prune takes out again)
        for batch in batched(docs, batch_size):
            self._add_batch(batch, report, encode_batch_size, seen, counted, added)
            if on_progress is not None:
                on_progress(len(batch))
        if prune:
            if report.read == report.empty:  # none read, or none with text: a wrong path, format or text field
                n = self.store.counts()["documents"]
                if n:
                    what = "0 documents" if not report.read else f"{report.read} documents, none with text,"
                    raise BadArgument(
                        f"read {what} so --prune would delete all {n} documents of {self.path}; nothing was "
                        "deleted by --prune. Check the corpus path and its --format (and --id-field/--text-field)"
                    )
            keep = keep if keep is not None else set()
            gone = [i for i in self.store.ids() if i not in seen and i not in keep]
            known = report.replaced + report.unchanged + report.metadata_updated + report.deleted
            if before and not known and len(gone) >= before and not prune_unrelated:
                self.store.delete(sorted(added))  # (else the same command run again shares ids, and prunes)
                raise BadArgument(
                    f"none of the {report.read} documents read was among the {before} that {self.path} held before, "
                    f"so --prune would delete all {before}; nothing was changed. Give the corpus indexed before (a "
                    "folder's ids are its files' paths relative to it), or index this one into a new folder")
            report.deleted += self.store.delete(gone) if gone else 0
        report.seconds = time.perf_counter() - t0
        return report

    def _add_batch(
        self, batch: list[DocLike], report: IndexReport, encode_batch_size: int, seen: set[str], counted: set[str],
        added: set[str],
    ) -> None:
        by_id: dict[str, Document] = {}
        emptied: list[str] = []
        for raw in batch:
            report.read += 1
            doc = as_document(raw)
            if doc.id in seen:
                report.duplicates += 1
                if report.duplicates <= 20:
                    log.warning("document id %s appears more than once in the corpus; the later one is kept", doc.id)
                by_id.pop(doc.id, None)
                if doc.id in emptied:
                    emptied.remove(doc.id)
            seen.add(doc.id)
            if not doc.text.strip() and not doc.title.strip():  # a title alone is indexed: a name, a heading
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
                log.warning("document %s has neither text nor title; skipped", i)
        docs = list(by_id.values())
        stored = self.store.hashes([d.id for d in docs])
        todo: list[tuple[Document, str]] = []
        same: list[Document] = []
        repeated: set[str] = set()  # duplicates of an earlier batch: counted there, so that the counts do not depend
        for d in docs:  # on the batch size
            h = content_hash(d)
            if d.id in counted:
                repeated.add(d.id)
            counted.add(d.id)
            if stored.get(d.id) == h:
                same.append(d)
                continue
            if d.id not in repeated:
                if d.id in stored:
                    report.replaced += 1
                else:
                    report.added += 1
                    added.add(d.id)
            todo.append((d, h))
        fresh = [d for d in same if d.id not in repeated]
        if fresh:  # unchanged text: no encoder work, but metadata may have changed
            changed = self.store.update_metadata({d.id: d.metadata for d in fresh})
            report.metadata_updated += changed
            report.unchanged += len(fresh) - changed
        if len(fresh) < len(same):
            self.store.update_metadata({d.id: d.metadata for d in same if d.id in repeated})
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
        special = enc.special_tokens
        spans_of = enc.token_spans([d.text for d in docs] + [d.title for d in docs])  # texts and titles: one call
        text_spans, title_spans = spans_of[: len(docs)], spans_of[len(docs) :]
        title_lens = [len(s) for s in title_spans]
        plans: list[tuple[str, int, list]] = []  # per document: title prefix, budget, chunks
        inputs: list[str] = []
        for d, spans, n_title, t_spans in zip(docs, text_spans, title_lens, title_spans):
            if not spans:  # a title and no text: one chunk, empty in the text, that the title alone stands for
                plans.append(("", window, [Chunk(start=0, end=0, n_tokens=0)]))
                if n_title > window:  # (the model would read its start; the hashing encoder refused it)
                    report.truncated += 1
                    log.warning("document %s: its title, with no text, is longer than the %d word pieces %s reads; "
                                "its start is embedded", d.id, window, self.config.model)
                inputs.append(d.title[: t_spans[window - 1][1]] if n_title > window else d.title)
                continue
            prefix = ""
            budget = window
            if d.title and n_title <= min(self.config.title_tokens, window // 4):
                prefix, budget = d.title + "\n", window - n_title
            elif d.title:
                report.long_titles += 1
            chunks = chunk_spans(d.text, spans, budget, min(self.config.overlap, budget // 2 - 1))
            plans.append((prefix, budget, chunks))
            inputs.extend(prefix + d.text[c.start : c.end] for c in chunks)
        counts = input_tokens(enc, inputs)  # as the model reads them: all documents' chunks in one call
        items: list[StoredDocument] = []
        chunk_inputs: list[str] = []
        at = 0
        for d, h, spans, (prefix, budget, chunks) in zip(docs, hashes, text_spans, plans):
            texts, lengths = inputs[at : at + len(chunks)], counts[at : at + len(chunks)]
            at += len(chunks)
            for _ in range(3):  # the rare document with a chunk too long: chunked again on a smaller budget
                longest = max(lengths, default=0) - special
                smaller = min(budget - 1, budget * window // max(longest, 1))
                if longest <= window or smaller < 4 or not spans:
                    break
                budget = smaller
                chunks = chunk_spans(d.text, spans, budget, min(self.config.overlap, budget // 2 - 1))
                texts = [prefix + d.text[c.start : c.end] for c in chunks]
                lengths = input_tokens(enc, texts)
            if max(lengths, default=0) - special > window:
                report.truncated += sum(n > window + special for n in lengths)
                log.warning("document %s: a chunk is longer than the %d word pieces %s reads even on a smaller "
                            "budget; the model reads only its start", d.id, window, self.config.model)
            items.append(StoredDocument(d, h, chunks, np.zeros((0, self.config.dim), dtype=np.float32)))
            chunk_inputs.extend(texts)
        return items, chunk_inputs


def input_tokens(enc: Encoder, texts: list[str]) -> list[int]:
    """Word pieces the encoder reads for each text, special tokens included."""
    count = getattr(enc, "input_tokens", None)
    if count is not None:
        return list(count(texts))
    return [len(s) + enc.special_tokens for s in enc.token_spans(texts)]


def content_hash(doc: Document) -> str:
    """What decides whether a document must be re-embedded: its title and text."""
    return hashlib.sha256(f"{doc.title}\x00{doc.text}".encode()).hexdigest()


def as_document(raw: DocLike) -> Document:
    if isinstance(raw, Document):
        doc = raw
    elif isinstance(raw, dict):
        known = {"id", "_id", "text", "title", "metadata"}
        doc_id = raw.get("id", raw.get("_id"))
        meta = dict(raw.get("metadata") or {})
        extra = {k: v for k, v in raw.items() if k not in known}
        twice = sorted(k for k in extra if k in meta and not same_value(meta[k], extra[k]))
        if twice:
            raise BadArgument(f"document {doc_id!r:.60}: the field {twice[0]!r} is given twice, at the top level and "
                              "in its metadata, with different values; keep one")
        meta.update(extra)
        doc = Document(id=doc_id, text=raw.get("text"), title=raw.get("title") or "", metadata=meta)  # type: ignore[arg-type]
    else:
        raise BadArgument(f"a document must be a dict or bertsearch.Document, got {type(raw).__name__}")
    if isinstance(doc.id, bool) or not isinstance(doc.id, (str, numbers.Integral)) or doc.id == "":
        raise BadArgument(f"every document needs a non-empty string 'id'; got {doc.id!r}")
    doc.id = as_id(doc.id)
    if not isinstance(doc.text, str):
        raise BadArgument(f"document {doc.id} needs a string 'text'; got {type(doc.text).__name__}")
    if not isinstance(doc.title, str):
        doc.title = str(doc.title)
    for what, value in (("title", doc.title), ("text", doc.text)):
        if not_text(value):
            raise BadArgument(f"document {doc.id!r:.60}: its {what} holds a lone surrogate (half of a character, or "
                              "a byte that could not be decoded), which is not text; fix it or leave it out")
    doc.metadata = _json_metadata(doc)
    return doc


def as_id(value: Any) -> str:
    """A document id as the store keeps it: a string, or a whole number (numpy's too) as its digits; what `add`
    stores, `get` and `delete` find."""
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise BadArgument(f"a document id is a string (or a whole number), not {type(value).__name__}: {value!r:.40}")
    value = value if isinstance(value, str) else str(int(value))
    if not_text(value):
        raise BadArgument(f"the document id {value!r:.60} is not UTF-8 text (a byte that could not be decoded)")
    return value


def _json_metadata(doc: Document) -> dict[str, Any]:
    """`doc`'s metadata as the store keeps it (JSON): dates and times become ISO text; NaN, infinity and other
    objects are refused here, naming the document (NaN reached SQLite's JSON functions, which called the sound
    store damaged; a date raised a bare TypeError)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (datetime.date, datetime.time)):
            return value.isoformat()
        raise TypeError(f"{value!r:.40} (of type {type(value).__name__})")

    if metadata_depth(doc.metadata) > MAX_METADATA_DEPTH:
        raise BadArgument(f"document {doc.id}: its metadata nests lists or objects more than {MAX_METADATA_DEPTH} "
                          "levels deep, which bertsearch does not keep; give metadata of a few levels")
    try:
        text = json.dumps(doc.metadata, allow_nan=False, default=plain, ensure_ascii=False)
        if not_text(text):
            raise BadArgument(f"document {doc.id!r:.60}: its metadata holds a lone surrogate (half of a character, "
                              "or a byte that could not be decoded), which is not text; fix it or leave it out")
        return json.loads(text)
    except ValueError:
        raise BadArgument(f"document {doc.id}: its metadata holds NaN or infinity, which JSON cannot store; give null "
                          "or leave the field out") from None
    except TypeError as e:
        raise BadArgument(f"document {doc.id}: its metadata holds {e}, which JSON cannot store; give strings, numbers, "
                          "booleans, lists or objects") from None


def batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
