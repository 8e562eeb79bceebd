"""JSON Lines corpora: one JSON object per line, optionally gzip-compressed (``*.gz``).

The file is read one line at a time, so a corpus larger than memory works. Bad records are
*yielded* as `MalformedRecord` values rather than raised; `read_corpus` decides whether to
stop or skip them.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from typing import IO, Any

from bertsearch.errors import CorpusError, MalformedRecord
from bertsearch.types import MAX_METADATA_DEPTH, Document, metadata_depth, not_text, same_value

log = logging.getLogger(__name__)

BLOCK_SIZE = 1 << 20  # 1 MiB

PathLike = str | os.PathLike[str]


def open_binary(path: PathLike) -> IO[bytes]:
    """Open a file for reading bytes, decompressing it on the fly when its name ends in .gz."""
    if os.fspath(path).lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def count_lines(path: PathLike) -> int:
    """Count the lines of a file by scanning its bytes in 1 MiB blocks (a final line without a
    trailing newline counts too). Blank lines are counted, so this is an estimate of records."""
    n = 0
    last = b"\n"
    with open_binary(path) as fh:
        while block := fh.read(BLOCK_SIZE):
            n += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        n += 1
    return n


def _numbered_lines(fh: IO[bytes], source: str) -> Iterator[tuple[int, bytes]]:
    """Number the lines of a file; a damaged gzip stream becomes a `CorpusError`."""
    lineno = 0
    try:
        for lineno, raw in enumerate(fh, start=1):
            yield lineno, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise CorpusError(f"{source}:{lineno + 1}: cannot decompress: {exc}") from None


def iter_json_lines(path: PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of a JSON Lines file.

    ``value`` is the parsed JSON value, or a `MalformedRecord` when the line is not valid
    UTF-8 or not valid JSON. Line numbers start at 1.
    """
    source = os.fspath(path)
    with open_binary(path) as fh:
        for lineno, raw in _numbered_lines(fh, source):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte-order mark
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, MalformedRecord(source, lineno, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            try:
                obj = json.loads(line)
                if _SURROGATE_ESCAPE.search(line) and not_text(json.dumps(obj, ensure_ascii=False)):
                    yield lineno, MalformedRecord(source, lineno, "a \\u escape makes half of a character (a lone "
                                                  "surrogate, such as \\udc80), which is not text")
                    continue
                yield lineno, obj
            except json.JSONDecodeError as exc:
                # (a column past the end names the line's end: json counts the newline as a line of its own)
                column = min(exc.pos, len(line.rstrip("\r\n"))) + 1
                msg = exc.msg.removesuffix(" at")  # "Invalid control character %r at"
                yield lineno, MalformedRecord(source, lineno, f"invalid JSON: {msg} at column {column}")
            except RecursionError:
                yield lineno, MalformedRecord(source, lineno, "invalid JSON: nested too deeply")


# a \u escape of a surrogate (a pair makes one character, as JSON writes an emoji; one alone is half of one): only a
# line holding one is searched for a lone surrogate (a line with any other \u escape, as JSON writes every
# non-ASCII character, is not dumped again)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def to_document(
    obj: Any,
    *,
    source: str,
    line: int,
    id_field: str = "id",
    text_field: str = "text",
    title_field: str = "title",
) -> Document | MalformedRecord:
    """Turn one parsed JSON value into a `Document`, or a `MalformedRecord` saying what is wrong.

    The id comes from ``id_field`` (or ``"_id"`` when ``id_field`` is the default ``"id"`` and
    the object has no ``"id"``); integers are converted to strings. ``text_field`` must be a
    string (it may be empty). ``title_field`` is optional. Every other key goes into the
    metadata with its JSON value; a key named ``"metadata"`` holding an object is merged in.
    """
    if not isinstance(obj, dict):
        return MalformedRecord(source, line, f"expected a JSON object, got {_json_type(obj)}")

    used_id = id_field
    if id_field not in obj and id_field == "id" and "_id" in obj:
        used_id = "_id"
    if used_id not in obj:
        extra = " (or '_id')" if id_field == "id" else ""
        return MalformedRecord(
            source, line, f"missing id field '{id_field}'{extra}; keys are {sorted(obj)} (choose one with --id-field)"
        )
    raw_id = obj[used_id]
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return MalformedRecord(source, line, f"id field '{used_id}' must be a string or integer, got {_json_type(raw_id)}")
    doc_id = str(raw_id)
    if not doc_id.strip():
        return MalformedRecord(source, line, f"empty id in field '{used_id}'")

    if text_field not in obj:
        return MalformedRecord(
            source, line, f"missing text field '{text_field}'; keys are {sorted(obj)} (choose one with --text-field)"
        )
    text = obj[text_field]
    if not isinstance(text, str):
        return MalformedRecord(source, line, f"text field '{text_field}' must be a string, got {_json_type(text)}")

    title: Any = obj.get(title_field)
    if title is None:
        title = ""
    elif isinstance(title, (int, float)) and not isinstance(title, bool):
        title = str(title)
    elif not isinstance(title, str):
        return MalformedRecord(source, line, f"title field '{title_field}' must be a string, got {_json_type(title)}")

    metadata: dict[str, Any] = {}
    nested = obj.get("metadata")
    if isinstance(nested, dict) and "metadata" not in (used_id, text_field, title_field):
        metadata.update(nested)
    for key, value in obj.items():
        if key in (used_id, text_field, title_field):
            continue
        if key == "metadata" and isinstance(value, dict):
            continue
        if key in metadata and not same_value(metadata[key], value):
            return MalformedRecord(source, line, f"the field {key!r} is given twice, at the top level and in the "
                                                 "record's metadata object, with different values; keep one")
        metadata[key] = value
    if metadata_depth(metadata) > MAX_METADATA_DEPTH:  # (it stopped the whole run, without file or line)
        return MalformedRecord(source, line, f"its metadata nests lists or objects more than {MAX_METADATA_DEPTH} "
                                             "levels deep, which bertsearch does not keep")
    return Document(id=doc_id, text=text, title=title, metadata=metadata)


def iter_jsonl(
    path: PathLike,
    *,
    id_field: str = "id",
    text_field: str = "text",
    title_field: str = "title",
) -> Iterator[Document | MalformedRecord]:
    """Yield a `Document` or a `MalformedRecord` for each non-blank line of a JSONL file."""
    source = os.fspath(path)
    for lineno, value in iter_json_lines(path):
        if isinstance(value, MalformedRecord):
            yield value
        else:
            yield to_document(
                value, source=source, line=lineno, id_field=id_field, text_field=text_field, title_field=title_field
            )
