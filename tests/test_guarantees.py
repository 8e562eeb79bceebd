"""Nothing lost, nothing silently wrong: one test (or a few) per defect of issue #18, items 1-14.

Each was written against the defect first and failed there; the item number is in the test's name.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

import bertsearch
from bertsearch.errors import BadArgument, BadFilter, BadQuery, BertsearchError, ModelNotFound


def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _one_line_error(r) -> str:
    """The CLI failed with one line on stderr (no traceback); that line."""
    assert r.exit_code != 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    return lines[0]


# -- 1: --prune on a corpus that reads nothing --------------------------------------------------------


@pytest.mark.parametrize("content, fmt", [("", None), ('{"id": "a", "text": "x"}\n', "tsv")])
def test_1_prune_with_nothing_read_deletes_nothing(run, corpus_file, tmp_path, content, fmt):
    ix = tmp_path / "ix"
    assert run("index", corpus_file, "--index", ix, "--model", "hashing").exit_code == 0
    corpus_file.write_text(content if fmt is None else "id\ttext\n")  # emptied, or read in a format with no rows
    args = ["index", corpus_file, "--index", ix, "--prune"] + (["--format", fmt] if fmt else [])
    line = _one_line_error(run(*args))
    assert "0 documents" in line and "nothing was deleted" in line
    with bertsearch.open_index(ix) as index:
        assert index.store.counts()["documents"] == 4


def test_1_library_prune_with_nothing_read_refuses(index):
    with pytest.raises(BadArgument, match="0 documents"):
        index.add([], prune=True)
    assert index.store.counts()["documents"] == 4
    with pytest.raises(BadArgument, match="2 documents, none with text"):  # (a wrong text field reads like this)
        index.add([{"id": "x", "text": ""}, {"id": "y", "text": " "}], prune=True)
    assert index.store.counts()["documents"] == 4


# -- 2: eval beir's index name ---------------------------------------------------------------------


def _beir(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str]]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    _jsonl(folder / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in docs.items()])
    _jsonl(folder / "queries.jsonl", [{"_id": i, "text": t} for i, t in queries.items()])
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    return folder


def test_2_eval_beir_of_another_dataset_of_the_same_folder_name(tmp_path, monkeypatch):
    from bertsearch.evaluation.beir import evaluate_beir

    monkeypatch.chdir(tmp_path)
    one = _beir(tmp_path / "one" / "mini", {"d1": "red apples grow on trees", "d2": "blue whales swim in oceans"},
                {"q1": "apples on trees"}, [("q1", "d1")])
    two = _beir(tmp_path / "two" / "mini", {"d1": "blue whales swim in oceans", "d3": "red apples grow on trees"},
                {"q1": "apples on trees"}, [("q1", "d3")])
    assert evaluate_beir(one, model="hashing", mode="lexical")["ndcg@10"] == 1.0
    second = evaluate_beir(two, model="hashing", mode="lexical")
    assert second["ndcg@10"] == 1.0  # scored on its own corpus, not the first's (where d1 is the apples)
    with bertsearch.open_index(second["index"]) as ix:
        assert sorted(ix.store.ids()) == ["d1", "d3"] and "whales" in ix.get("d1")["text"]
    mine = tmp_path / "mine"  # a user's own index given as --index by mistake: refused, nothing pruned
    with bertsearch.open_index(mine, create=True, model="hashing") as ix:
        ix.add([{"id": "note", "text": "my own note"}])
    with pytest.raises(BadArgument, match="did not put there"):
        evaluate_beir(two, model="hashing", mode="lexical", index_path=mine)
    with bertsearch.open_index(mine) as ix:
        assert list(ix.store.ids()) == ["note"]
    # another dataset's evaluation index named as --index: refused too (it was pruned to this corpus unsaid)
    with pytest.raises(BadArgument, match=r"holds the corpus of .*one.*mini.*give a new --index folder"):
        evaluate_beir(two, model="hashing", mode="lexical", index_path=evaluate_beir(one, model="hashing",
                                                                                      mode="lexical")["index"])


# -- 3: a document whose text becomes empty -----------------------------------------------------------


def test_3_document_emptied_is_removed(index, docs):
    emptied = dict(docs[0], text="   ", title=" ")
    report = index.add([emptied] + docs[1:], prune=True)
    assert report.empty == 1 and report.deleted == 1
    assert index.get("aurora") is None
    assert all(h.doc_id != "aurora" for h in index.search("northern lights magnetosphere", k=4, mode="lexical"))
    assert index.store.counts()["documents"] == 3


def test_3_a_prune_that_shares_no_id_with_the_index_deletes_nothing(tmp_path, run):
    """`index FOLDER/sub --prune` on an index of FOLDER: the subfolder's paths are other ids, and every document
    indexed before was deleted without a word."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (root / name).write_text(f"text of {name}\n")
    ix = tmp_path / "ix"
    assert run("index", root, "--index", ix, "--model", "hashing").exit_code == 0
    import bertsearch

    for _ in range(2):  # (the same command again: it passed once the first run's documents were in)
        r = run("index", root / "sub", "--index", ix, "--prune")
        assert r.exit_code == 1 and f"is inside {root}, a folder indexed" in r.stderr and "nothing was read" in r.stderr
        with bertsearch.open_index(ix) as index:
            assert sorted(index.store.ids()) == ["a.txt", "b.txt", "sub/c.txt"]
    extra = tmp_path / "extra.jsonl"  # a file added besides: the folder's prune is as ever (it was refused)
    extra.write_text('{"id": "x", "text": "an extra note"}\n')
    assert run("add", extra, "--index", ix).exit_code == 0
    (root / "b.txt").unlink()
    r = run("index", root, "--index", ix, "--prune", "--json")  # the folder indexed before: a prune as ever
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == 2  # b.txt, and the extra the corpus lacks
    moved = tmp_path / "moved"
    root.rename(moved)  # a folder moved (or a copy of the corpus under another name): a prune as ever
    (moved / "a.txt").unlink()
    r = run("index", moved, "--index", ix, "--prune", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == 1


def test_3_the_folders_read_are_recorded_before_reading_and_kept_by_reindex(tmp_path, monkeypatch):
    """A first `index` cut short kept its documents but not its folder, and `reindex` dropped the record: either way
    a subfolder's prune then deleted every document again."""
    from bertsearch import reindex as rx
    from bertsearch.store.sqlite import FOLDERS_KEY

    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/a.txt"):
        (root / name).write_text(f"text of {name}\n")
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing:64")

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ix.ingest, "add", cut_short)
    with pytest.raises(KeyboardInterrupt):
        ix.add_corpus(root)
    monkeypatch.undo()
    assert json.loads(ix.store.get_meta(FOLDERS_KEY)) == [str(root.resolve())]
    ix.add_corpus(root)
    ix.close()
    rx.reindex(tmp_path / "ix", "hashing:128")
    with bertsearch.open_index(tmp_path / "ix") as ix:
        assert json.loads(ix.store.get_meta(FOLDERS_KEY)) == [str(root.resolve())]
        with pytest.raises(BadArgument, match="is inside"):  # (a shared name, sub/a.txt's "a.txt", got past the other)
            ix.add_corpus(root / "sub", prune=True)
        assert sorted(ix.store.ids()) == ["a.txt", "sub/a.txt"]


def test_3_a_prune_of_documents_sharing_no_id_changes_nothing(index, docs):
    """Through the library (no corpus path to compare): a prune that would delete every document stored before,
    none of whose ids was read, is refused, and the documents it read are taken out again, so that the same call
    made twice does not prune (it did: the first call's documents were in by then)."""
    other = [{"id": f"n{i}", "text": f"new text {i}"} for i in range(3)]
    for _ in range(2):
        with pytest.raises(BadArgument, match="none of the 3 documents read was among the 4 .* nothing was changed"):
            index.add(other, prune=True)
        assert sorted(index.store.ids()) == sorted(d["id"] for d in docs)


def test_3_a_title_alone_is_a_document(index, docs, caplog):
    """A document with a title and no text was skipped as empty: a catalogue of names was not searchable."""
    report = index.add([dict(docs[0], text=""), {"id": "bare", "title": "Mount Etna eruption", "text": " \n"}])
    assert report.empty == 0 and report.replaced == 1 and report.added == 1 and report.chunks == 2
    for mode in ("lexical", "dense", "hybrid"):
        assert index.search("mount etna eruption", k=1, mode=mode)[0].doc_id == "bare", mode
    hit = index.search("aurora", k=1, mode="lexical")[0]
    assert (hit.doc_id, hit.title, hit.text) == ("aurora", docs[0]["title"], "")
    assert index.get("bare")["text"] == " \n" and index.check()["ok"]
    with caplog.at_level("WARNING"):
        index.ask("where is etna", k=2, rerank=False)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert index.add([{"id": "bare", "title": "", "text": ""}]).deleted == 1  # neither: it leaves the index
    assert index.get("bare") is None
    long = " ".join(f"word{i}" for i in range(600))  # longer than the window: its start is embedded (it raised)
    report = index.add([{"id": "long", "title": long, "text": ""}])
    assert (report.added, report.truncated) == (1, 1) and index.search("word3", k=1, mode="dense")[0].doc_id == "long"


# -- 4: another writer replaced documents under a reader's vector index -------------------------------


@pytest.mark.parametrize("ann", ["flat", "hnsw"])
def test_4_search_after_another_writer_replaces_documents(tmp_path, docs, ann):
    path = tmp_path / "ix"
    with bertsearch.open_index(path, create=True, model="hashing", ann=ann) as writer:
        writer.add(docs)
    reader = bertsearch.open_index(path)
    assert reader.search("northern lights", k=1, mode="dense")[0].doc_id == "aurora"  # builds its vectors
    with bertsearch.open_index(path) as writer:
        writer.add([dict(d, text=d["text"] + " Revised.") for d in docs])  # every chunk replaced
        writer.add([{"id": "new", "text": "Glaciers are slow rivers of ice carving valleys."}])
    hits = reader.search("northern lights", k=4, mode="dense")
    assert [h.doc_id for h in hits][:1] == ["aurora"] and len(hits) == 4
    assert "Revised" in hits[0].text
    assert reader.search("glaciers slow rivers of ice", k=1, mode="dense")[0].doc_id == "new"
    reader.close()


# -- 5: filters on CSV numbers, unknown fields, case ---------------------------------------------------


def test_5_csv_numeric_columns_become_numbers(tmp_path):
    csv = tmp_path / "docs.csv"
    csv.write_text("id,text,year,zip,score,mixed\n"
                   "a,first text,1999,02134,4.5,12\n"
                   "b,second text,2005,10001,-1e3,n/a\n"
                   "c,third text,2021,,,7\n")
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add_corpus(csv)
        assert ix.get("a")["metadata"] == {"year": 1999, "zip": "02134", "score": 4.5, "mixed": "12"}
        assert "score" not in ix.get("c")["metadata"]  # an empty cell of a number column is no value
        assert [h.doc_id for h in ix.search("text", k=5, mode="lexical", where="year >= 2000")] == ["b", "c"]


def test_5_filter_on_a_field_no_document_has(index):
    with pytest.raises(BadFilter, match="no document has the field 'yeer'"):
        index.search("penicillin", where="yeer >= 1900")
    with pytest.raises(BadQuery, match="'Topic'.*did you mean 'topic'"):
        index.search("volcano", where="Topic = 'science'")
    with pytest.raises(BadFilter, match="no document has the field"):
        index.delete(where="colour = 'red'")
    assert index.store.counts()["documents"] == 4
    # a field that some documents have is fine, as are the columns and a nested path under a known key
    assert [h.doc_id for h in index.search("penicillin", where="year = 1928")] == ["penicillin"]
    assert index.search("penicillin", where="id = 'penicillin' and title is not null")


def test_5_cli_filter_unknown_field_is_a_clear_error(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    line = _one_line_error(run("search", "x", "--index", ix, "--where", "Year > 1"))
    assert "Year" in line and "year" in line


# -- 6: delete by id and filter together; --dry-run -----------------------------------------------------


def test_6_delete_id_and_where_together_is_refused(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    line = _one_line_error(run("delete", "--id", "piano", "--where", "topic = 'science'", "--index", ix))
    assert "--id" in line and "--where" in line
    with bertsearch.open_index(ix) as index:
        assert index.store.counts()["documents"] == 4
        with pytest.raises(BadArgument):
            index.delete(["piano"], where="topic = 'science'")


def test_6_delete_dry_run_deletes_nothing(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    r = run("delete", "--where", "topic = 'science'", "--index", ix, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["dry_run"] is True and out["deleted"] == 0 and out["would_delete"] == 2
    assert sorted(out["ids"]) == ["aurora", "volcano"]
    r = run("delete", "--id", "piano", "--id", "nope", "--index", ix, "--dry-run")
    assert r.exit_code == 0 and "would delete 1 of 4 documents: piano" in r.stdout  # the answer: on stdout
    assert "not stored: nope" in r.stdout
    r = run("delete", "--id", "piano", "--id", "nope", "--index", ix, "--json")
    assert json.loads(r.stdout)["deleted"] == 1 and json.loads(r.stdout)["not_found"] == ["nope"]
    assert run("delete", "--id", "", "--index", ix).exit_code == 1
    with bertsearch.open_index(ix) as index:
        assert index.store.counts()["documents"] == 3  # piano, deleted for real above


# -- 7: duplicate ids across batches --------------------------------------------------------------------


def test_7_duplicate_ids_across_batches_are_counted(tmp_path, docs, caplog):
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        again = dict(docs[0], text="An aurora, seen again later in the corpus.")
        with caplog.at_level(logging.WARNING):
            report = ix.add(docs + [again], batch_size=2)
        assert report.duplicates == 1
        assert "aurora" in caplog.text and "more than once" in caplog.text
        assert ix.get("aurora")["text"] == again["text"]  # the later one is kept, as within a batch


# -- 8: chunks that re-tokenize longer than the window ---------------------------------------------------


@pytest.mark.model
def test_8_no_chunk_is_longer_than_the_window(tmp_path, tiny_encoder):
    from transformers import AutoTokenizer

    words = ["antidisestablishmentarianism", "floccinaucinihilipilification", "pneumonoultramicroscopic",
             "hippopotomonstrosesquippedaliophobia", "supercalifragilistic", "thyroparathyroidectomized"]
    rng = np.random.default_rng(0)
    text = " ".join(rng.choice(words, 400))  # one long "sentence": it is cut into token windows
    with bertsearch.open_index(tmp_path / "ix", create=True, model=str(tiny_encoder), overlap=8) as ix:
        report = ix.add([{"id": "long", "title": "Long words", "text": text}])
        tok = AutoTokenizer.from_pretrained(str(tiny_encoder))
        rows = ix.store.conn.execute('SELECT start, "end" FROM chunks ORDER BY id').fetchall()
        lengths = [len(tok("Long words\n" + text[a:b])["input_ids"]) for a, b in rows]
        assert max(lengths) <= 64 and report.truncated == 0
        assert rows[0][0] == 0 and rows[-1][1] == len(text)
        assert all(b2 <= b1 or a2 <= b1 for (a1, b1), (a2, b2) in itertools.pairwise(rows))  # no gap between chunks


def test_8_truncated_counts_what_the_encoder_cannot_read(tmp_path):
    """An encoder whose tokenizer sees more pieces in a chunk than in the whole text: what cannot be fitted is
    counted, never passed over in silence."""
    from bertsearch.models.hashing import HashingEncoder

    class Splitting(HashingEncoder):
        def token_spans(self, texts):  # the whole text tokenizes to words; a chunk on its own to more pieces
            return [[m.span() for m in __import__("re").finditer(r"\w+", t)] for t in texts]

        def input_tokens(self, texts):
            return [len(t.split()) * 2 + self.special_tokens for t in texts]

    from bertsearch.config import IndexConfig
    from bertsearch.engine import Index
    from bertsearch.store import Store

    path = tmp_path / "ix"
    path.mkdir()
    enc = Splitting(16, max_tokens=16)
    store = Store(path / Store.FILE)
    config = IndexConfig(model=enc.name, fingerprint=enc.fingerprint(), dim=16, max_tokens=16, overlap=2)
    store.set_config(config)
    ix = Index(path, store, config, enc)
    text = " ".join(f"w{i}" for i in range(40))
    report = ix.add([{"id": "x", "text": text}])
    n_tokens = [n for (n,) in store.conn.execute("SELECT n_tokens FROM chunks")]
    assert report.truncated == 0 and all(2 * n + 2 <= 16 for n in n_tokens)  # re-cut to what the model reads
    ix.close()


# -- 9: a corrupt store.db ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_9_corrupt_store_gives_one_line_from_every_command(run, corpus_file, tmp_path, damage):
    ix = tmp_path / "ix"
    assert run("index", corpus_file, "--index", ix, "--model", "hashing").exit_code == 0
    db = ix / "store.db"
    if damage == "garbage":
        db.write_bytes(b"this is not a database at all " * 200)
    else:
        with bertsearch.open_index(ix) as index:  # checkpoint the WAL so the truncation hits real pages
            index.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    for args in (["search", "aurora"], ["info"], ["check"], ["check", "--repair"], ["delete", "--id", "piano"],
                 ["index", corpus_file]):
        r = run(*args, "--index", ix)
        line = _one_line_error(r)
        assert "store.db" in line and ("backup" in line or "re-index" in line), (args, line)
    r = run("check", "--index", ix, "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False and "store.db" in report["problems"][0]


# -- 10: --model naming a folder that holds no model ---------------------------------------------------


def test_10_model_folder_without_a_model(run, corpus_file, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    ix = tmp_path / "ix"
    line = _one_line_error(run("index", corpus_file, "--index", ix, "--model", empty))
    assert "holds no model" in line and str(empty) in line
    assert not ix.exists()  # no half-made index left behind
    with pytest.raises(ModelNotFound, match="holds no model"):
        bertsearch.open_index(tmp_path / "ix2", create=True, model=str(empty))
    assert not (tmp_path / "ix2").exists()


def test_10_existing_index_with_a_folder_that_holds_no_model(run, corpus_file, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    line = _one_line_error(run("search", "aurora", "--index", ix, "--model", empty))
    assert "holds no model" in line and "fingerprint" not in line


def test_10_failed_index_leaves_no_folder_and_bad_corpus_is_found_first(run, tmp_path):
    csv = tmp_path / "docs.csv"
    csv.write_text("key,body\n1,hello\n")
    ix = tmp_path / "ix"
    # the model does not exist either: the corpus's error comes first, so the corpus was read before the model
    line = _one_line_error(run("index", csv, "--index", ix, "--model", tmp_path / "missing-model"))
    assert "no id column 'id'" in line
    assert not ix.exists()
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "a"}])
    line = _one_line_error(run("index", bad, "--index", ix, "--model", "hashing"))
    assert "bad.jsonl:1" in line and not ix.exists()


# -- 11: a folder with a Latin-1 file, a binary file, other extensions -----------------------------------


def test_11_folder_with_latin1_binary_and_other_files(run, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "cafe.txt").write_bytes("Le caf\xe9 est ouvert. Cr\xe8me br\xfbl\xe9e.".encode("latin-1"))
    (folder / "plain.md").write_text("# Plain\nAn ordinary note about glaciers.")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 20)
    (folder / "paper.pdf").write_bytes(b"%PDF-1.4 not read")
    (folder / "photo.png").write_bytes(b"\x89PNG")
    ix = tmp_path / "ix"
    r = run("index", folder, "--index", ix, "--model", "hashing", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["added"] == 2
    assert report["skipped_files"] == {"binary": 1, "damaged .pdf": 1, ".png": 1}
    assert report["decoded_as"] == {"cp1252": ["cafe.txt"]}
    with bertsearch.open_index(ix) as index:
        assert index.get("cafe.txt")["text"] == "Le café est ouvert. Crème brûlée."
    r = run("index", folder, "--index", ix)
    assert r.exit_code == 0
    assert "not UTF-8" in r.stderr and "cafe.txt" in r.stderr and "3 files skipped" in r.stderr
    (folder / "plain.md").write_bytes(b"\x00binary now")  # there, but unreadable this time: its copy stays
    r = run("index", folder, "--index", ix, "--prune", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == 0
    with bertsearch.open_index(ix) as index:
        assert index.get("plain.md")["text"].startswith("# Plain")


# -- 12: a very long query ---------------------------------------------------------------------------------


def test_12_long_query_is_cut_before_the_expensive_stages(index, caplog):
    seen: list[str] = []
    encode = index.encoder.inner.encode  # (what the shared encoder's worker runs)

    def spy(texts, **kw):
        seen.extend(texts)
        return encode(texts, **kw)

    index.encoder.inner.encode = spy
    q = " ".join(["northern lights aurora"] * 2000)  # 6,000 words
    with caplog.at_level(logging.WARNING):
        hits = index.search(q, k=2)
    assert hits and hits[0].doc_id == "aurora"
    assert seen and all(len(t.split()) <= index.encoder.max_tokens - index.encoder.special_tokens for t in seen)
    assert "query of 6000 words" in caplog.text and "cut" in caplog.text


def test_12_cli_says_the_query_was_cut(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    r = run("search", *(["aurora"] * 500), "--index", ix, "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["query_cut_to_words"] < 500  # (and the log says so on stderr)


@pytest.mark.model
def test_12_reader_cuts_a_long_question_instead_of_refusing_it(caplog):
    from bertsearch.models.reader import load_reader

    reader = load_reader()
    passage = "Alexander Fleming discovered penicillin in 1928 at St Mary's Hospital in London."
    with caplog.at_level(logging.WARNING):
        spans = reader.read("when did Fleming discover penicillin " + "please " * 1000, [passage])
    assert "cut to" in caplog.text
    assert spans and all(passage[s.start : s.end] == s.text for s in spans)


# -- 13: using an index after close() ------------------------------------------------------------------


def test_13_search_after_close_is_a_clear_error(tmp_path, docs):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add(docs)
    ix.close()
    for call in (lambda: ix.search("aurora"), lambda: ix.add(docs), lambda: ix.get("aurora"), ix.info):
        with pytest.raises(BertsearchError, match="closed"):
            call()
    ix.close()  # closing twice is harmless


# -- 14: the vector file's temporary name ---------------------------------------------------------------


def test_14_vector_file_temporary_names_do_not_collide(tmp_path):
    from bertsearch.vectors import VectorIndex

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((50, 8)).astype(np.float32)
    path = tmp_path / "vectors.faiss"
    (tmp_path / "vectors.faiss.tmp").mkdir()  # another writer's fixed temporary name, taken
    (tmp_path / "vectors.faiss.json.tmp").mkdir()
    dead = tmp_path / f"vectors.faiss.{2**22 + 7}.1.tmp"  # a pid above any pid_max: a killed saver's leftover
    dead.write_bytes(b"half a file")
    errors: list[BaseException] = []

    def save(gen):
        try:
            VectorIndex.build(np.arange(50), xb, "flat", seq=gen, epoch="e").save(path)
        except BaseException as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    threads = [threading.Thread(target=save, args=(g,)) for g in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    meta = json.loads((tmp_path / "vectors.faiss.json").read_text())
    assert VectorIndex.load(path, spec="flat", epoch="e", upto=meta["seq"]).count == 50
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == ["vectors.faiss.json.tmp", "vectors.faiss.tmp"]
    assert not dead.exists()


# -- found by the fault soak (scripts/soak.py) ----------------------------------------------------------


def test_soak_garbage_config_json_is_rewritten_not_a_traceback(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    (ix / "config.json").write_bytes(bytes(range(256)) * 2)  # not even UTF-8
    r = run("search", "aurora", "--index", ix, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["hits"][0]["doc_id"] == "aurora"
    assert json.loads((ix / "config.json").read_text())["model"] == "hashing:64"  # the mirror is written again


def test_soak_a_retired_folder_left_after_a_swap_blocks_nothing(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    left = tmp_path / ".ix.retired"  # a re-index killed after its swap, before it removed the old folder
    left.mkdir()
    (left / "config.json").write_text("{}")
    r = run("reindex", "--index", ix, "--model", "hashing:32", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["to_model"] == "hashing:32" and not left.exists()


def _limited(limit: int):
    import resource
    import signal

    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def test_soak_a_full_disk_is_one_line_naming_the_index(corpus_file, tmp_path):
    import subprocess
    import sys

    ix = tmp_path / "ix"
    big = _jsonl(tmp_path / "big.jsonl", [{"id": f"d{i}", "text": f"document {i} " + "word " * 300} for i in range(300)])
    subprocess.run([sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(ix), "--model", "hashing"],
                   check=True, capture_output=True)
    size = (ix / "store.db").stat().st_size
    r = subprocess.run([sys.executable, "-m", "bertsearch", "add", str(big), "--index", str(ix)], capture_output=True,
                       text=True, preexec_fn=_limited(size + 100_000), timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert str(ix) in lines[0] and ("full" in lines[0] or "disk" in lines[0]) and "damaged" not in lines[0]
    with bertsearch.open_index(ix) as index:  # what was committed before is all there
        assert {"aurora", "penicillin", "volcano", "piano"} <= set(index.store.ids()) and index.check()["ok"]


def test_soak_a_read_only_index_is_searched_and_refuses_writes(tmp_path, corpus_file):
    import os
    import shutil
    import subprocess
    import sys

    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("as root, file modes bind only with setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"] if os.geteuid() == 0 else []
    ix = tmp_path / "ix"
    subprocess.run([sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(ix), "--model", "hashing"],
                   check=True, capture_output=True)
    for f in ix.iterdir():
        f.chmod(0o444)
    ix.chmod(0o555)
    try:
        def cli(*args):
            return subprocess.run([*prefix, sys.executable, "-m", "bertsearch", *args, "--index", str(ix)],
                                  capture_output=True, text=True, timeout=120)

        r = cli("search", "northern lights", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["hits"][0]["doc_id"] == "aurora"
        assert cli("check").returncode == 0
        r = cli("delete", "--id", "aurora")
        assert r.returncode == 1 and "read-only" in r.stderr and "Traceback" not in r.stderr
    finally:
        ix.chmod(0o755)
        for f in ix.iterdir():
            f.chmod(0o644)
