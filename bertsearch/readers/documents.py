"""Documents that are not plain text: PDF (its text layer, page by page, with pypdf), Word .docx (python-docx)
and EPUB (a zip of XHTML chapters, read with the standard library).

pypdf and python-docx are the optional extra ``bertsearch[documents]``, imported where used: without them
`reader` raises `MissingExtra`, which the folder reader turns into a count of the files it could not read.
A file that holds no readable text (a scanned PDF, an encrypted or damaged file) raises `Unreadable`, whose
``kind`` counts it in a report and whose ``problem`` says why, and what to do about it.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

from bertsearch.errors import BertsearchError, MissingDependency
from bertsearch.readers.htmltext import html_to_text

log = logging.getLogger(__name__)

EXTRA = "documents"
SUFFIXES = (".pdf", ".docx", ".epub")

PAGE_STARTS = "page_starts"
"""The metadata key of a PDF's page offsets: where each page starts in the document's text (page 1 at 0). A
search hit's page is where the query's rarest word in its chunk first stands (see `Hit.page`)."""

PAGE_BREAK = "\n\n"
"""Between pages (and chapters, paragraphs and tables): one blank line."""

MAX_TEXT_CHARS = 64 * 2**20
"""Text extracted beyond this (a zip bomb, a book of many volumes) is not one document."""

MAX_TITLE_CHARS = 200


class MissingExtra(MissingDependency):
    """Reading a kind of file needs a package of an optional extra that is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        self.package = package
        self.extra = EXTRA
        BertsearchError.__init__(
            self, f"{feature} needs {package}; install it with pip install 'bertsearch[{EXTRA}]'")


class Unreadable(Exception):
    """A file that holds no text to index: `kind` counts it ("encrypted .pdf"), `problem` says why."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(problem)
        self.kind = kind
        self.problem = problem


@dataclass
class Extracted:
    """What a document file holds: its text, a title ("" when it has none) and metadata to store with it."""

    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def reader(suffix: str) -> Callable[[bytes], Extracted]:
    """The reader of files with `suffix` (one of `SUFFIXES`), its package imported now: `MissingExtra` when
    that is not installed, before any file is opened."""
    if suffix == ".pdf":
        _need("pypdf", "pypdf", "reading PDF files")
        return read_pdf
    if suffix == ".docx":
        _need("docx", "python-docx", "reading Word (.docx) files")
        return read_docx
    if suffix == ".epub":
        return read_epub
    raise ValueError(f"no document reader for {suffix!r}; readers exist for {', '.join(SUFFIXES)}")


def _need(module: str, package: str, feature: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(package, feature) from None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    """Text as a search index wants it: compatibility forms folded (NFKC: the ligature 'ﬁ' is 'fi', a no-break
    space a space), control characters made spaces, the spaces ending lines dropped, and the ends stripped."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub(" ", text)
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def first_line(text: str) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line[:MAX_TITLE_CHARS].rstrip()


def _too_large(n_chars: int) -> None:
    if n_chars > MAX_TEXT_CHARS:
        raise Unreadable("too large", f"{n_chars / 2**20:.0f}M characters of text, over the limit of "
                         f"{MAX_TEXT_CHARS // 2**20}M for one document; split the file")


# -- PDF -------------------------------------------------------------------------------------------

_JUNK_TITLE = re.compile(r"^(untitled|microsoft word - .*|.*\.(docx?|pdf|tex|dvi|ps|indd|rtf|odt))$", re.IGNORECASE)


def read_pdf(data: bytes) -> Extracted:
    """The text layer of a PDF, page after page (a blank line between pages), with each page's start in the
    metadata as `PAGE_STARTS`. The title is the PDF's own unless it is a stand-in ("Untitled", a file name),
    else the first line of text. A PDF whose password is not empty, one with no text at all (scanned pages)
    and one pypdf cannot parse raise `Unreadable`; a page that cannot be read is left empty, with a warning."""
    with _pypdf_quiet():
        return _read_pdf(data)


def _read_pdf(data: bytes) -> Extracted:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    if b"%PDF-" not in data[:1024]:
        raise Unreadable("damaged .pdf", "not a PDF: it has no %PDF- header")
    try:
        pdf = PdfReader(io.BytesIO(data), strict=False)
        if pdf.is_encrypted:
            try:
                opened = pdf.decrypt("")  # many PDFs are encrypted only to forbid printing or copying
            except DependencyError as exc:  # AES needs the cryptography package
                raise Unreadable("encrypted .pdf", f"encrypted, and reading it needs another package: {exc}") from None
            if opened == PasswordType.NOT_DECRYPTED:
                raise Unreadable("encrypted .pdf", "encrypted with a password; decrypt it first (qpdf --decrypt "
                                 "--password=PASSWORD in.pdf out.pdf) and index that")
        pages = list(pdf.pages)
        info = pdf.metadata
        meta_title = info.title if info is not None else None
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on a damaged file (PdfReadError, KeyError...)
        raise Unreadable("damaged .pdf", f"cannot read this PDF ({_why(exc)})") from None
    texts, failed = [], 0
    for i, page in enumerate(pages, start=1):
        try:
            texts.append(clean(page.extract_text()))
        except Exception as exc:  # noqa: BLE001 - one damaged page costs that page, not the document
            failed += 1
            texts.append("")
            log.debug("cannot read page %d of a PDF: %s", i, _why(exc))
    if failed == len(pages) and pages:
        raise Unreadable("damaged .pdf", f"cannot read any of its {len(pages)} pages")
    if not any(texts):
        raise Unreadable(".pdf without text", "no text layer (scanned pages?); make it searchable with OCR "
                         "first (ocrmypdf in.pdf out.pdf) and index that")
    if failed:
        log.warning("%d of %d pages of a PDF could not be read and are left out", failed, len(pages))
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + len(PAGE_BREAK)
    text = PAGE_BREAK.join(texts)
    _too_large(len(text))
    title = clean(meta_title) if isinstance(meta_title, str) else ""
    if not title or _JUNK_TITLE.match(title):
        title = first_line(text)
    return Extracted(text, title[:MAX_TITLE_CHARS], {PAGE_STARTS: starts})


@contextmanager
def _pypdf_quiet() -> Iterator[None]:
    """pypdf logs a warning for each flaw it works around in a damaged file ("EOF marker not found"): nothing a
    user can act on, and what matters, a file skipped and why, is reported. They show at debug level (-vv)."""
    pypdf_log = logging.getLogger("pypdf")
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    level = pypdf_log.level
    pypdf_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pypdf_log.setLevel(level)


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- Word ------------------------------------------------------------------------------------------

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a compound file: a password-protected .docx, or a .doc renamed


def read_docx(data: bytes) -> Extracted:
    """The paragraphs and tables of a .docx in order (a table row per line, its cells between '|'). The title
    is the document's own (core properties), else its first Title or Heading paragraph, else its first line."""
    import docx
    from docx.table import Table

    if data.startswith(_OLE):
        raise Unreadable("encrypted .docx", "a password-protected Word file (or an old .doc renamed .docx); save it "
                         "as .docx without a password and index that")
    try:
        doc = docx.Document(io.BytesIO(data))
        blocks, heading = [], ""
        for item in doc.iter_inner_content():
            if isinstance(item, Table):
                blocks.append(_table_text(item))
                continue
            text = item.text.strip()
            if text and not heading and _style(item).startswith(("Title", "Heading")):
                heading = text
            blocks.append(text)
        title = doc.core_properties.title or heading
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds on a damaged file (BadZipFile, KeyError...)
        raise Unreadable("damaged .docx", f"cannot read this Word file ({_why(exc)})") from None
    text = clean(PAGE_BREAK.join(b for b in blocks if b.strip()))
    _too_large(len(text))
    return Extracted(text, clean(title)[:MAX_TITLE_CHARS] or first_line(text))


def _style(paragraph: Any) -> str:
    try:
        return paragraph.style.name or ""
    except (AttributeError, KeyError, ValueError):  # a style the document names but does not define
        return ""


def _table_text(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell appears once per grid column it spans
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


# -- EPUB ------------------------------------------------------------------------------------------

_NS = {
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
    "enc": "http://www.w3.org/2001/04/xmlenc#",
}
_CHAPTER_TYPES = ("application/xhtml+xml", "text/html")


def read_epub(data: bytes) -> Extracted:
    """The chapters of an EPUB in reading order (its spine), each read as HTML; the title is the book's
    (dc:title). A book whose chapters are encrypted (DRM) raises `Unreadable`."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            title, chapters = _epub_chapters(book)
            size = sum(book.getinfo(c).file_size for c in chapters)
            if size > MAX_TEXT_CHARS:  # checked before anything is unpacked: a zip bomb stays packed
                raise Unreadable("too large", f"its chapters hold {size / 2**20:.0f} MiB of XHTML, over the limit of "
                                 f"{MAX_TEXT_CHARS // 2**20} MiB for one document; split the book")
            texts = [html_to_text(book.read(c).decode("utf-8", errors="replace"))[1] for c in chapters]
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - not a zip, a part missing or malformed (BadZipFile, KeyError...)
        raise Unreadable("damaged .epub", f"cannot read this EPUB ({_why(exc)})") from None
    text = clean(PAGE_BREAK.join(t for t in texts if t.strip()))
    return Extracted(text, clean(title)[:MAX_TITLE_CHARS] or first_line(text))


def _epub_chapters(book: zipfile.ZipFile) -> tuple[str, list[str]]:
    """The title and the zip names of the XHTML chapters, in reading order."""
    container = ElementTree.fromstring(book.read("META-INF/container.xml"))
    rootfile = container.find(".//c:rootfile", _NS)
    if rootfile is None or not rootfile.get("full-path"):
        raise ValueError("META-INF/container.xml names no package document")
    opf_path = rootfile.get("full-path", "")
    opf = ElementTree.fromstring(book.read(opf_path))
    base = posixpath.dirname(opf_path)
    manifest = {
        item.get("id"): (posixpath.normpath(posixpath.join(base, unquote(item.get("href", "")))),
                         item.get("media-type"))
        for item in opf.iterfind("opf:manifest/opf:item", _NS)
    }
    chapters = []
    for ref in opf.iterfind("opf:spine/opf:itemref", _NS):
        name, media_type = manifest.get(ref.get("idref"), (None, None))
        if name is not None and media_type in _CHAPTER_TYPES and name not in chapters:
            chapters.append(name)
    if "META-INF/encryption.xml" in book.namelist():  # fonts may be obfuscated; text encrypted is DRM
        refs = ElementTree.fromstring(book.read("META-INF/encryption.xml")).iterfind(".//enc:CipherReference", _NS)
        encrypted = {unquote(ref.get("URI", "")) for ref in refs}
        if encrypted & set(chapters):
            raise Unreadable("encrypted .epub", "its chapters are encrypted (DRM); bertsearch reads only open EPUBs")
    title = opf.findtext("opf:metadata/dc:title", default="", namespaces=_NS)
    return title, chapters
