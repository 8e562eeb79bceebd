"""Tests for PDF, Word and EPUB documents: readers.documents, the folder reader, pages on search hits, and
`bertsearch index` on a folder of papers that holds unreadable files as well.

The PDFs are written here with pypdf's object model (a Helvetica text layer, an image-only page, encryption), so
the text each page holds is known; tests/data/tides.pdf comes from another producer (matplotlib's PDF backend:
a subset TrueType font, compressed streams)."""

from __future__ import annotations

import io
import json
import logging
import sys
import zipfile
from pathlib import Path

import pytest

from bertsearch.readers import ReadStats, count_records, read_corpus
from bertsearch.readers.documents import MissingExtra, Unreadable, read_docx, read_epub, read_pdf, reader
from bertsearch.search.retrieve import page_at

DATA = Path(__file__).parent / "data"

FILLER = ["the", "survey", "team", "measured", "rainfall", "and", "river", "levels", "across", "each", "district", "during", "the", "season", "while", "local", "observers", "kept", "daily", "notes", "on", "wind", "direction", "cloud", "cover", "and", "temperature"]


def page_lines(marker: str, words: int = 160) -> list[str]:
    """About `words` words of filler with `marker` in the middle, as lines of ten words: longer than two chunks
    of the hashing encoder, so every chunk holding the marker starts on the marker's page."""
    body = [FILLER[i % len(FILLER)] for i in range(words)]
    body.insert(words // 2, marker)
    return [" ".join(body[i : i + 10]) for i in range(0, len(body), 10)]


def make_pdf(pages: list[list[str]], *, title: str | None = None, user_password: str | None = None,
             owner_password: str | None = None, image_page: bool = False) -> bytes:
    """A PDF whose page i shows the lines `pages[i]` in Helvetica (an empty list: a page with no text
    operators); with `image_page`, one more page that holds only an image, as a scanner makes."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    def name(n: str) -> NameObject:
        return NameObject(n)

    w = PdfWriter()
    font = w._add_object(DictionaryObject({name("/Type"): name("/Font"), name("/Subtype"): name("/Type1"),
                                           name("/BaseFont"): name("/Helvetica")}))
    for lines in pages:
        page = w.add_blank_page(612, 792)
        if not lines:
            continue
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 740 Td"]
        ops += ["(" + s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*" for s in lines]
        content = DecodedStreamObject()
        content.set_data("\n".join(ops + ["ET"]).encode("latin-1"))
        page[name("/Contents")] = w._add_object(content)
        page[name("/Resources")] = DictionaryObject({name("/Font"): DictionaryObject({name("/F1"): font})})
    if image_page:
        image = DecodedStreamObject()
        image.set_data(bytes((x * 37 + y * 11) % 256 for y in range(16) for x in range(16)))
        image.update({name("/Type"): name("/XObject"), name("/Subtype"): name("/Image"),
                      name("/Width"): NumberObject(16), name("/Height"): NumberObject(16),
                      name("/ColorSpace"): name("/DeviceGray"), name("/BitsPerComponent"): NumberObject(8)})
        page = w.add_blank_page(612, 792)
        draw = DecodedStreamObject()
        draw.set_data(b"q 468 0 0 648 72 72 cm /Im0 Do Q")
        page[name("/Contents")] = w._add_object(draw)
        page[name("/Resources")] = DictionaryObject(
            {name("/XObject"): DictionaryObject({name("/Im0"): w._add_object(image)})})
    if title is not None:
        w.add_metadata({"/Title": title})
    if user_password is not None:
        w.encrypt(user_password, owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def make_docx(path: Path, *, title: str = "", heading: str = "Harbour Report") -> Path:
    import docx

    d = docx.Document()
    d.core_properties.title = title
    d.add_paragraph("Prepared for the port authority.")
    d.add_heading(heading, 1)
    d.add_paragraph("The lighthouse keeper logs every ship that enters the bay.")
    t = d.add_table(rows=3, cols=3)
    for r, row in enumerate([("vessel", "tonnage", "flag"), ("Marigold", "1200", "Norway"), ("total", "", "")]):
        for c, value in enumerate(row):
            t.cell(r, c).text = value
    t.cell(2, 1).merge(t.cell(2, 2)).text = "one ship"
    d.add_paragraph("Fog delayed the ferry twice in March.")
    d.save(str(path))
    return path


def make_epub(path: Path, *, encrypted: bool = False) -> Path:
    """A two-chapter EPUB whose spine reads chapter two first (the manifest lists it second)."""
    chapter = ('<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
               "<title>{t}</title></head><body><h1>{t}</h1><p>{p}</p></body></html>")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:'
                   'container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/'
                   'oebps-package+xml"/></rootfiles></container>')
        z.writestr("OEBPS/content.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
                   '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Sea Stories</dc:title></metadata>'
                   '<manifest><item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>'
                   '<item id="c2" href="text/two%20b.xhtml" media-type="application/xhtml+xml"/>'
                   '<item id="css" href="style.css" media-type="text/css"/></manifest>'
                   '<spine><itemref idref="c2"/><itemref idref="c1"/></spine></package>')
        z.writestr("OEBPS/text/one.xhtml", chapter.format(t="The Reef", p="Coral grows &amp; shelters fish."))
        z.writestr("OEBPS/text/two b.xhtml", chapter.format(t="The Storm", p="Waves broke over the bow."))
        z.writestr("OEBPS/style.css", "p { margin: 0 }")
        if encrypted:
            z.writestr("META-INF/encryption.xml",
                       '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                       'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
                       '<enc:CipherReference URI="OEBPS/text/one.xhtml"/></enc:CipherData></enc:EncryptedData>'
                       "</encryption>")
    return path


# --------------------------------------------------------------------------- the readers


def test_pdf_pages_joined_with_each_page_start_recorded():
    pages = [page_lines("anemometer"), ["A short second page."], page_lines("hygrometer")]
    doc = read_pdf(make_pdf(pages, title="Field Notes"))
    starts = doc.metadata["page_starts"]
    assert doc.title == "Field Notes" and len(starts) == 3 and starts[0] == 0
    for i, lines in enumerate(pages):  # each page's text, line by line, where its start says
        end = starts[i + 1] - 2 if i + 1 < len(starts) else len(doc.text)
        assert doc.text[starts[i] : end] == "\n".join(lines)
    assert doc.text[starts[1] - 2 : starts[1]] == "\n\n"


def test_pdf_title_falls_back_to_the_first_line_when_missing_or_a_stand_in():
    pages = [["  Tidal Patterns of the North Sea", "by A. Writer"], ["more"]]
    assert read_pdf(make_pdf(pages)).title == "Tidal Patterns of the North Sea"
    assert read_pdf(make_pdf(pages, title="Microsoft Word - draft3.docx")).title == "Tidal Patterns of the North Sea"
    assert read_pdf(make_pdf(pages, title="untitled")).title == "Tidal Patterns of the North Sea"


def test_pdf_from_another_producer():
    doc = read_pdf((DATA / "tides.pdf").read_bytes())
    assert doc.title == "Tide Tables"
    assert doc.text == "Spring tides follow the new moon.\n\nNeap tides come at the quarter moons."
    assert doc.metadata == {"page_starts": [0, 35]}


def test_pdf_encrypted_only_against_changes_is_read():
    data = make_pdf([["Open to read, closed to edit."]], user_password="", owner_password="owner")
    assert b"/Encrypt" in data
    assert read_pdf(data).text == "Open to read, closed to edit."


@pytest.mark.parametrize(
    ("data", "kind", "says"),
    [
        (make_pdf([["secret"]], user_password="pw"), "encrypted .pdf", "qpdf --decrypt"),
        (make_pdf([[], []], image_page=True), ".pdf without text", "OCR"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog", "damaged .pdf", "cannot read this PDF"),
        (b"<html>not a pdf</html>", "damaged .pdf", "no %PDF- header"),
    ],
    ids=["encrypted", "scanned", "truncated", "not-a-pdf"],
)
def test_pdf_without_text_to_read_is_unreadable(data, kind, says, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(Unreadable) as err:
        read_pdf(data)
    assert err.value.kind == kind and says in err.value.problem
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]  # pypdf's complaints stay at debug


def test_docx_paragraphs_and_tables_in_order(tmp_path):
    doc = read_docx(make_docx(tmp_path / "r.docx").read_bytes())
    assert doc.text == ("Prepared for the port authority.\n\nHarbour Report\n\n"
                        "The lighthouse keeper logs every ship that enters the bay.\n\n"
                        "vessel | tonnage | flag\nMarigold | 1200 | Norway\ntotal | one ship\n\n"
                        "Fog delayed the ferry twice in March.")
    assert doc.title == "Harbour Report"  # the first heading, when the core properties have no title
    assert read_docx(make_docx(tmp_path / "t.docx", title="Port Log 1921").read_bytes()).title == "Port Log 1921"


def test_docx_damaged_or_password_protected_is_unreadable(tmp_path):
    with pytest.raises(Unreadable) as err:
        read_docx(b"PK\x03\x04 truncated zip")
    assert err.value.kind == "damaged .docx"
    with pytest.raises(Unreadable) as err:
        read_docx(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512))
    assert err.value.kind == "encrypted .docx" and "password" in err.value.problem


def test_epub_chapters_in_spine_order(tmp_path):
    doc = read_epub(make_epub(tmp_path / "b.epub").read_bytes())
    assert doc.title == "Sea Stories"
    assert doc.text == "The Storm\n\nWaves broke over the bow.\n\nThe Reef\n\nCoral grows & shelters fish."
    with pytest.raises(Unreadable) as err:
        read_epub(make_epub(tmp_path / "drm.epub", encrypted=True).read_bytes())
    assert err.value.kind == "encrypted .epub"
    with pytest.raises(Unreadable) as err:
        read_epub(b"not a zip")
    assert err.value.kind == "damaged .epub"


def test_page_at():
    starts = [0, 100, 250]
    assert [page_at(starts, o) for o in (0, 99, 100, 249, 250, 10_000)] == [1, 1, 2, 2, 3, 3]
    for not_pages in (None, [], "1-12", 12, [0, "100"], [0, True], [0, 300, 200]):
        assert page_at(not_pages, 5) is None


# --------------------------------------------------------------------------- a folder of documents


def papers(root: Path) -> Path:
    """A folder of readable documents of every kind, and four files with no text to read."""
    root.mkdir()
    (root / "field-notes.pdf").write_bytes(
        make_pdf([page_lines("anemometer"), page_lines("barometer"), page_lines("hygrometer")], title="Field Notes"))
    (root / "tides.pdf").write_bytes((DATA / "tides.pdf").read_bytes())
    make_docx(root / "harbour.docx")
    make_epub(root / "stories.epub")
    (root / "page.html").write_text("<title>Lanterns</title><p>Paper lanterns float downstream.</p>")
    (root / "notes.md").write_text("# Kites\nBox kites fly in steady wind.\n")
    (root / "plain.txt").write_text("Sourdough needs a lively starter.\n")
    bad = root / "bad"
    bad.mkdir()
    (bad / "scan.pdf").write_bytes(make_pdf([], image_page=True))
    (bad / "locked.pdf").write_bytes(make_pdf([["the combination is 1234"]], user_password="pw"))
    (bad / "broken.pdf").write_bytes(make_pdf([["cut short"]])[:300])
    (bad / "broken.docx").write_bytes(b"PK\x03\x04 not really")
    return root


BAD_KINDS = {".pdf without text": 1, "encrypted .pdf": 1, "damaged .pdf": 1, "damaged .docx": 1}


def test_folder_reads_documents_and_names_the_unreadable(tmp_path):
    root = papers(tmp_path / "papers")
    stats = ReadStats()
    docs = {d.id: d for d in read_corpus(root, stats=stats)}  # on_error "stop": none of the bad files stops it
    assert sorted(docs) == ["field-notes.pdf", "harbour.docx", "notes.md", "page.html", "plain.txt",
                            "stories.epub", "tides.pdf"]
    assert docs["field-notes.pdf"].metadata["path"] == "field-notes.pdf"
    assert len(docs["field-notes.pdf"].metadata["page_starts"]) == 3
    assert "page_starts" not in docs["harbour.docx"].metadata
    assert (docs["harbour.docx"].title, docs["stories.epub"].title) == ("Harbour Report", "Sea Stories")
    assert stats.read == 7 and stats.skipped == 0 and stats.skipped_files == BAD_KINDS
    named = {Path(e.split(": ")[0]).name for e in stats.errors}
    assert named == {"scan.pdf", "locked.pdf", "broken.pdf", "broken.docx"}
    assert count_records(root) == 11


def test_missing_package_skips_its_files_with_one_warning(tmp_path, monkeypatch, caplog):
    root = papers(tmp_path / "papers")
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf now raises ImportError
    with pytest.raises(MissingExtra) as err:
        reader(".pdf")
    assert str(err.value) == "reading PDF files needs pypdf; install it with pip install 'bertsearch[documents]'"
    stats = ReadStats()
    with caplog.at_level(logging.WARNING):
        ids = [d.id for d in read_corpus(root, stats=stats)]
    assert "tides.pdf" not in ids and "harbour.docx" in ids
    assert stats.skipped_files == {".pdf (needs bertsearch[documents])": 5, "damaged .docx": 1}
    warned = [r.getMessage() for r in caplog.records if "bertsearch[documents]" in r.getMessage()]
    assert len(warned) == 1 and "pip install 'bertsearch[documents]'" in warned[0]


# --------------------------------------------------------------------------- the CLI


def test_index_a_folder_of_papers_then_find_each_page(run, tmp_path):
    import bertsearch

    root, ix = papers(tmp_path / "papers"), tmp_path / "ix"
    r = run("index", root, "--index", ix, "--model", "hashing", "--on-error", "skip")
    assert r.exit_code == 0, r.output
    said = r.stderr.replace("\n", "")  # (rich wraps long lines)
    for name, why in (("scan.pdf", "no text layer"), ("locked.pdf", "encrypted"), ("broken.pdf", "cannot read"),
                      ("broken.docx", "cannot read")):  # each named under the report, with what is wrong
        assert f"{name}: {why}" in said, r.stderr
    assert "4 files skipped" in said and "encrypted .pdf 1" in said

    with bertsearch.open_index(ix) as index:
        stored = index.get("field-notes.pdf")["text"]
    for marker, page in (("anemometer", 1), ("barometer", 2), ("hygrometer", 3)):
        for mode in ("lexical", "hybrid"):
            r = run("search", marker, "--index", ix, "--mode", mode, "-k", "1", "--json")
            hit = json.loads(r.stdout)["hits"][0]
            assert (hit["doc_id"], hit["title"], hit["page"]) == ("field-notes.pdf", "Field Notes", page), mode
            assert hit["text"] == stored[hit["start"] : hit["end"]] and marker in hit["text"]
            assert "page_starts" not in hit["metadata"]
    hit = json.loads(run("search", "spring tides new moon", "--index", ix, "-k", "1", "--json").stdout)["hits"][0]
    assert hit["doc_id"] == "tides.pdf" and hit["page"] == 1  # its two short pages are one chunk
    for query in ("neap quarter", "when are the neap tides"):  # the rarest word's page, not "the" or "tides" on 1
        hit = json.loads(run("search", query, "--index", ix, "-k", "1", "--json").stdout)["hits"][0]
        assert hit["doc_id"] == "tides.pdf" and hit["page"] == 2, query  # the words' page, not the chunk's first
    for query, doc_id in (("Marigold tonnage Norway", "harbour.docx"), ("waves broke over the bow", "stories.epub"),
                          ("paper lanterns", "page.html"), ("box kites", "notes.md"),
                          ("sourdough starter", "plain.txt")):
        hit = json.loads(run("search", query, "--index", ix, "-k", "1", "--json").stdout)["hits"][0]
        assert hit["doc_id"] == doc_id and hit["page"] is None, query
    r = run("search", "barometer", "--index", ix, "-k", "1", "--mode", "lexical")
    assert "[field-notes.pdf, page 2]" in r.stdout


def test_reindex_keeps_what_was_indexed_when_a_file_goes_bad(run, tmp_path):
    """The default --on-error (stop) goes on past unreadable documents as past binary files, and a PDF that is
    damaged since the last run keeps its indexed copy."""
    root, ix = papers(tmp_path / "papers"), tmp_path / "ix"
    r = run("index", root, "--index", ix, "--model", "hashing", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["added"] == 7 and first["skipped_files"] == BAD_KINDS and len(first["errors"]) == 4
    (root / "tides.pdf").write_bytes(b"%PDF-1.4\n% the download broke off here")
    r = run("add", root, "--index", ix, "--json")
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)
    assert second["unchanged"] == 6 and second["added"] == second["replaced"] == second["deleted"] == 0
    assert second["skipped_files"] == {**BAD_KINDS, "damaged .pdf": 2} and second["index"]["documents"] == 7
    assert second["kept_stale"] == 1  # tides.pdf: its old copy kept, and said (the summary was silent about it)
    hit = json.loads(run("search", "neap tides", "--index", ix, "-k", "1", "--json").stdout)["hits"][0]
    assert hit["doc_id"] == "tides.pdf" and hit["page"] == 2  # ("neap", its rarest word, is on page 2)


def test_library_and_service_hits_carry_the_page(tmp_path):
    import bertsearch
    from bertsearch.service.schemas import HitModel

    root = tmp_path / "papers"
    root.mkdir()
    (root / "notes.pdf").write_bytes(make_pdf([page_lines("anemometer"), page_lines("barometer")]))
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add_corpus(root)
        hit = ix.search("barometer", k=1, mode="lexical")[0]
    assert hit.page == 2 and hit.to_dict()["page"] == 2
    assert HitModel(**hit.to_dict()).page == 2


def test_a_single_document_file_points_to_its_folder(tmp_path):
    from bertsearch.errors import CorpusError
    from bertsearch.readers import detect_format

    path = tmp_path / "paper.pdf"
    path.write_bytes(make_pdf([["One page."]]))
    with pytest.raises(CorpusError) as err:
        detect_format(path)
    assert f"index the folder that holds it ('bertsearch index {tmp_path}')" in str(err.value)


def test_a_hits_page_follows_the_querys_rarest_word_in_its_forms():
    """The page followed the first query word ("the" on page 1), then the rarest spelling ("Apples" once, though
    "apple" stands three times)."""
    from bertsearch.search.retrieve import _focus

    chunk = "Apples grow here.\n\nApple trees.\n\nOne apple left.\n\nDates and more dates, the end."
    assert _focus(chunk, {"apple", "dates"}) == chunk.index("Dates")
    assert _focus(chunk, {"the", "trees"}) == chunk.index("trees")  # (a stopword counts only when alone)
    assert _focus(chunk, {"the"}) == chunk.index("the")
    assert _focus(chunk, {"kiwi"}) == 0
    words = "A comet. The internet, internet and internet. Interstellar space. A comet again."
    assert _focus(words, {"interstellar", "comet"}) == words.index("Interstellar")  # ("internet" is another word)
