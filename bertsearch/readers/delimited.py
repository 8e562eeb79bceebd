"""CSV and TSV corpora, read with the csv module from a streamed file handle.

The first non-blank row is the header. The id and text columns are required, the title
column is optional, and every other column goes into the metadata: as numbers when every
non-empty cell of the column is one (integers when all are; a value with a leading zero, such as
a zip code "02134", keeps the column text), else as strings. Finding the number columns reads
the file once more before its documents. Quoted fields
(as written by Python's csv module, pandas or spreadsheets) may span lines in both formats; a quote mark that
does not make a quoted field (`"Hamlet" is a play`, or one left open) is read as text, line by line, in TSV, and
in CSV the line is read alone.
Bad rows are *yielded* as `MalformedRecord` values; `read_corpus` decides what to do.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from bertsearch.errors import CorpusError, MalformedRecord
from bertsearch.types import Document, not_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]



def _raise_field_size_limit() -> None:
    """Allow fields of any length (the csv default is 128 KiB), as large as the platform allows."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def iter_rows(path: PathLike, *, delimiter: str = ",") -> Iterator[tuple[list[str], int, list[str]] | MalformedRecord]:
    """The rows of a CSV/TSV file after its header: ``(header, line, row)`` for each row of the header's width, or
    a `MalformedRecord` (file, line, problem) for one that cannot be parsed, is not UTF-8, or has another width.

    The first non-blank row is the header (names stripped); blank rows are passed over. Raises `CorpusError`
    when the file is empty or its header cannot be read. Line numbers are those of the first physical line of
    each row; quoted fields may span lines; fields may be of any length."""
    source = os.fspath(path)
    _raise_field_size_limit()
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        lines = _Lines(fh)
        # strict: a quote that does not close a field is an error, not a field that runs on over the next rows
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while True:
            lines.taken = []
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if not lines.taken:
                    break
                if header is None:
                    raise CorpusError(f"{source}:{lines.taken[0][0]}: cannot parse the header row: {exc}") from None
                yield from _first_alone(source, lines, header, delimiter, f"cannot parse row: {exc}")
                continue
            start = lines.taken[0][0] if lines.taken else lines.number
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if any(not_text(cell) for cell in row):  # (undecodable bytes, read as surrogates)
                if header is None:
                    raise CorpusError(f"{source}:{start}: the header row is not UTF-8 text")
                yield MalformedRecord(source, start, "not UTF-8 text")
                continue
            if header is None:
                header = [name.strip() for name in row]
                continue
            if len(row) != len(header):
                problem = f"expected {len(header)} columns (as in the header), got {len(row)}"
                if len(lines.taken) > 1:  # a quote opened a field that took in the rows after it
                    yield from _first_alone(source, lines, header, delimiter, problem)
                else:
                    yield MalformedRecord(source, start, problem)
                continue
            yield header, start, row
    if header is None:
        raise CorpusError(f"{source}: empty file; a header row naming the columns is required")


class _Lines:
    """The physical lines of a file for the csv reader, each with its number; `taken` holds those of the row being
    read, and lines handed `back` are read again before the file's next (see `_first_alone`)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.number = 0  # of the last line read from the file
        self.taken: list[tuple[int, str]] = []
        self.back: list[tuple[int, str]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.back:
            item = self.back.pop(0)
        else:
            text = self.fh.readline()
            if not text:
                raise StopIteration
            self.number += 1
            item = (self.number, text)
        self.taken.append(item)
        return item[1]


def _first_alone(source: str, lines: _Lines, header: list[str], delimiter: str,
                 problem: str) -> Iterator[tuple[list[str], int, list[str]] | MalformedRecord]:
    """The first physical line of a row that could not be parsed, read as a row of its own; the lines after it go
    back to be parsed again. A stray quote mark (`"unbalanced text`) took in every row after it, up to the next
    quote or the end of the file (found 2026-12-06: three documents of a TSV file lost, one counted), and a quoted
    row after it came out with its quote marks. A TSV line is split at its tabs and keeps its quote marks (TSV has
    no quoting); a CSV line is read by the csv module alone. A line that still does not fit the header is
    reported with the row's `problem` (or its own width)."""
    (number, line), *rest = lines.taken
    lines.back[:0] = rest
    text = line.rstrip("\r\n")
    if not text.strip():
        return
    if delimiter == "\t":
        row = text.split("\t")
    else:
        try:
            row = next(csv.reader([text], delimiter=delimiter))
        except csv.Error as exc:
            yield MalformedRecord(source, number, f"cannot parse row: {exc}")
            return
    if any(not_text(cell) for cell in row):
        yield MalformedRecord(source, number, "not UTF-8 text")
    elif len(row) != len(header):
        yield MalformedRecord(source, number, problem if not rest else
                              f"expected {len(header)} columns (as in the header), got {len(row)}")
    else:
        yield header, number, row


def iter_delimited(
    path: PathLike,
    *,
    delimiter: str = ",",
    id_field: str = "id",
    text_field: str = "text",
    title_field: str = "title",
) -> Iterator[Document | MalformedRecord]:
    """Yield a `Document` or a `MalformedRecord` for each data row of a CSV/TSV file.

    Raises `CorpusError` when the file has no header row, or the header lacks the id or the
    text column. Line numbers are those of the first physical line of each row.
    """
    source = os.fspath(path)
    rows = iter_rows(path, delimiter=delimiter)
    first = next(rows, None)  # the header is read (and its errors raised) before any row is judged
    header = header_of(path, delimiter)
    if header is None:
        raise CorpusError(f"{source}: empty file; a header row naming the columns is required")
    id_col, text_col, title_col, meta_cols, numeric = _columns(path, delimiter, header, id_field, text_field, title_field)
    for item in itertools.chain([first] if first is not None else [], rows):
        if isinstance(item, MalformedRecord):
            yield item
            continue
        _, start, row = item
        doc_id = row[id_col]
        if not doc_id.strip():
            yield MalformedRecord(source, start, f"empty id in column '{id_field}'")
            continue
        metadata: dict[str, object] = {}
        for i, name in meta_cols:
            if i not in numeric:
                metadata[name] = row[i]
            elif row[i].strip():  # an empty cell of a number column is no value (a filter's "is null")
                metadata[name] = numeric[i](row[i])
        yield Document(
            id=doc_id,
            text=row[text_col],
            title=row[title_col] if title_col >= 0 else "",
            metadata=metadata,
        )


def header_of(path: PathLike, delimiter: str) -> list[str] | None:
    """The header row of a CSV/TSV file (names stripped), or None when it holds no row at all."""
    _raise_field_size_limit()
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        for row in csv.reader(fh, delimiter=delimiter):
            if row and not (len(row) == 1 and not row[0].strip()):
                return [name.strip() for name in row]
    return None


def _columns(path: PathLike, delimiter: str, header: list[str], id_field: str, text_field: str,
             title_field: str) -> tuple[int, int, int, list[tuple[int, str]], dict[int, type]]:
    """(id column, text column, title column or -1, metadata columns, number columns) of a header."""
    missing = [f"{what} column '{name}'" for what, name in (("id", id_field), ("text", text_field)) if name not in header]
    if missing:
        raise CorpusError(
            f"{os.fspath(path)}: the header has no {' and no '.join(missing)}; its columns are "
            f"{', '.join(repr(h) for h in header)}. Name the columns to use with "
            "--id-field, --text-field and --title-field"
        )
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:  # one would silently take the other's place
        raise CorpusError(f"{os.fspath(path)}: the header names {', '.join(repr(n) for n in twice)} more than once; "
                          "give each column a name of its own")
    id_col = header.index(id_field)
    text_col = header.index(text_field)
    title_col = header.index(title_field) if title_field in header else -1
    used = {id_col, text_col, title_col}
    # a column with no name (a trailing comma, say) is kept as column_N, N counted from 1
    meta_cols = [(i, name or f"column_{i + 1}") for i, name in enumerate(header) if i not in used]
    return id_col, text_col, title_col, meta_cols, number_columns(path, delimiter, len(header), [i for i, _ in meta_cols])


_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def number_columns(path: PathLike, delimiter: str, width: int, columns: list[int]) -> dict[int, type]:
    """Of `columns`, those whose every non-empty cell (in rows of `width` cells) is a number: column -> int or
    float, the type to read its cells as. A column of empty cells only stays text."""
    kinds = {i: int for i in columns}
    seen: set[int] = set()
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header_seen = False
        while kinds:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if not header_seen:
                header_seen = True
                continue
            if len(row) != width:
                continue
            for i in list(kinds):
                cell = row[i].strip()
                if not cell:
                    continue
                seen.add(i)
                if kinds[i] is int and _INTEGER.fullmatch(cell) and abs(int(cell)) < 2**63:
                    continue
                if _DECIMAL.fullmatch(cell) and math.isfinite(float(cell)):
                    kinds[i] = float
                    continue
                del kinds[i]
    return {i: t for i, t in kinds.items() if i in seen}
