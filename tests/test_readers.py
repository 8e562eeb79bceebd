"""Tests for bertsearch.readers: every corpus format, detection, bad records, streaming."""

from __future__ import annotations

import csv
import gzip
import inspect
import json
import logging
from pathlib import Path

import pytest

from bertsearch.errors import CorpusError, MalformedRecord
from bertsearch.readers import (
    FORMATS,
    Fields,
    ReadStats,
    count_records,
    detect_format,
    read_corpus,
)
from bertsearch.readers.beir import load_qrels, load_queries
from bertsearch.readers.folder import html_to_text, markdown_title

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- detection


def test_formats_tuple():
    assert FORMATS == ("jsonl", "csv", "tsv", "folder", "beir")


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.jsonl.gz", "jsonl"),
        ("A.JSONL", "jsonl"),
        ("a.csv", "csv"),
        ("a.tsv", "tsv"),
        ("a.tab", "tsv"),
    ],
)
def test_detect_format_files(tmp_path, name, fmt):
    (tmp_path / name).write_text("")
    assert detect_format(tmp_path / name) == fmt


def test_detect_format_folders(tmp_path):
    plain = tmp_path / "docs"
    plain.mkdir()
    assert detect_format(plain) == "folder"
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "corpus.jsonl").write_text("")
    assert detect_format(bench) == "beir"
    assert detect_format(str(bench)) == "beir"


def test_detect_format_unknown_suffix(tmp_path):
    path = tmp_path / "corpus.xml"
    path.write_text("<x/>")
    with pytest.raises(CorpusError) as err:
        detect_format(path)
    assert "corpus.xml" in str(err.value)
    assert "--format jsonl|csv|tsv|folder|beir" in str(err.value)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CorpusError, match="no such file or folder: .*nope.jsonl"):
        detect_format(missing)
    with pytest.raises(CorpusError, match="no such file or folder"):
        read_corpus(missing)
    with pytest.raises(CorpusError, match="no such file or folder"):
        read_corpus(missing, "jsonl")


def test_invalid_format_and_on_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "x"}])
    with pytest.raises(CorpusError, match="unknown corpus format"):
        read_corpus(path, "xml")
    with pytest.raises(CorpusError, match="on_error"):
        read_corpus(path, on_error="ignore")
    with pytest.raises(CorpusError, match="needs a folder"):
        read_corpus(path, "folder")
    with pytest.raises(CorpusError, match="needs a file"):
        read_corpus(tmp_path, "jsonl")
    with pytest.raises(CorpusError, match="not a BEIR folder"):
        read_corpus(tmp_path, "beir")


def test_explicit_format_overrides_suffix(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text('{"id": "a", "text": "hello"}\n')
    assert [d.id for d in read_corpus(path, "jsonl")] == ["a"]


# --------------------------------------------------------------------------- JSONL


def test_jsonl_reads_records(tmp_path):
    text = "  Leading spaces, a tab\there, ünïcode — and trailing newline\n"
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "text": text, "title": "First", "year": 2001, "tags": ["x", "y"], "extra": None},
            {"id": 7, "text": "second"},
            {"_id": "b", "text": "", "title": None, "nested": {"k": 1.5}},
        ],
    )
    docs = list(read_corpus(path))
    assert [d.id for d in docs] == ["a", "7", "b"]
    assert docs[0].text == text  # unchanged: offsets into it stay valid
    assert docs[0].title == "First"
    assert docs[0].metadata == {"year": 2001, "tags": ["x", "y"], "extra": None}
    assert docs[1].title == "" and docs[1].metadata == {}
    assert docs[2].text == "" and docs[2].title == ""
    assert docs[2].metadata == {"nested": {"k": 1.5}}


def test_jsonl_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "1", "text": "a"}\r\n\r\n   \n{"id": "2", "text": "b\\r\\nc"}')
    docs = list(read_corpus(path))
    assert [(d.id, d.text) for d in docs] == [("1", "a"), ("2", "b\r\nc")]


def test_jsonl_gzip(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(3):
            fh.write(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n")
    assert [d.id for d in read_corpus(path)] == ["d0", "d1", "d2"]
    assert count_records(path) == 3


def test_jsonl_custom_fields(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"doc": "x1", "body": "hello", "name": "T", "id": "other"}])
    (doc,) = read_corpus(path, fields=Fields(id="doc", text="body", title="name"))
    assert (doc.id, doc.text, doc.title) == ("x1", "hello", "T")
    assert doc.metadata == {"id": "other"}


def test_jsonl_underscore_id_only_for_default_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "x", "text": "t"}])
    assert [d.id for d in read_corpus(path)] == ["x"]
    with pytest.raises(MalformedRecord, match="missing id field 'doc'"):
        list(read_corpus(path, fields=Fields(id="doc")))


def test_jsonl_malformed_line_stop(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "1", "text": "ok"}\n\n{"id": "2", "text": oops}\n{"id": "3", "text": "ok"}\n')
    with pytest.raises(MalformedRecord) as err:
        list(read_corpus(path, on_error="stop"))
    assert err.value.line == 3
    assert err.value.source == str(path)
    assert str(err.value).startswith(f"{path}:3: invalid JSON")
    assert "--on-error skip" in str(err.value)


def test_jsonl_field_given_twice_with_different_values_is_malformed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "1", "text": "ok", "topic": "a", "metadata": {"topic": "a", "year": 1}}\n'
                    '{"id": "2", "text": "ok", "topic": "Top", "metadata": {"topic": "Inner"}}\n')
    with pytest.raises(MalformedRecord, match=r"c.jsonl:2: the field 'topic' is given twice"):
        list(read_corpus(path, on_error="stop"))
    assert next(iter(read_corpus(path, on_error="skip"))).metadata == {"topic": "a", "year": 1}


def test_jsonl_metadata_too_deep_is_a_bad_record(tmp_path):
    """It stopped the whole run under --on-error skip, naming no file or line."""
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": "ok", "text": "t", "m": [[1]]}\n{"id": "deep", "text": "t", "m": ' + "[" * 40 + "]" * 40
                    + "}\n")
    with pytest.raises(MalformedRecord, match=r"n.jsonl:2: its metadata nests .* more than 32 levels deep"):
        list(read_corpus(path, on_error="stop"))
    assert [d.id for d in read_corpus(path, on_error="skip")] == ["ok"]


def test_jsonl_malformed_skip_counts(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    lines = [
        '{"id": "1", "text": "ok"}',
        "{not json",
        "[1, 2]",
        '{"text": "no id"}',
        '{"id": "4", "text": 5}',
        '{"id": "5"}',
        '{"id": true, "text": "bool id"}',
        '{"id": "7", "text": "ok"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    stats = ReadStats()
    with caplog.at_level(logging.WARNING):
        docs = list(read_corpus(path, on_error="skip", stats=stats))
    assert [d.id for d in docs] == ["1", "7"]
    assert stats.read == 2
    assert stats.skipped == 6
    assert [e.split(": ", 1)[0] for e in stats.errors] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7)]
    assert "expected a JSON object, got array" in stats.errors[1]
    assert "missing id field" in stats.errors[2]
    assert "text field 'text' must be a string" in stats.errors[3]
    assert "missing text field" in stats.errors[4]
    assert any("skipping bad record" in r.message for r in caplog.records)


def test_jsonl_not_utf8_line_is_malformed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "1", "text": "caf\xe9"}\n{"id": "2", "text": "ok"}\n')
    stats = ReadStats()
    assert [d.id for d in read_corpus(path, on_error="skip", stats=stats)] == ["2"]
    assert stats.errors[0].startswith(f"{path}:1: not UTF-8")


def test_stats_keep_first_20_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("bad\n" * 30 + '{"id": "ok", "text": "x"}\n')
    stats = ReadStats()
    assert [d.id for d in read_corpus(path, on_error="skip", stats=stats)] == ["ok"]
    assert stats.skipped == 30
    assert len(stats.errors) == 20
    assert stats.errors[0].startswith(f"{path}:1:") and stats.errors[-1].startswith(f"{path}:20:")


# --------------------------------------------------------------------------- streaming


def test_read_corpus_returns_generator(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "x"}])
    it = read_corpus(path)
    assert inspect.isgenerator(it)


def test_streaming_yields_before_bad_line(tmp_path):
    path = tmp_path / "c.jsonl"
    with path.open("w") as fh:
        fh.write('{"id": "first", "text": "hello"}\n')
        fh.write("this line is not JSON\n")
        for i in range(50_000):
            fh.write(json.dumps({"id": str(i), "text": "filler " * 10}) + "\n")
    it = read_corpus(path)
    assert next(it).id == "first"  # record 1 comes out before line 2 is even parsed
    with pytest.raises(MalformedRecord) as err:
        next(it)
    assert err.value.line == 2


def test_streaming_csv_yields_before_bad_row(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n1,hello\n2,too,many\n3,later\n")
    it = read_corpus(path)
    assert next(it).id == "1"
    with pytest.raises(MalformedRecord) as err:
        next(it)
    assert err.value.line == 3


def test_lazy_file_opening(tmp_path):
    # Checks of path/format happen at call time; the header error only when reading starts.
    path = tmp_path / "c.csv"
    path.write_text("a,b\n1,2\n")
    it = read_corpus(path)
    with pytest.raises(CorpusError):
        next(it)


# --------------------------------------------------------------------------- CSV / TSV


def test_csv_reads_records(tmp_path):
    path = tmp_path / "c.csv"
    text = 'Multi-line\ntext, with "quotes", commas and  double  spaces '
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "title", "text", "author", "year"])
        w.writerow(["d1", "One", text, "Ann", "2001"])
        w.writerow(["d2", "", "short", "", ""])
    docs = list(read_corpus(path))
    assert [d.id for d in docs] == ["d1", "d2"]
    assert docs[0].text == text
    assert docs[0].title == "One"
    assert docs[0].metadata == {"author": "Ann", "year": 2001}  # a column of numbers reads as numbers
    assert docs[1].metadata == {"author": ""}  # an empty cell of a number column is no value


def test_csv_bom_and_huge_field(tmp_path):
    path = tmp_path / "c.csv"
    big = "word " * 100_000  # beyond csv's default 128 KiB field limit
    path.write_text("\ufeffid,text\nbig," + big + "\n", encoding="utf-8")
    (doc,) = read_corpus(path)
    assert doc.id == "big" and doc.text == big


def test_tsv_reads_records(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("doc_id\tbody\tsource\nq1\tfirst text\twiki\nq2\tsecond, with comma\tnews\n")
    docs = list(read_corpus(path, fields=Fields(id="doc_id", text="body")))
    assert [(d.id, d.text, d.title, d.metadata) for d in docs] == [
        ("q1", "first text", "", {"source": "wiki"}),
        ("q2", "second, with comma", "", {"source": "news"}),
    ]


def test_a_stray_quote_loses_no_rows_and_tsv_keeps_quote_marks(tmp_path):
    """One unbalanced quote mark in a TSV file took in every row after it (3 documents lost, 1 counted), and quote
    marks that start a field were taken out of the text."""
    path = tmp_path / "c.tsv"
    path.write_text('id\ttext\n1\t"Hamlet" is a play\n2\t"unbalanced quote\n3\tthird\n4\tfourth\n')
    assert {d.id: d.text for d in read_corpus(path)} == {"1": '"Hamlet" is a play', "2": '"unbalanced quote',
                                                         "3": "third", "4": "fourth"}
    path.write_text('id\ttext\n5\t"a quoted ""field""\n over two lines"\n6\tsix\n')  # as pandas writes it
    assert {d.id: d.text for d in read_corpus(path)} == {"5": 'a quoted "field"\n over two lines', "6": "six"}
    # a quoted row right after a stray quote is read as quoted (it kept its quote marks, or was cut at its newline)
    for name, sep in (("r.tsv", "\t"), ("r.csv", ",")):
        path = tmp_path / name
        path.write_text(sep.join(["id", "title", "text"]) + f'\nt3{sep}T{sep}"open only\nt5{sep}"q"{sep}"hello"\n'
                        f't6{sep}T{sep}"multi\nline two"\nt7{sep}T{sep}last\n')
        docs = {d.id: (d.title, d.text) for d in read_corpus(path)}
        assert docs == {"t3": ("T", '"open only' if sep == "\t" else "open only"), "t5": ("q", "hello"),
                        "t6": ("T", "multi\nline two"), "t7": ("T", "last")}, (name, docs)
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('id,text\n1,"open quote\n2,second\n3,"fine, quoted"\n')
    assert {d.id: d.text for d in read_corpus(csv_path)} == {"1": "open quote", "2": "second", "3": "fine, quoted"}


def test_csv_wrong_column_count(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text\n1,one\n2,two,extra\n3\n"4","multi\nline"\n5,five\n')
    with pytest.raises(MalformedRecord) as err:
        list(read_corpus(path))
    assert (err.value.line, err.value.source) == (3, str(path))
    assert "expected 2 columns" in err.value.problem
    stats = ReadStats()
    docs = list(read_corpus(path, on_error="skip", stats=stats))
    assert [d.id for d in docs] == ["1", "4", "5"]
    assert docs[1].text == "multi\nline"
    assert stats.skipped == 2
    assert [e.split(": ", 1)[0] for e in stats.errors] == [f"{path}:3", f"{path}:4"]


def test_csv_line_numbers_after_multiline_rows(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text\n1,"a\nb\nc"\n\n2,x,y\n')
    with pytest.raises(MalformedRecord) as err:
        list(read_corpus(path))
    assert err.value.line == 6


def test_csv_missing_text_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,body\n1,hello\n")
    with pytest.raises(CorpusError) as err:
        list(read_corpus(path))
    msg = str(err.value)
    assert not isinstance(err.value, MalformedRecord)
    assert "text column 'text'" in msg
    assert "'id', 'body'" in msg
    assert "--text-field" in msg and "--id-field" in msg and "--title-field" in msg


def test_csv_missing_id_column_and_empty_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("key,text\n1,hello\n")
    with pytest.raises(CorpusError, match="id column 'id'"):
        list(read_corpus(path))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CorpusError, match="header"):
        list(read_corpus(empty))


def test_csv_not_utf8_row_is_malformed(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,text\n1,caf\xe9\n2,ok\n")
    stats = ReadStats()
    assert [d.id for d in read_corpus(path, on_error="skip", stats=stats)] == ["2"]
    assert stats.errors == [f"{path}:2: not UTF-8 text"]


# --------------------------------------------------------------------------- folder


def make_folder(root: Path) -> Path:
    root.mkdir()
    (root / "b_notes-file.txt").write_text("Plain text body.\nSecond line.\n", encoding="utf-8")
    (root / "a.md").write_text("Intro line\n\n# The Heading\n\nBody text.\n", encoding="utf-8")
    sub = root / "sub" / "deeper"
    sub.mkdir(parents=True)
    (sub / "page.html").write_text(
        "<html><head><title>Page &amp; Title</title><style>p{}</style></head>"
        "<body><h1>Big</h1><p>Hello&nbsp;world &lt;3</p><script>var x;</script>"
        "<ul><li>one</li><li>two</li></ul></body></html>",
        encoding="utf-8",
    )
    (root / "sub" / "z.markdown").write_text("## Only level two\ntext\n", encoding="utf-8")
    (root / "ignored.odt").write_bytes(b"PK\x03\x04")  # an extension bertsearch does not read
    (root / ".hidden.txt").write_text("hidden")
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text("hidden too")
    return root


def test_folder_reads_files(tmp_path):
    root = make_folder(tmp_path / "docs")
    docs = list(read_corpus(root))
    assert [d.id for d in docs] == ["a.md", "b_notes-file.txt", "sub/deeper/page.html", "sub/z.markdown"]
    by_id = {d.id: d for d in docs}
    assert by_id["a.md"].title == "The Heading"
    assert by_id["a.md"].text == "Intro line\n\n# The Heading\n\nBody text.\n"
    assert by_id["b_notes-file.txt"].title == "b notes file"
    assert by_id["b_notes-file.txt"].text == "Plain text body.\nSecond line.\n"
    assert by_id["sub/z.markdown"].title == "Only level two"
    page = by_id["sub/deeper/page.html"]
    assert page.title == "Page & Title"
    assert page.text == "Big\n\nHello world <3\n\none\ntwo"
    meta = by_id["a.md"].metadata
    assert meta["path"] == "a.md"
    assert meta["modified"].startswith("20") and "T" in meta["modified"]
    assert count_records(root) == 4


def test_markdown_front_matter_is_metadata_not_text(tmp_path):
    """Front matter was indexed as body text (a snippet began "--- title: ... secret: ...", and `ask` answered with a
    front-matter value), and its keys could not be filtered on."""
    import datetime

    root = tmp_path / "docs"
    root.mkdir()
    (root / "aurora.md").write_text("---\ntitle: Front Title\ntags: [sky, night]\nsecret: key\ndate: 2024-05-01\n"
                                    "---\n# Northern Lights\n\nAuroras glow green.\n")
    (root / "only.md").write_text("---\ntitle: Only Front\n---\n")
    (root / "bad.md").write_text("---\nnot: [closed\n---\nBody here.\n")
    (root / "open.md").write_text("---\nno closing line\n")
    docs = {d.id: d for d in read_corpus(root)}
    a = docs["aurora.md"]
    assert (a.title, a.text) == ("Northern Lights", "# Northern Lights\n\nAuroras glow green.\n")
    assert {k: a.metadata[k] for k in ("tags", "secret", "date")} == {"tags": ["sky", "night"], "secret": "key",
                                                                      "date": datetime.date(2024, 5, 1)}
    assert (docs["only.md"].title, docs["only.md"].text) == ("Only Front", "")  # a document of its title alone
    assert docs["bad.md"].text == "Body here.\n" and "not" not in docs["bad.md"].metadata
    assert docs["open.md"].text == "---\nno closing line\n"  # not front matter: the file's own text
    assert docs["open.md"].title == "no closing line"  # (not "---")
    # values metadata cannot hold, and keys bertsearch sets, are left out: they stopped the whole folder's indexing
    deep = "[" * 40 + "]" * 40
    (root / "odd.md").write_text(f"---\nx: .nan\nb: !!binary aGVsbG8=\ns: !!set {{a, b}}\nd: {deep}\nok: 1\n"
                                 "encoding: ebcdic\npath: elsewhere\n---\nOdd values.\n")
    import bertsearch

    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    report = ix.add_corpus(root)
    assert report.added == 5 and report.decoded_as == {}  # (only.md: a title alone; open.md read as it is)
    meta = ix.get("odd.md")["metadata"]
    assert (meta["ok"], meta["s"], meta["path"]) == (1, ["a", "b"], "odd.md") and not {"x", "b", "d", "encoding"} & set(meta)
    ix.close()


def test_folder_empty_file_is_not_a_document_of_its_name(tmp_path):
    """A document with a title and no text is indexed; a file name is not such a title, so an empty file stays
    empty (counted as such), while an HTML page with a <title> and no body is a document of its title."""
    import bertsearch

    root = tmp_path / "docs"
    root.mkdir()
    (root / "empty-notes.txt").write_text(" \n")
    (root / "blank.md").write_text("")
    (root / "titled.html").write_text("<html><head><title>Mount Etna</title></head><body> </body></html>")
    assert {d.id: d.title for d in read_corpus(root)} == {"blank.md": "", "empty-notes.txt": "", "titled.html": "Mount Etna"}
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    report = ix.add(read_corpus(root))
    assert (report.added, report.empty) == (1, 2)
    ix.close()


def test_folder_skips_binary_and_reads_latin1_with_a_fallback(tmp_path):
    root = make_folder(tmp_path / "docs")
    (root / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (root / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (root / "bom.txt").write_bytes("\ufeffwith bom".encode("utf-8"))
    (root / "notepad.txt").write_bytes("\ufeffnaïve Unicode".encode("utf-16-le"))  # Notepad's "Unicode"
    (root / "photo.jpg").write_bytes(b"\xff\xd8")
    stats = ReadStats()
    docs = {d.id: d for d in read_corpus(root, stats=stats)}  # on_error "stop": none of these stops the run
    assert "binary.txt" not in docs and docs["latin1.txt"].text == "café crème"
    assert docs["latin1.txt"].metadata["encoding"] == "cp1252" and "encoding" not in docs["bom.txt"].metadata
    assert docs["bom.txt"].text == "with bom" and docs["notepad.txt"].text == "naïve Unicode"
    assert stats.read == 7 and stats.skipped == 0 and stats.errors == []
    assert stats.skipped_files == {"binary": 1, ".jpg": 1, ".odt": 1}
    assert stats.decoded_as == {"cp1252": ["latin1.txt"], "utf-16": ["notepad.txt"]}


def test_folder_unreadable_file_is_a_record_error_named_without_a_line(tmp_path, monkeypatch):
    import bertsearch.readers.folder as folder

    root = make_folder(tmp_path / "docs")
    real = Path.read_bytes

    def deny(self):
        if self.name == "a.md":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(MalformedRecord) as err:
        list(read_corpus(root))
    assert err.value.line == 0 and str(err.value).startswith(f"{root / 'a.md'}: cannot read file")
    assert folder.SUFFIXES


def test_html_extraction():
    html = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>
   Spaced   Title </title>
<script>document.write("no")</script></head>
<body>
<nav>Menu</nav>
<h1>Main   heading</h1>
<p>First <b>bold</b> para&mdash;with &quot;entities&quot; &#169;.</p>
<div>Line one<br>Line two</div>
<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
<pre>code  line 1
    indented</pre>
<noscript>enable js</noscript>
<style>.x{color:red}</style>
</body></html>"""
    title, text = html_to_text(html)
    assert title == "Spaced Title"
    assert "document.write" not in text and "color:red" not in text and "enable js" not in text
    assert "Spaced" not in text
    lines = text.split("\n")
    assert "Main heading" in lines
    assert 'First bold para—with "entities" ©.' in lines
    assert "Line one" in lines and "Line two" in lines
    assert "code  line 1\n    indented" in text
    assert "a b" in text and "c d" in text


def test_html_title_falls_back_to_h1_then_stem(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "with-h1.html").write_text("<body><h1>The <em>H1</em></h1><p>x</p></body>")
    (root / "bare_page.htm").write_text("<p>just text</p>")
    docs = {d.id: d for d in read_corpus(root)}
    assert docs["with-h1.html"].title == "The H1"
    assert docs["bare_page.htm"].title == "bare page"
    assert docs["bare_page.htm"].text == "just text"


def test_markdown_title_rules():
    assert markdown_title("# Top\ntext") == "Top"
    assert markdown_title("```\n# comment in code\n```\n# Real\n") == "Real"
    assert markdown_title("### Deep heading\n# Later\n") == "Later"
    assert markdown_title("### Deep heading\ntext\n") == "Deep heading"
    assert markdown_title("---\ntitle: From Front Matter\n---\nbody\n") == "From Front Matter"
    assert markdown_title("\n\n", fallback="stem") == "stem"


# --------------------------------------------------------------------------- BEIR


def make_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "T1", "text": "text one", "metadata": {"url": "http://x"}},
            {"_id": "d2", "title": "", "text": "text two", "lang": "en"},
        ],
    )
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "query one"}, {"_id": 2, "text": "query two"}])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n2\td2\t2\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    return root


def test_beir_corpus(tmp_path):
    root = make_beir(tmp_path / "bench")
    docs = list(read_corpus(root))
    assert [(d.id, d.title, d.text) for d in docs] == [("d1", "T1", "text one"), ("d2", "", "text two")]
    assert docs[0].metadata == {"url": "http://x"}
    assert docs[1].metadata == {"lang": "en"}
    assert count_records(root) == 2


def test_beir_queries_and_qrels(tmp_path):
    root = make_beir(tmp_path / "bench")
    assert load_queries(root) == {"q1": "query one", "2": "query two"}
    assert load_qrels(root) == {"q1": {"d1": 1, "d2": 0}, "2": {"d2": 2}}
    assert load_qrels(root, "train") == {"q1": {"d2": 1}}


def test_beir_missing_split(tmp_path):
    root = make_beir(tmp_path / "bench")
    with pytest.raises(CorpusError) as err:
        load_qrels(root, "dev")
    assert "dev" in str(err.value)
    assert "test, train" in str(err.value)


def test_beir_bad_qrels_row(tmp_path):
    root = make_beir(tmp_path / "bench")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(CorpusError, match=r"test.tsv:2: expected 3"):
        load_qrels(root)


# --------------------------------------------------------------------------- count_records


def test_count_records(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": str(i), "text": "x"} for i in range(5)])
    assert count_records(path) == 5
    no_newline = tmp_path / "n.jsonl"
    no_newline.write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}')
    assert count_records(no_newline) == 2
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("id,text\n" + "".join(f"{i},t\n" for i in range(7)))
    assert count_records(csv_path) == 7
    tsv_path = tmp_path / "c.tsv"
    tsv_path.write_text("id\ttext\n")
    assert count_records(tsv_path) == 0
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert count_records(empty) == 0


def test_count_records_large_file_blocks(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"id": "x", "text": "y" * 300}) + "\n"
    n = 9_000  # ~2.8 MB, several 1 MiB blocks
    path.write_text(line * n)
    assert count_records(path) == n


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not SCIFACT.exists(), reason=f"{SCIFACT} is absent")
def test_scifact_beir():
    assert detect_format(SCIFACT) == "beir"
    assert count_records(SCIFACT) == 5183
    stats = ReadStats()
    ids = set()
    n = 0
    for doc in read_corpus(SCIFACT, stats=stats):
        n += 1
        ids.add(doc.id)
        assert doc.text
    assert n == 5183 == stats.read == len(ids)
    assert stats.skipped == 0
    queries = load_queries(SCIFACT)
    qrels = load_qrels(SCIFACT, "test")
    assert len(qrels) == 300
    assert set(qrels) <= set(queries)
    assert all(d in ids for rel in qrels.values() for d in rel)


def test_csv_columns_named_twice_are_refused_and_unnamed_ones_kept_apart(tmp_path):
    """A second 'text' column went to the metadata unnoticed, and two unnamed columns shared the key "" (one lost)."""
    twice = tmp_path / "twice.csv"
    twice.write_text("id,text,text\n1,a,b\n")
    with pytest.raises(CorpusError, match="the header names 'text' more than once"):
        list(read_corpus(twice))
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("id,text,,\n1,hello,x,y\n")
    (doc,) = read_corpus(unnamed)
    assert doc.metadata == {"column_3": "x", "column_4": "y"}
