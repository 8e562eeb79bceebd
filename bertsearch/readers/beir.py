"""BEIR-style benchmark folders.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``, other keys become
metadata), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/{split}.tsv`` (a header line, then
``query-id<TAB>corpus-id<TAB>score`` rows).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from bertsearch.errors import CorpusError, MalformedRecord
from bertsearch.readers.jsonl import iter_json_lines, iter_jsonl
from bertsearch.types import Document

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz")


def corpus_file(folder: PathLike) -> Path | None:
    """The corpus file of a BEIR folder (``corpus.jsonl``, or ``corpus.jsonl.gz``), or None."""
    for name in CORPUS_NAMES:
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def is_beir_folder(folder: PathLike) -> bool:
    return Path(folder).is_dir() and corpus_file(folder) is not None


def _require_corpus(folder: PathLike) -> Path:
    path = corpus_file(folder)
    if path is None:
        raise CorpusError(f"{folder} is not a BEIR folder: it has no corpus.jsonl")
    return path


def iter_beir(
    folder: PathLike,
    *,
    id_field: str = "id",
    text_field: str = "text",
    title_field: str = "title",
) -> Iterator[Document | MalformedRecord]:
    """Yield a `Document` or a `MalformedRecord` for each record of the folder's corpus.jsonl.

    With the default ``id_field`` the id is read from ``_id`` (BEIR's key)."""
    yield from iter_jsonl(
        _require_corpus(folder), id_field=id_field, text_field=text_field, title_field=title_field
    )


def load_queries(folder: PathLike) -> dict[str, str]:
    """Read ``queries.jsonl``: query id -> query text. A bad line raises `CorpusError` naming file:line."""
    path = Path(folder) / "queries.jsonl"
    if not path.is_file():
        raise CorpusError(f"{folder} has no queries.jsonl")
    source = os.fspath(path)
    queries: dict[str, str] = {}
    for lineno, obj in iter_json_lines(path):
        if isinstance(obj, MalformedRecord):
            raise CorpusError(f"{obj.source}:{obj.line}: {obj.problem}")
        if not isinstance(obj, dict):
            raise CorpusError(f"{source}:{lineno}: expected a JSON object")
        qid = obj.get("_id", obj.get("id"))
        text = obj.get("text")
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise CorpusError(f"{source}:{lineno}: missing or invalid query id '_id'")
        if not isinstance(text, str):
            raise CorpusError(f"{source}:{lineno}: missing or invalid query text 'text'")
        queries[str(qid)] = text
    return queries


def available_splits(folder: PathLike) -> list[str]:
    """The qrels splits a BEIR folder has (``qrels/*.tsv`` file stems), sorted."""
    qrels = Path(folder) / "qrels"
    if not qrels.is_dir():
        return []
    return sorted(p.stem for p in qrels.glob("*.tsv") if p.is_file())


def load_qrels(folder: PathLike, split: str = "test") -> dict[str, dict[str, int]]:
    """Read ``qrels/{split}.tsv``: query id -> {corpus id: relevance score}.

    Raises `CorpusError` listing the splits that exist when the split file is missing, and
    `CorpusError` (file:line) for a row that is not ``query-id, corpus-id, integer score``.
    """
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = available_splits(folder)
        have = f"the splits there are: {', '.join(splits)}" if splits else "it has no qrels/*.tsv files"
        raise CorpusError(f"{folder} has no qrels for split '{split}' ({path} is missing); {have}")
    source = os.fspath(path)
    qrels: dict[str, dict[str, int]] = {}
    first = True
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            is_first, first = first, False
            parts = line.split("\t")
            if len(parts) == 1:
                parts = line.split()
            if len(parts) != 3:
                raise CorpusError(f"{source}:{lineno}: expected 3 tab-separated columns, got {len(parts)}")
            qid, did, raw_score = (p.strip() for p in parts)
            try:
                score = int(raw_score)
            except ValueError:
                try:
                    score = int(float(raw_score))
                except ValueError:
                    if is_first:
                        continue  # the header line: query-id, corpus-id, score
                    raise CorpusError(f"{source}:{lineno}: score must be an integer, got {raw_score!r}") from None
            qrels.setdefault(qid, {})[did] = score
    return qrels
