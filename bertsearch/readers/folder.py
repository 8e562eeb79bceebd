"""A folder of text files (.txt, .md, .markdown, .html, .htm), walked recursively.

Files are visited in sorted order (by path components), hidden files and folders (names
starting with '.') are ignored, and each file is one document whose id is its path relative
to the folder with forward slashes. A file that is not UTF-8 is read as Windows-1252 (else
Latin-1) and says so; binary files, files over the size limit and files of other extensions are
*yielded* as `Skipped` values, which `read_corpus` counts by kind; a file that cannot be read is a
`MalformedRecord`, which stops the run or is skipped (``on_error``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

from bertsearch.errors import MalformedRecord
from bertsearch.types import Document

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

TEXT_SUFFIXES = (".txt",)
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES + HTML_SUFFIXES


MAX_FILE_BYTES = 64 * 2**20
"""A file larger than this is reported as a bad record, not read into memory as one document."""


@dataclass(frozen=True)
class Skipped:
    """A file the folder reader passed over, and why: its kind ("binary", "too large", or an extension such as
    ".pdf" that bertsearch does not read)."""

    source: str
    kind: str


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
            rel = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from walk(Path(entry.path), rel + "/")
                elif entry.is_file() and (all_files or entry.name.lower().endswith(SUFFIXES)):
                    yield Path(entry.path), rel
            except OSError as exc:  # pragma: no cover - a racing delete or a broken mount
                log.warning("cannot read %s: %s", entry.path, exc)

    yield from walk(base, "")


def count_files(root: PathLike) -> int:
    """The number of corpus files under ``root`` (without reading them)."""
    return sum(1 for _ in iter_files(root))


def _stem_title(path: Path) -> str:
    return re.sub(r"[_-]+", " ", path.stem).strip()


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_H1 = re.compile(r"^\s{0,3}#[ \t]+(.+?)[ \t]*#*[ \t]*$")


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
        if not first_line and line.strip():
            first_line = line.strip().lstrip("#").strip()
    return front_title or first_line or fallback


class _HTMLText(HTMLParser):
    """Collect the visible text of an HTML page with its block structure as newlines."""

    SKIP = {"script", "style", "noscript", "template", "svg"}
    HEAD_ONLY = {"head", "title", "meta", "link", "base", "style", "script", "noscript", "template"}
    PARAGRAPH = {
        "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl",
        "section", "article", "header", "footer", "nav", "aside", "main", "figure", "form",
        "address", "details", "fieldset", "hr",
    }
    LINE = {"br", "div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary", "option", "legend"}
    CELL = {"td", "th"}
    # Whitespace inside <pre> is kept: it stands in as control characters (NUL cannot occur in
    # a file we read, \x01/\x02 practically never do) while the rest of the text is tidied.
    PRE_PROTECT = str.maketrans({"\n": "\x00", " ": "\x01", "\t": "\x02"})
    PRE_RESTORE = str.maketrans({"\x00": "\n", "\x01": " ", "\x02": "\t"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self.skip_depth = 0
        self.in_head = False
        self.in_title = False
        self.h1_state = 0  # 0: not seen, 1: inside the first <h1>, 2: done
        self.pre_depth = 0
        self.pending = 0  # newlines owed before the next text: 1 after a line, 2 after a block

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self.in_head = True
        elif tag == "body" or (self.in_head and tag not in self.HEAD_ONLY):
            self.in_head = False  # the head ended without </head>
        if tag in self.SKIP:
            self.skip_depth += 1
        elif tag == "title" and not self.skip_depth and not self.title_parts:
            self.in_title = True
        elif tag == "h1" and self.h1_state == 0:
            self.h1_state = 1
        if tag == "pre":
            self.pre_depth += 1
        self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False
        elif tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "title":
            self.in_title = False
        elif tag == "h1" and self.h1_state == 1:
            self.h1_state = 2
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in self.CELL and not self.pending and self.parts and not self.parts[-1].endswith(" "):
            self.parts.append(" ")
        self._break(tag)

    def _break(self, tag: str) -> None:
        if tag in self.PARAGRAPH:
            self.pending = max(self.pending, 2)
        elif tag in self.LINE:
            self.pending = max(self.pending, 1)

    def _emit(self, text: str) -> None:
        if self.pending and self.parts:
            self.parts.append("\n" * self.pending)
        self.pending = 0
        self.parts.append(text)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
            return
        if self.skip_depth or self.in_head:
            return
        if self.h1_state == 1:
            self.h1_parts.append(data)
        if self.pre_depth:
            self._emit(data.replace("\r\n", "\n").translate(self.PRE_PROTECT))
            return
        collapsed = re.sub(r"\s+", " ", data)
        after_space = not self.parts or self.parts[-1].endswith((" ", "\n"))
        if collapsed.strip():
            if after_space and not self.pending:
                collapsed = collapsed.lstrip(" ")
            self._emit(collapsed)
        elif collapsed and not self.pending and not after_space:
            self.parts.append(" ")

    def text(self) -> str:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
        return text.strip().translate(self.PRE_RESTORE)

    def title(self) -> str:
        for parts in (self.title_parts, self.h1_parts):
            title = re.sub(r"\s+", " ", "".join(parts)).strip()
            if title:
                return title
        return ""


def html_to_text(html: str) -> tuple[str, str]:
    """Return ``(title, text)`` of an HTML page: the <title> (else the first <h1>) and the
    visible text with entities unescaped, script/style/head dropped and blocks on new lines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.title(), parser.text()


FALLBACK_ENCODINGS = ("cp1252", "latin-1")
"""Tried in turn for a text file that is not UTF-8 (Windows' Western encoding, then Latin-1, which reads any
bytes); the report names each file read so."""


def decode(data: bytes) -> tuple[str, str | None]:
    """The text of a file's bytes, and the fallback encoding used (None for UTF-8, with or without a BOM)."""
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
    when it is not text). A file that is not UTF-8 is decoded with a fallback, recorded in its metadata as
    ``encoding``."""
    source = os.fspath(path)
    try:
        st = path.stat()
        if st.st_size > MAX_FILE_BYTES:
            log.warning("skipping %s: %.0f MiB, over the limit of %d MiB for one document; split it into several "
                        "files", source, st.st_size / 2**20, MAX_FILE_BYTES // 2**20)
            return Skipped(source, "too large")
        data = path.read_bytes()
        mtime = st.st_mtime
    except OSError as exc:
        return MalformedRecord(source, 0, f"cannot read file: {exc.strerror or exc}")
    if b"\x00" in data:
        return Skipped(source, "binary")
    content, encoding = decode(data)

    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        title, text = html_to_text(content)
        title = title or _stem_title(path)
    elif suffix in MARKDOWN_SUFFIXES:
        text = content
        title = markdown_title(content, fallback=_stem_title(path))
    else:
        text = content
        title = _stem_title(path)
    modified = datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(timespec="seconds")
    metadata = {"path": rel, "modified": modified}
    if encoding is not None:
        metadata["encoding"] = encoding
    return Document(id=rel, text=text, title=title, metadata=metadata)


def iter_folder(root: PathLike) -> Iterator[Document | MalformedRecord | Skipped]:
    """Yield a `Document`, a `MalformedRecord` or a `Skipped` for each file under ``root`` (files of other
    extensions are `Skipped` under their extension, so that a report can count them)."""
    for path, rel in iter_files(root, all_files=True):
        if not path.name.lower().endswith(SUFFIXES):
            yield Skipped(os.fspath(path), path.suffix.lower() or "no extension")
            continue
        yield read_file(path, rel)
