"""Corpus readers: turn a JSONL/CSV/TSV file, a folder of text files and documents (PDF, Word, EPUB) or a
BEIR folder into a stream of `Document`s.

Everything is streamed (generators over open file handles), so a corpus larger than memory
works. Each format's reader yields either a `Document` or a `MalformedRecord` value;
`read_corpus` raises the latter (``on_error="stop"``) or logs, counts and skips it
(``on_error="skip"``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bertsearch.errors import CorpusError, MalformedRecord
from bertsearch.readers import beir, delimited, folder, jsonl
from bertsearch.types import Document

__all__ = [
    "FORMATS",
    "ON_ERROR",
    "Fields",
    "ReadStats",
    "check_corpus",
    "count_records",
    "detect_format",
    "read_corpus",
]

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "tsv", "folder", "beir")
ON_ERROR = ("stop", "skip")
MAX_ERRORS_KEPT = 20

_FORMAT_HINT = "pass --format jsonl|csv|tsv|folder|beir"
_SUFFIX_FORMATS = (
    ((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"), "jsonl"),
    ((".csv",), "csv"),
    ((".tsv", ".tab"), "tsv"),
)


@dataclass
class Fields:
    """Names of the id, text and title keys (JSONL) or columns (CSV/TSV).

    For JSONL and BEIR, ``"_id"`` is accepted when there is no ``"id"`` and ``id`` is the default.
    """

    id: str = "id"
    text: str = "text"
    title: str = "title"


@dataclass
class ReadStats:
    """Counts filled in while a corpus is read: documents yielded, bad records skipped, and the
    first `MAX_ERRORS_KEPT` problems as ``"file:line: problem"`` (or ``"file: problem"``: a bad record
    without a line, or a file skipped for a fault of its own, such as a scanned or encrypted PDF)."""

    read: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    skipped_files: dict[str, int] = field(default_factory=dict)
    """Files a folder held that are not read, by kind: "binary", "too large", an extension (".jpg"), a fault
    ("encrypted .pdf", ".pdf without text", "damaged .docx") or a missing package
    (".pdf (needs bertsearch[documents])")."""
    present: set[str] = field(default_factory=set)
    """Ids of files that are there but were not read (a binary file, a damaged PDF, a missing package): a prune
    keeps their stored copies."""
    decoded_as: dict[str, list[str]] = field(default_factory=dict)
    """Files that are not UTF-8, by the encoding they were read with (names relative to the folder)."""

    def add_error(self, err: MalformedRecord) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{err.source}:{err.line}: {err.problem}" if err.line else f"{err.source}: {err.problem}")

    def add_skipped(self, item: folder.Skipped) -> None:
        """Count a file passed over by its kind; one at fault is named in `errors` too (it is not a bad record:
        `skipped` is unchanged, and the run goes on whatever ``on_error`` says)."""
        self.skipped_files[item.kind] = self.skipped_files.get(item.kind, 0) + 1
        if item.id:
            self.present.add(item.id)
        if not item.problem:
            log.debug("skipping %s (%s)", item.source, item.kind)
            return
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{item.source}: {item.problem}")
            log.warning("skipping %s: %s", item.source, item.problem)
        else:
            log.debug("skipping %s: %s", item.source, item.problem)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"no such file or folder: {path}")


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess a corpus's format from its path: a folder with corpus.jsonl is "beir", another
    folder "folder"; files go by suffix (.jsonl/.ndjson[.gz], .csv, .tsv/.tab)."""
    p = Path(path)
    _check_exists(p)
    if p.is_dir():
        return "beir" if beir.is_beir_folder(p) else "folder"
    name = p.name.lower()
    for suffixes, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffixes):
            return fmt
    if name.endswith(folder.SUFFIXES):
        raise CorpusError(f"{path} is a single document; index the folder that holds it "
                          f"('bertsearch index {p.parent}'), which reads its .pdf, .docx, .epub, .html, .md and "
                          ".txt files")
    raise CorpusError(f"cannot tell the format of {path} from its name; {_FORMAT_HINT}")


def _resolve(path: str | os.PathLike[str], format: str | None) -> tuple[Path, str]:
    p = Path(path)
    if format is None:
        return p, detect_format(p)
    if format not in FORMATS:
        raise CorpusError(f"unknown corpus format {format!r}; {_FORMAT_HINT}")
    _check_exists(p)
    if format in ("folder", "beir") and not p.is_dir():
        raise CorpusError(f"format '{format}' needs a folder, but {path} is a file")
    if format not in ("folder", "beir") and p.is_dir():
        raise CorpusError(f"format '{format}' needs a file, but {path} is a folder")
    if format == "beir" and not beir.is_beir_folder(p):
        raise CorpusError(f"{path} is not a BEIR folder: it has no corpus.jsonl")
    return p, format


def _records(p: Path, fmt: str, fields: Fields) -> Iterator[Document | MalformedRecord]:
    names = {"id_field": fields.id, "text_field": fields.text, "title_field": fields.title}
    if fmt == "jsonl":
        return jsonl.iter_jsonl(p, **names)
    if fmt == "csv":
        return delimited.iter_delimited(p, delimiter=",", **names)
    if fmt == "tsv":
        return delimited.iter_delimited(p, delimiter="\t", **names)
    if fmt == "beir":
        return beir.iter_beir(p, **names)
    return folder.iter_folder(p)


def read_corpus(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    fields: Fields | None = None,
    on_error: str = "stop",
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """Stream the documents of a corpus.

    ``format`` is one of `FORMATS`, or None to detect it from the path. ``fields`` names the
    id/text/title keys or columns. With ``on_error="stop"`` the first bad record raises
    `MalformedRecord` (file, line, problem); with ``"skip"`` it is logged, counted in
    ``stats`` and skipped. The path, format and on_error are checked at once (raising
    `CorpusError`); the files are opened when the first document is asked for.
    """
    if on_error not in ON_ERROR:
        raise CorpusError(f"unknown on_error value {on_error!r}; use 'stop' or 'skip'")
    p, fmt = _resolve(path, format)
    return _stream(p, fmt, fields or Fields(), on_error, stats if stats is not None else ReadStats())


def _stream(p: Path, fmt: str, fields: Fields, on_error: str, stats: ReadStats) -> Iterator[Document]:
    records = _records(p, fmt, fields)
    try:
        for item in records:
            if isinstance(item, folder.Skipped):
                stats.add_skipped(item)
                continue
            if isinstance(item, MalformedRecord):
                if on_error == "stop":
                    raise item
                stats.add_error(item)
                if stats.skipped <= MAX_ERRORS_KEPT:
                    log.warning("skipping bad record %s:%s: %s", item.source, item.line, item.problem)
                    if stats.skipped == MAX_ERRORS_KEPT:
                        log.warning("further bad records are skipped without a warning each")
                else:
                    log.debug("skipping bad record %s:%s: %s", item.source, item.line, item.problem)
                continue
            stats.read += 1
            encoding = item.metadata.get("encoding") if fmt == "folder" else None
            if encoding is not None:
                stats.decoded_as.setdefault(encoding, []).append(item.id)
                log.warning("%s is not UTF-8; read it as %s", item.id, encoding)
            yield item
    finally:
        records.close()  # type: ignore[attr-defined]
    if stats.skipped:
        log.warning("read %d documents from %s, skipped %d bad records", stats.read, p, stats.skipped)


def check_corpus(
    path: str | os.PathLike[str], format: str | None = None, *, fields: Fields | None = None, on_error: str = "stop"
) -> None:
    """Read a corpus up to its first document, so that a wrong path, format, header or first record is
    reported at once (before a model loads), with the error `read_corpus` would raise."""
    docs = read_corpus(path, format, fields=fields, on_error=on_error)
    quiet = _Quiet()  # the warnings of records skipped on the way come when the corpus is read for good
    log.addFilter(quiet)
    try:
        next(docs, None)
    finally:
        docs.close()  # type: ignore[attr-defined]
        log.removeFilter(quiet)


class _Quiet(logging.Filter):
    """Lets only errors through, for one thread: the pre-read's warnings would be said again by the real read."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.thread != self.thread


def count_records(path: str | os.PathLike[str], format: str | None = None) -> int | None:
    """A fast estimate of the number of records, for a progress bar's total, or None if unknown.

    Counts lines (in 1 MiB blocks) for jsonl, lines less the header for csv/tsv, matching files
    for a folder, and corpus.jsonl lines for beir. Blank lines and multi-line CSV fields make
    the estimate a little high.
    """
    p, fmt = _resolve(path, format)
    try:
        if fmt == "jsonl":
            return jsonl.count_lines(p)
        if fmt in ("csv", "tsv"):
            return max(0, jsonl.count_lines(p) - 1)
        if fmt == "beir":
            corpus = beir.corpus_file(p)
            return jsonl.count_lines(corpus) if corpus is not None else None
        return folder.count_files(p)
    except (OSError, EOFError) as exc:
        log.debug("cannot count the records of %s: %s", p, exc)
        return None
