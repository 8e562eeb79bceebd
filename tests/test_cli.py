import json
import math
import statistics

import pytest


def test_index_search_info_roundtrip(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    r = run("index", corpus_file, "--index", ix, "--model", "hashing", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["added"] == 4 and report["index"]["documents"] == 4
    r = run("search", "northern", "lights", "--index", ix, "--json", "-k", "2")
    data = json.loads(r.stdout)
    assert data["query"] == "northern lights" and data["mode"] == "hybrid"
    assert data["hits"][0]["doc_id"] == "aurora" and len(data["hits"]) == 2
    assert {"dense", "lexical", "hybrid"} <= set(data["hits"][0]["scores"])
    r = run("search", "penicillin", "--index", ix, "--mode", "lexical")
    assert r.exit_code == 0 and "Penicillin" in r.stdout
    r = run("info", "--index", ix, "--json")
    info = json.loads(r.stdout)
    assert info["documents"] == 4 and info["chunks"] >= 4 and info["model"].startswith("hashing")
    assert info["ann"] == "flat" and info["size_bytes"] > 0 and info["last_updated"].startswith("20")
    assert {"reranker", "reader"} <= set(info)
    r = run("info", "--index", ix)
    assert "documents  4" in r.stdout and "MiB" in r.stdout and "last_updated" in r.stdout
    # re-running index on the same corpus changes nothing and embeds nothing
    again = json.loads(run("index", corpus_file, "--index", ix, "--json").stdout)
    assert again["unchanged"] == 4 and again["chunks"] == 0


def test_user_mistakes_are_one_line_and_nonzero(run, tmp_path, corpus_file):
    r = run("search", "anything", "--index", tmp_path / "missing")
    assert r.exit_code == 1 and "no index at" in r.stderr and "bertsearch index" in r.stderr
    assert "Traceback" not in r.output
    run("index", corpus_file, "--index", tmp_path / "ix", "--model", "hashing")
    r = run("search", "  ", "--index", tmp_path / "ix")
    assert r.exit_code == 1 and "empty query" in r.stderr
    r = run("index", tmp_path / "nope.jsonl", "--index", tmp_path / "ix")
    assert r.exit_code == 1 and "no such file" in r.stderr
    r = run("search", "x", "--index", tmp_path / "ix", "--model", "hashing:16")
    assert r.exit_code == 1 and "fingerprint" in r.stderr


def test_text_that_is_not_utf8_gets_one_line_not_a_traceback(run, tmp_path, corpus_file):
    """A query, id or filter holding a byte that is not UTF-8 (a lone surrogate, as Python reads such an argument),
    a JSONL escape of half a character, and a file name that is not UTF-8 each raised UnicodeEncodeError."""
    run("index", corpus_file, "--index", tmp_path / "ix", "--model", "hashing")
    bad = "caf\udce9"
    for args in (("search", bad), ("search", bad, "--mode", "lexical"), ("ask", bad), ("delete", "--id", bad),
                 ("search", "x", "--where", f"id = '{bad}'")):
        r = run(*args, "--index", tmp_path / "ix")
        assert r.exit_code == 1 and "not UTF-8 text" in r.stderr, (args, r.output)
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"id": "s", "text": "lone \\udc80 surrogate"}\n{"id": "t", "text": "fine"}\n')
    r = run("add", lone, "--index", tmp_path / "ix", "--on-error", "skip")
    assert r.exit_code == 0 and "lone.jsonl:1: a \\u escape makes half of a character" in r.stderr, r.output
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "ok.txt").write_text("an elk")
    with open(bytes(folder) + b"/caf\xe9 moose.txt", "wb") as f:
        f.write(b"a moose")
    r = run("index", folder, "--index", tmp_path / "ixf", "--model", "hashing", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(run("search", "moose", "--index", tmp_path / "ixf", "--mode", "lexical", "--json").stdout)
    assert [h["doc_id"] for h in hits["hits"]] == ["caf\\xe9 moose.txt"]


def test_control_characters_of_documents_never_reach_the_terminal(run, tmp_path):
    """A document holding escape sequences sent them to the terminal, which ran them."""
    corpus = tmp_path / "ctl.jsonl"
    corpus.write_text(json.dumps({"id": "c\x1b[2J", "title": "t\x1b[1mX", "text": "bell\x07 and \x1b[31mred\x1b[0m sea "
                                  "lions \x9b31m"}) + "\n")
    run("index", corpus, "--index", tmp_path / "ix", "--model", "hashing")
    for args in (("search", "red sea lions"), ("search", "red sea lions", "--mode", "lexical"), ("delete", "--id", "x")):
        r = run(*args, "--index", tmp_path / "ix")
        assert not any(c in r.output for c in "\x1b\x07\x9b"), (args, r.output)
    assert "\u241b[31mred" in run("search", "red sea lions", "--index", tmp_path / "ix").stdout  # shown as "␛"


def test_malformed_record_stops_or_is_skipped_and_nothing_indexed_is_lost(run, tmp_path, corpus_file):
    ix = tmp_path / "ix"
    run("index", corpus_file, "--index", ix, "--model", "hashing")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "new1", "text": "fresh text"}\n{"id": broken\n{"id": "new2", "text": "more"}\n')
    r = run("index", bad, "--index", ix)
    assert r.exit_code == 1 and "bad.jsonl:2" in r.stderr and "--on-error skip" in r.stderr
    assert json.loads(run("info", "--index", ix, "--json").stdout)["documents"] >= 4  # nothing lost
    r = run("index", bad, "--index", ix, "--on-error", "skip", "--json")
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["skipped"] == 1 and report["index"]["documents"] == 6
    assert "bad.jsonl:2" in report["errors"][0]


def test_csv_with_column_options(run, tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("key,body,name,lang\n1,The Eiffel Tower is in Paris.,Eiffel Tower,en\n2,Der Rhein ist ein Fluss.,Rhein,de\n")
    r = run("index", p, "--index", tmp_path / "ix", "--model", "hashing", "--id-field", "key", "--text-field", "body",
            "--title-field", "name", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(run("search", "Paris", "--index", tmp_path / "ix", "--json").stdout)["hits"]
    assert hits[0]["doc_id"] == "1" and hits[0]["title"] == "Eiffel Tower" and hits[0]["metadata"] == {"lang": "en"}


def test_every_command_has_help_with_an_example(run):
    for args in (["index"], ["search"], ["info"], ["eval", "beir"]):
        r = run(*args, "--help")
        assert r.exit_code == 0 and "bertsearch " in r.stdout, args


def test_eval_beir_on_a_small_dataset(run, tmp_path):
    d = tmp_path / "mini"
    (d / "qrels").mkdir(parents=True)
    docs = {"d1": "cats purr and sleep", "d2": "dogs bark loudly", "d3": "fish swim in water"}
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "barking dogs"}\n{"_id": "q2", "text": "swim water"}\n')
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    run_file = tmp_path / "run.trec"
    r = run("eval", "beir", d, "--index", tmp_path / "ix", "--model", "hashing", "--mode", "lexical", "--json",
            "--run-file", run_file)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["ndcg@10"] == pytest.approx(1.0) and m["mrr@10"] == pytest.approx(1.0) and m["recall@100"] == 1.0
    assert run_file.read_text().splitlines()[0].split()[:4] == ["q1", "Q0", "d2", "1"]
    r = run("eval", "beir", d, "--split", "dev", "--index", tmp_path / "ix")
    assert r.exit_code == 1 and "test" in r.stderr
    # --compare: paired against another run of the same queries, here one that ranks q1 wrongly and omits q2
    worse = tmp_path / "worse.trec"
    worse.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\n")
    r = run("eval", "beir", d, "--index", tmp_path / "ix", "--mode", "lexical", "--json", "--compare", worse)
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["compared"]
    assert c["other_ndcg@10"] == pytest.approx((1 / math.log2(3)) / 2) and c["ndcg@10"] == pytest.approx(1.0)
    assert c["difference"] == pytest.approx(1 - c["other_ndcg@10"]) and (c["better"], c["worse"], c["missing"]) == (2, 0, 1)
    diffs = [1 - 1 / math.log2(3), 1.0]
    assert c["standard_error"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(2))
    r = run("eval", "beir", d, "--index", tmp_path / "ix", "--mode", "lexical", "--compare", worse)
    assert "better on 2, worse on 0 of 2 queries; 1 queries missing from it count as 0" in " ".join(r.stdout.split())
    # a malformed run file, or one of other queries, is refused before anything is indexed or searched
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 2.0 x\nq2 d3 oops\n")
    r = run("eval", "beir", d, "--index", tmp_path / "ix2", "--compare", tmp_path / "bad.trec")
    assert r.exit_code != 0 and "line 2" in r.stderr and "TREC run" in r.stderr and not (tmp_path / "ix2").exists()
    (tmp_path / "other.trec").write_text("x9 Q0 d1 1 2.0 x\n")
    r = run("eval", "beir", d, "--index", tmp_path / "ix", "--compare", tmp_path / "other.trec")
    assert r.exit_code != 0 and "none of the 2 queries" in r.stderr


def test_folder_reindex_updates_changed_files_and_prunes_vanished_ones(run, tmp_path, monkeypatch):
    from bertsearch.readers import folder

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Alpha\nThe first note about volcanoes.")
    (notes / "b.txt").write_text("The second note about pianos.")
    (notes / "c.html").write_text("<html><head><title>Gamma</title></head><body><p>Third note, on rivers.</p></body></html>")
    (notes / "bin.txt").write_bytes(b"\x00\x01binary")
    (notes / "big.txt").write_text("x " * 600)
    monkeypatch.setattr(folder, "MAX_FILE_BYTES", 1000)
    ix = tmp_path / "ix"
    first = json.loads(run("index", notes, "--index", ix, "--model", "hashing", "--on-error", "skip", "--json").stdout)
    assert (first["added"], first["skipped"]) == (3, 0)
    assert first["skipped_files"] == {"binary": 1, "too large": 1}
    (notes / "bin.txt").unlink()
    (notes / "big.txt").unlink()
    (notes / "b.txt").write_text("The second note, now about harps.")
    (notes / "c.html").unlink()
    second = json.loads(run("index", notes, "--index", ix, "--prune", "--json").stdout)
    assert (second["unchanged"], second["replaced"], second["deleted"]) == (1, 1, 1)
    hits = json.loads(run("search", "harps", "--index", ix, "--json").stdout)["hits"]
    assert hits[0]["doc_id"] == "b.txt" and {h["doc_id"] for h in hits} == {"a.md", "b.txt"}
    r = run("index", notes, "--index", ix, "--prune", "--on-error", "skip")
    assert r.exit_code == 1 and "--prune" in r.stderr


def test_progress_without_a_terminal_is_a_line_now_and_then(monkeypatch, capsys):
    """A run with its stderr in a log file still says how far it got: a plain line per interval, and a
    closing line for a step that took long enough; a quick step prints nothing."""
    from bertsearch.cli import render

    clock = iter(float(t) for t in range(0, 1000, 10))  # each call is 10 s later
    monkeypatch.setattr(render.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(render, "PROGRESS_LINE_SECONDS", 25.0)
    with render.progress("training", 8, "steps") as advance:
        for _ in range(8):
            advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("training: 3/8 steps (38%)") and "s each" in lines[0] and "eta" in lines[0]
    assert lines[-1].startswith("training: 8/8 steps (100%)") and lines[-1].endswith("done")
    assert 3 <= len(lines) <= 5

    monkeypatch.setattr(render, "PROGRESS_LINE_SECONDS", 1e9)
    with render.progress("mining", 100, "queries") as advance:
        advance(100)
    assert capsys.readouterr().err == ""


def test_a_long_title_is_cut_in_the_result_lines_and_kept_whole_in_json(run, tmp_path):
    title = "Glaciers " + "and ice sheets " * 40
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "g1", "title": title, "text": "Glaciers are rivers of ice."}) + "\n")
    ix = tmp_path / "ix"
    assert run("index", corpus, "--index", ix, "--model", "hashing").exit_code == 0
    shown = " ".join(run("search", "glaciers", "--index", ix).stdout.split())  # (lines wrap at the console's width)
    assert shown.startswith("1. Glaciers and ice sheets") and "… [g1]" in shown and title.strip() not in shown
    assert json.loads(run("search", "glaciers", "--index", ix, "--json").stdout)["hits"][0]["title"] == title


@pytest.mark.model
def test_a_search_that_matches_nothing_exits_cleanly(tmp_path, corpus_file):
    """A dense or hybrid search whose filter passed nothing printed "no results", then the process aborted (exit 134:
    the encoder's worker was still in its model call at exit)."""
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bertsearch", *map(str, args)], capture_output=True, text=True,
                              timeout=300, check=False)

    assert cli("index", corpus_file, "--index", tmp_path / "ix").returncode == 0
    for mode in ("hybrid", "dense"):
        r = cli("search", "who", "--index", tmp_path / "ix", "--mode", mode, "--where", "topic = 'nothing'")
        assert (r.returncode, r.stdout.strip()) == (0, "no results for 'who'"), r.stderr
        assert "FATAL" not in r.stderr and "terminate called" not in r.stderr


def test_a_bad_record_says_what_was_kept_and_an_empty_corpus_says_so(run, tmp_path, caplog):
    lines = [json.dumps({"id": f"d{i}", "text": f"document number {i}"}) for i in range(30)]
    lines[26] = '{"id": "bad", "text": '
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    r = run("index", corpus, "--index", tmp_path / "ix", "--model", "hashing", "--batch-size", "10")
    assert r.exit_code == 1 and "bad.jsonl:27: invalid JSON: Expecting value at column 23" in r.stderr
    assert "the documents read before the bad record were indexed" in caplog.text and "holds 20 documents" in caplog.text
    caplog.clear()
    (tmp_path / "blank.jsonl").write_text("\n\n")
    r = run("add", tmp_path / "blank.jsonl", "--index", tmp_path / "ix")
    assert r.exit_code == 0 and "blank.jsonl held no documents, so nothing was indexed" in caplog.text


def test_ctrl_c_while_indexing_exits_130_and_keeps_what_was_committed(tmp_path):
    """Ctrl-C while indexing ended in an abort (exit 134) when a runtime thread was still in a model call at the
    interpreter's shutdown; the command now leaves at once with 130, its committed batches kept."""
    import signal
    import subprocess
    import sys
    import time

    import bertsearch

    corpus = tmp_path / "big.jsonl"
    with open(corpus, "w") as f:
        f.writelines(json.dumps({"id": f"d{i}", "text": f"document {i} about rivers and lakes"}) + "\n"
                     for i in range(300_000))
    proc = subprocess.Popen([sys.executable, "-m", "bertsearch", "index", str(corpus), "--index", str(tmp_path / "ix"),
                             "--model", "hashing", "--batch-size", "50"], stderr=subprocess.PIPE, text=True)
    deadline, seen = time.time() + 120, 0
    while time.time() < deadline and not seen and proc.poll() is None:
        time.sleep(0.3)
        try:
            with bertsearch.open_index(tmp_path / "ix") as ix:
                seen = ix.store.counts()["documents"]
        except bertsearch.BertsearchError:
            pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert seen and proc.returncode == 130, (seen, proc.returncode, err[-2000:])
    assert "interrupted; what was done is kept: run the same command again" in err
    with bertsearch.open_index(tmp_path / "ix") as ix:
        assert ix.check()["ok"] and seen <= ix.store.counts()["documents"] < 300_000


def test_ctrl_c_in_a_command_that_goes_on_says_to_run_it_again(run, tmp_path, monkeypatch):
    """The hint was printed for `adapt` but not for `train encoder|reranker|reader` (the train group caught the
    interrupt first), nor is it for a command with nothing to go on from."""
    from bertsearch.training import reranker

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reranker, "train_reranker", interrupted)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "positive": "p", "negative": "n"}\n')
    r = run("train", "reranker", "--train", pairs, "--out", tmp_path / "m")
    assert r.exit_code == 130 and "interrupted; what was done is kept: run the same command again" in r.stderr
