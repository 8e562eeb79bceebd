"""A folder of text files (.txt, .md, .markdown, .html, .htm) and documents (.pdf, .docx, .epub), walked
recursively.

Files are visited in sorted order (by path components), hidden files and folders (names
starting with '.') are ignored, and each file is one document whose id is its path relative
to the folder with forward slashes. A file that is not UTF-8 is read as Windows-1252 (else
Latin-1) and says so; binary files, files over the size limit, files of other extensions, documents
that hold no text to read (a scanned or encrypted PDF, a damaged file) and documents whose package is not
installed are *yielded* as `Skipped` values, which `read_corpus` counts by kind (and names, where the file
itself is at fault); a file that cannot be read is a `MalformedRecord`, which stops the run or is skipped
(``on_error``).
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from bertsearch.errors import MalformedRecord
from bertsearch.readers import documents
from bertsearch.readers.htmltext import html_to_text
from bertsearch.types import MAX_METADATA_DEPTH, Document, metadata_depth, not_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

TEXT_SUFFIXES = (".txt",)
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
DOCUMENT_SUFFIXES = documents.SUFFIXES
SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES + HTML_SUFFIXES + DOCUMENT_SUFFIXES

MAX_FILE_BYTES = 64 * 2**20
"""A text file larger than this is skipped as "too large", not read into memory as one document."""

MAX_DOCUMENT_BYTES = 256 * 2**20
"""The same for a document (.pdf, .docx, .epub), whose text is much smaller than its file."""


@dataclass(frozen=True)
class Skipped:
    """A file the folder reader passed over, and why: its kind ("binary", "too large", an extension such as
    ".jpg" that bertsearch does not read, "encrypted .pdf", ".pdf (needs bertsearch[documents])"), and for a
    file at fault, the `problem` to name it with in a report ("" when the kind says all)."""

    source: str
    kind: str
    problem: str = ""
    id: str = ""
    """The id the file's document has (its relative path): `--prune` keeps a stored copy of a file that is there
    but could not be read this time."""


def iter_files(root: PathLike, *, all_files: bool = False) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, relative_id)`` for each corpus file under ``root`` (with ``all_files``, every file that
    is not hidden), in sorted order.

    Symbolic links to files are followed; links to folders are not (no cycles).
    """
    base = Path(root)

    def walk(folder: Path, prefix: str) -> Iterator[tuple[Path, str]]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + _readable(entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from walk(Path(entry.path), rel + "/")
                elif entry.is_file() and (all_files or entry.name.lower().endswith(SUFFIXES)):
                    yield Path(entry.path), rel
            except OSError as exc:  # pragma: no cover - a racing delete or a broken mount
                log.warning("cannot read %s: %s", entry.path, exc)

    yield from walk(base, "")


def _readable(name: str) -> str:
    """A file name as text: a byte that is not UTF-8 (held by Python as a lone surrogate, which SQLite cannot
    store: one such name stopped the whole folder) written as ``\\xe9``."""
    if not not_text(name):
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def count_files(root: PathLike) -> int:
    """The number of corpus files under ``root`` (without reading them)."""
    return sum(1 for _ in iter_files(root))


def _stem_title(path: Path, text: str) -> str:
    """The file's name as a title, for a file with text: an empty file is not a document of its name alone (as a
    document with a title and no text is, `Ingest.add`)."""
    if not text.strip():
        return ""
    return re.sub(r"[_-]+", " ", _readable(path.stem)).strip()


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_H1 = re.compile(r"^\s{0,3}#[ \t]+(.+?)[ \t]*#*[ \t]*$")


def front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A Markdown file's YAML front matter (between a first line ``---`` and the next ``---`` or ``...``) as metadata,
    and the text after it: it was indexed as body text, shown in snippets and read for answers, and its keys were no
    metadata to filter on (found 2026-12-06). Front matter that is not YAML (or a mapping) is left out of the text
    and gives no metadata; values are kept as YAML reads them (dates become ISO text when stored), but for those
    metadata cannot hold (`_plain`) and keys bertsearch sets itself (`_NOT_FRONT`)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:  # no closing line: not front matter, the file's own text
        return {}, text
    try:
        import yaml

        data = yaml.safe_load("".join(lines[1:end]))
    except ImportError:  # pragma: no cover - PyYAML comes with transformers
        data = None
    except (yaml.YAMLError, RecursionError) as e:
        log.debug("front matter that is not YAML: %s", e)
        data = None
    meta = {str(k): _plain(v) for k, v in data.items() if str(k) not in _NOT_FRONT} if isinstance(data, dict) else {}
    kept = {k: v for k, v in meta.items() if v is not _DROPPED and metadata_depth(v) < MAX_METADATA_DEPTH}
    return kept, "".join(lines[end + 1:]).lstrip("\n")


_NOT_FRONT = {"title", "path", "modified", "encoding", "page_starts"}
"""Front matter keys not taken as metadata: the title is the document's own, and the others bertsearch sets (an
`encoding:` key made the report say the file was read in that encoding)."""
_DROPPED = object()


def _plain(value: Any) -> Any:
    """A front matter value as metadata can hold it (JSON, dates as dates): a set as a sorted list; bytes, NaN,
    infinity and other objects YAML can make are left out (they failed the whole folder's indexing)."""
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=str)
    if isinstance(value, dict):
        value = {str(k): _plain(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v is not _DROPPED}
    if isinstance(value, (list, tuple)):
        return [v for v in map(_plain, value) if v is not _DROPPED]
    if isinstance(value, float) and not math.isfinite(value):
        return _DROPPED
    if value is None or isinstance(value, (str, int, float, bool, datetime, date)):
        return value
    return _DROPPED


def markdown_title(text: str, fallback: str = "") -> str:
    """The first ``# `` heading (outside code fences); else a ``title:`` in YAML front matter;
    else the first non-empty line with its leading '#'s stripped; else ``fallback``."""
    lines = text.splitlines()
    body_start = 0
    front_title = ""
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                body_start = i + 1
                for fm in lines[1:i]:
                    m = re.match(r"^title\s*:\s*(.+?)\s*$", fm)
                    if m:
                        front_title = m.group(1).strip("'\"").strip()
                        break
                break
    first_line = ""
    in_fence = False
    for line in lines[body_start:]:
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _H1.match(line)
        if m:
            return m.group(1).strip()
        if not first_line and line.strip() and re.search(r"\w", line):  # (not a rule: "---" was a title)
            first_line = line.strip().lstrip("#").strip()
    return front_title or first_line or fallback


FALLBACK_ENCODINGS = ("cp1252", "latin-1")
"""Tried in turn for a text file that is not UTF-8 (Windows' Western encoding, then Latin-1, which reads any
bytes); the report names each file read so."""


def decode(data: bytes) -> tuple[str, str | None]:
    """The text of a file's bytes, and the fallback encoding used (None for UTF-8, with or without a BOM). A UTF-16
    byte-order mark (Windows Notepad's "Unicode") is read as UTF-16."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    for encoding in FALLBACK_ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def read_file(path: Path, rel: str) -> Document | MalformedRecord | Skipped:
    """Read one corpus file into a `Document` (or a `MalformedRecord` saying why it can't be, or `Skipped`
    when it holds no text to read). A file that is not UTF-8 is decoded with a fallback, recorded in its
    metadata as ``encoding``; a PDF's metadata has ``page_starts``, where each page starts in its text.
    Raises `documents.MissingExtra` for a document whose package is not installed."""
    source = os.fspath(path)
    suffix = path.suffix.lower()
    read_document = documents.reader(suffix) if suffix in DOCUMENT_SUFFIXES else None  # (MissingExtra: at once)
    limit = MAX_DOCUMENT_BYTES if read_document is not None else MAX_FILE_BYTES
    try:
        st = path.stat()
        if st.st_size > limit:
            log.warning("skipping %s: %.0f MiB, over the limit of %d MiB for one document; split it into several "
                        "files", source, st.st_size / 2**20, limit // 2**20)
            return Skipped(source, "too large", id=rel)
        data = path.read_bytes()
        mtime = st.st_mtime
    except OSError as exc:
        return MalformedRecord(source, 0, f"cannot read file: {exc.strerror or exc}")
    modified = datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(timespec="seconds")
    if read_document is not None:
        try:
            doc = read_document(data)
        except documents.Unreadable as exc:
            return Skipped(source, exc.kind, exc.problem, id=rel)
        metadata = {"path": rel, "modified": modified, **doc.metadata}
        return Document(id=rel, text=doc.text, title=doc.title or _stem_title(path, doc.text), metadata=metadata)
    if b"\x00" in data and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # (UTF-16 has NULs)
        return Skipped(source, "binary", id=rel)
    content, encoding = decode(data)

    if suffix in HTML_SUFFIXES:
        title, text = html_to_text(content)
        title = title or _stem_title(path, text)
    elif suffix in MARKDOWN_SUFFIXES:
        front, text = front_matter(content)
        title = markdown_title(content, fallback=_stem_title(path, text))
    else:
        text = content
        title = _stem_title(path, text)
    metadata = {**(front if suffix in MARKDOWN_SUFFIXES else {}), "path": rel, "modified": modified}
    if encoding is not None:
        metadata["encoding"] = encoding
    return Document(id=rel, text=text, title=title, metadata=metadata)


def iter_folder(root: PathLike) -> Iterator[Document | MalformedRecord | Skipped]:
    """Yield a `Document`, a `MalformedRecord` or a `Skipped` for each file under ``root`` (files of other
    extensions are `Skipped` under their extension, and documents whose package is missing under
    ".pdf (needs bertsearch[documents])", with one warning that says how to install it)."""
    missing: set[str] = set()
    for path, rel in iter_files(root, all_files=True):
        suffix = path.suffix.lower()
        if not path.name.lower().endswith(SUFFIXES):
            yield Skipped(os.fspath(path), suffix or "no extension", id=rel)
            continue
        try:
            yield read_file(path, rel)
        except documents.MissingExtra as exc:
            if suffix not in missing:
                missing.add(suffix)
                log.warning("skipping the %s files: %s", suffix, exc)
            yield Skipped(os.fspath(path), f"{suffix} (needs bertsearch[{exc.extra}])", id=rel)
