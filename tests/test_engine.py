import json
import logging

import numpy as np
import pytest

import bertsearch
from bertsearch.errors import BadArgument, BadQuery, IndexNotFound, ModelMismatch


def test_search_modes_return_typed_hits_with_provenance(index):
    for mode in ("hybrid", "dense", "lexical"):
        hits = index.search("northern lights aurora", k=2, mode=mode)
        assert hits[0].doc_id == "aurora"
        h = hits[0]
        assert mode in h.scores and h.ranks[mode] == 1 and h.score == h.scores[mode]
        doc = index.get("aurora")
        assert doc["text"][h.start : h.end] == h.text
        assert h.chunk_id is not None
    hybrid = index.search("penicillin fleming", k=4)
    assert hybrid[0].doc_id == "penicillin"
    assert set(hybrid[0].scores) == {"dense", "lexical", "hybrid"}
    assert hybrid[0].metadata == {"topic": "medicine", "year": 1928}
    assert [h.rank for h in hybrid] == list(range(1, len(hybrid) + 1))


def test_batch_search_equals_single(index):
    qs = ["volcano lava", "piano keys", "bacteria mould"]
    batch = index.batch_search(qs, k=3)
    for q, hits in zip(qs, batch):
        assert [h.doc_id for h in hits] == [h.doc_id for h in index.search(q, k=3)]


def test_k_caps_results_and_lexical_needs_a_match(index):
    assert len(index.search("the", k=2, mode="dense")) == 2
    assert index.search("zzzunknownword", mode="lexical") == []
    assert len(index.search("volcano", k=50, mode="dense")) == 4


def test_bad_queries_and_arguments(index):
    with pytest.raises(BadQuery):
        index.search("   ")
    with pytest.raises(BadArgument):
        index.search("x", k=0)
    with pytest.raises(BadArgument):
        index.search("x", mode="fuzzy")


def test_reindexing_unchanged_documents_does_no_encoder_work(tmp_path, docs, monkeypatch):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    first = ix.add(docs)
    assert first.added == 4 and first.chunks >= 4
    calls = []
    real = ix.encoder.encode
    monkeypatch.setattr(ix.encoder, "encode", lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw))
    again = ix.add(docs)
    assert again.unchanged == 4 and again.chunks == 0 and calls == []
    docs[0]["text"] += " Changed."
    docs[1]["year"] = 1929  # metadata only: no re-embedding
    third = ix.add(docs)
    assert third.replaced == 1 and third.metadata_updated == 1 and third.unchanged == 2
    assert calls == [third.chunks]
    assert ix.get("penicillin")["metadata"]["year"] == 1929
    assert ix.store.counts()["documents"] == 4


def test_empty_and_duplicate_documents_are_counted(tmp_path):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    r = ix.add([{"id": "a", "text": "first"}, {"id": "a", "text": "second"}, {"id": "b", "text": "  "}])
    assert (r.read, r.added, r.duplicates, r.empty) == (3, 1, 1, 1)
    assert ix.get("a")["text"] == "second"
    with pytest.raises(BadArgument):
        ix.add([{"text": "no id"}])


@pytest.mark.parametrize("batch_size", [1, 2, 3, 128])
def test_duplicate_counts_do_not_depend_on_the_batch_size(tmp_path, batch_size):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add([{"id": "old", "text": "was here before"}])
    docs = [{"id": "a", "text": "first"}, {"id": "old", "text": "changed"}, {"id": "a", "text": "second"},
            {"id": "old", "text": "changed", "x": 1}, {"id": "c", "text": "cherry"}]
    r = ix.add(docs, batch_size=batch_size)
    assert (r.read, r.added, r.replaced, r.unchanged, r.metadata_updated, r.duplicates) == (5, 2, 1, 0, 0, 2)
    assert ix.get("a")["text"] == "second" and ix.get("old")["metadata"] == {"x": 1}


def test_ids_of_any_accepted_kind_find_what_add_stored_and_wrong_kinds_say_so(tmp_path):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add([{"id": 5, "text": "five"}, {"id": 10**30, "text": "big"}, {"id": "a", "text": "alpha"}])
    assert ix.delete([5, 10**30], dry_run=True) == 2 and ix.to_delete([10**30]) == [str(10**30)]  # (0, OverflowError)
    assert ix.get(5)["id"] == "5" and ix.get(10**30)["text"] == "big"
    for call, words in ((lambda: ix.search("x", where=5), "where is a filter expression"),
                        (lambda: ix.delete(None), "as a list"), (lambda: ix.delete(5), "as a list"),
                        (lambda: ix.get(["a"]), "not list"), (lambda: ix.get("a\udc80"), "not UTF-8"),
                        (lambda: ix.batch_search(["x"], depth=-5), "depth"), (lambda: ix.batch_search(["x"], depth=0), "depth"),
                        (lambda: ix.add([{"id": "m", "text": "x", "note": "\udc80"}]), "lone surrogate"),
                        (lambda: ix.add([{"id": "m", "text": "half \ud800"}]), "lone surrogate")):
        with pytest.raises(BadArgument, match=words):
            call()
    assert ix.delete([5, 10**30]) == 2 and ix.store.counts()["documents"] == 1


def test_a_new_index_among_other_files_is_warned_about(tmp_path, caplog):
    (tmp_path / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING), bertsearch.open_index(tmp_path, create=True, model="hashing") as ix:
        ix.add([{"id": "a", "text": "alpha"}])
    assert "already holds files that are not an index's (notes.txt)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING), bertsearch.open_index(tmp_path / "own", create=True, model="hashing"):
        pass
    assert "already holds" not in caplog.text


def test_long_documents_are_chunked_not_truncated(tmp_path):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    words = [f"w{i}" for i in range(500)]
    text = ". ".join(" ".join(words[i : i + 10]) for i in range(0, 500, 10)) + "."
    r = ix.add([{"id": "long", "title": "Long", "text": text}])
    assert r.truncated == 0 and r.chunks > 8
    hits = ix.search("w437", k=1, mode="dense")
    assert hits[0].doc_id == "long" and "w437" in hits[0].text


def test_open_missing_index_and_model_mismatch(tmp_path, index):
    with pytest.raises(IndexNotFound, match="bertsearch index"):
        bertsearch.open_index(tmp_path / "nope")
    path = index.path
    index.close()
    with pytest.raises(ModelMismatch, match="hashing:64"):
        bertsearch.open_index(path, model="hashing:32")
    ix = bertsearch.open_index(path)  # its own model by default
    assert ix.config.model == "hashing:64"
    assert json.loads((path / "config.json").read_text())["dim"] == 64


def test_vector_file_is_rebuilt_from_the_store_when_missing_or_stale(tmp_path, docs, monkeypatch):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add(docs)
    before = [h.doc_id for h in ix.search("lava crust", mode="dense")]
    ix.close()
    (tmp_path / "ix" / "vectors.faiss").unlink()
    ix = bertsearch.open_index(tmp_path / "ix")
    monkeypatch.setattr(ix.encoder, "encode", _only_queries(ix.encoder.encode))
    assert [h.doc_id for h in ix.search("lava crust", mode="dense")] == before
    assert (tmp_path / "ix" / "vectors.faiss").exists()
    # a sidecar of another store's history (a restored copy, a re-index) is not trusted: the file is rebuilt
    meta = tmp_path / "ix" / "vectors.faiss.json"
    data = json.loads(meta.read_text())
    data["epoch"] = "another"
    meta.write_text(json.dumps(data))
    assert ix.info()["vectors_saved"] is False
    ix2 = bertsearch.open_index(tmp_path / "ix")
    assert [h.doc_id for h in ix2.search("lava crust", mode="dense")] == before
    assert ix2.info()["vectors_saved"] is True


def _only_queries(encode):
    def wrapped(texts, **kw):
        assert len(texts) == 1, "documents must not be re-encoded to rebuild the vector index"
        return encode(texts, **kw)

    return wrapped


def test_delete(index):
    assert index.delete(["aurora", "missing"]) == 1
    assert index.get("aurora") is None
    assert all(h.doc_id != "aurora" for h in index.search("northern lights", k=10))


def test_float16_vectors(tmp_path, docs):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing", vector_dtype="float16")
    ix.add(docs)
    assert ix.search("piano", mode="dense")[0].doc_id == "piano"


def test_info(index):
    info = index.info()
    assert info["documents"] == 4 and info["chunks"] >= 4 and info["ann"] == "flat"
    assert info["size_bytes"] > 0 and info["last_updated"]


@pytest.mark.parametrize("ann", ["hnsw", "ivf", "ivfpq", "IVF4,SQ8"])
def test_approximate_indexes_agree_with_exact_search(tmp_path, ann):
    """Approximate indexes against the exact flat index on the same stored vectors."""
    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(300)]
    docs = [{"id": str(i), "text": " ".join(rng.choice(vocab, 12))} for i in range(2000)]
    exact = bertsearch.open_index(tmp_path / "flat", create=True, model="hashing")
    exact.add(docs)
    approx = bertsearch.open_index(tmp_path / ann, create=True, model="hashing", ann=ann)
    approx.add(docs)
    queries = [" ".join(rng.choice(vocab, 3)) for _ in range(50)]
    want = exact.batch_search(queries, k=10, mode="dense")
    got = approx.batch_search(queries, k=10, mode="dense")
    recall = np.mean([len({h.doc_id for h in g} & {h.doc_id for h in w}) / 10 for g, w in zip(got, want)])
    assert recall >= {"hnsw": 0.9, "ivf": 0.8}.get(ann, 0.6), recall
    assert approx.info()["ann"] == ann


def test_an_index_cut_off_before_its_config_is_not_found_but_can_be_created(tmp_path, docs):
    from bertsearch.store import Store

    (tmp_path / "ix").mkdir()
    Store(tmp_path / "ix" / "store.db").close()  # killed after the schema, before the config
    with pytest.raises(IndexNotFound):
        bertsearch.open_index(tmp_path / "ix")
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    assert ix.add(docs).added == 4


def test_bm25_leaves_out_words_most_documents_hold_and_ranks_exactly_as_with_them(tmp_path):
    import random

    from bertsearch.store.sqlite import Store

    rng = random.Random(0)
    rare = [f"rare{i}" for i in range(40)]
    docs = []
    for i in range(300):  # "the" and "of" in every document, "with" in 60%, "aurora" in 40%, rare words sprinkled
        words = ["the", "of"] * rng.randint(1, 4) + (["with"] if i % 5 < 3 else []) + (["aurora"] if i % 5 >= 3 else [])
        words += rng.sample(rare, rng.randint(1, 6)) + ["filler"] * rng.randint(0, 30)
        rng.shuffle(words)
        docs.append({"id": f"d{i:03}", "title": "", "text": " ".join(words)})
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add(docs)
    store = Store(tmp_path / "ix" / "store.db")
    full = Store._informative
    try:
        for q in ("the aurora of rare3", "rare1 rare1 with the rare7 rare7 rare7", "The Aurora OF rare12", "of the with",
                  "the rare39 of"):
            pruned = store.bm25(q, 50)
            Store._informative = lambda self, q: None  # the whole query, as before
            whole = store.bm25(q, 50)
            Store._informative = full
            # the same documents with the same scores, in the same order but within ties (the words left out add
            # 1e-6 a time: documents that tie without them are ordered by id instead), the last tie cut by k apart
            assert len(pruned) == len(whole) and all(abs(a - b) < 1e-4 for (_, a, _), (_, b, _) in zip(pruned, whole)), q
            above = whole[-1][1] + 1e-3
            assert {d for _, s, d in pruned if s > above} == {d for _, s, d in whole if s > above}, q
            scores = {d: s for _, s, d in whole}
            assert all(abs(scores[d] - s) < 1e-4 for _, s, d in pruned if s > above), q
        assert "the" not in store._informative("the aurora of rare3") and "rare3" in store._informative("the aurora of rare3")
        assert store._informative("rare1 rare1 with").count("rare1") == 2  # a word said twice weighs twice
        assert store._informative("of the with") is None  # nothing left: the whole query runs
        # fewer than k documents hold the words left: the whole query runs, so k documents still come back
        assert len(store.bm25("the rare39", 200)) == 200
    finally:
        Store._informative = full
        store.close()


def test_the_counts_that_decide_the_common_words_are_kept_until_the_next_write(tmp_path):
    docs = [{"id": f"d{i}", "title": "", "text": f"aurora note{i}" + (" borealis" if i == 0 else "")} for i in range(4)]
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add(docs)
        store = ix.store
        assert "borealis" in store._informative("aurora borealis")  # 1 of 4 documents: kept; "aurora", in all, not
        asked = []
        store.conn.set_trace_callback(asked.append)
        store._informative("aurora borealis")
        assert not any("MATCH" in sql for sql in asked)  # counted once: the second query counts nothing
        store.conn.set_trace_callback(None)
        ix.add([{"id": f"e{i}", "title": "", "text": "borealis again"} for i in range(4)])  # now in 5 of 8
        assert store._informative("aurora borealis") is None  # both words in half the documents: the whole query


def test_a_small_faiss_search_runs_on_one_thread_and_leaves_the_setting_as_it_was(monkeypatch):
    import sys

    import faiss

    from bertsearch.vectors.faiss_index import few_threads

    before = faiss.omp_get_max_threads()
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with few_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with few_threads(64):  # a batch keeps every thread
        assert faiss.omp_get_max_threads() == before
    monkeypatch.setitem(sys.modules, "torch", object())  # beside torch: left alone (see few_threads)
    with few_threads(1):
        assert faiss.omp_get_max_threads() == before


def test_an_index_grown_by_small_adds_keeps_most_of_its_vectors_in_faiss(tmp_path):
    docs = [{"id": f"d{i}", "title": f"Doc {i}", "text": f"words {i} " * (1 + i % 5)} for i in range(400)]
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        for i in range(0, len(docs), 10):  # forty adds of ten
            ix.add(docs[i : i + 10])
            ix.vectors.wait()
        st = ix.vectors.current()
        assert st.base.count >= 200 and st.pending <= st.base.count  # not 10 in FAISS and 390 beside it
        assert [h.doc_id for h in ix.search("words 7", k=3, mode="dense")][:1] == ["d7"]


def test_a_model_folder_given_relative_is_recorded_absolute(tiny_encoder, tmp_path, monkeypatch):
    """A relative --model was recorded as given, so the index only opened from the folder it was made in."""
    from bertsearch.errors import ModelNotFound

    monkeypatch.chdir(tiny_encoder.parent)
    with bertsearch.open_index(tmp_path / "ix", create=True, model=tiny_encoder.name) as ix:
        ix.add([{"id": "a", "text": "Bees make honey."}])
        assert ix.config.model == str(tiny_encoder.resolve())
    monkeypatch.chdir(tmp_path)
    with bertsearch.open_index(tmp_path / "ix") as ix:
        assert ix.search("honey", k=1, mode="dense")[0].doc_id == "a"
    # an index made before, which recorded the relative path, says what to do from elsewhere
    from dataclasses import replace

    from bertsearch.store import Store

    store = Store(tmp_path / "ix" / Store.FILE)
    store.set_config(replace(store.config, model=tiny_encoder.name))
    store.close()
    with bertsearch.open_index(tmp_path / "ix") as ix:  # what needs no encoder works; the rest says what to do
        assert ix.info()["documents"] == 1 and [h.doc_id for h in ix.search("honey", mode="lexical")] == ["a"]
        for mode in ("dense", "hybrid"):
            with pytest.raises(ModelNotFound, match=f"indexed with the model {tiny_encoder.name}, which is not found "
                                                    r"here .*pass --model"):
                ix.search("honey", mode=mode)
        assert ix.delete(["a"]) == 1
        with pytest.raises(ModelNotFound, match="pass --model"):
            ix.require_model()  # (`serve` calls it: a server without its model would never be ready)
    with bertsearch.open_index(tmp_path / "ix", model=str(tiny_encoder)) as ix:
        ix.add([{"id": "b", "text": "Bees make honey."}])
        assert ix.search("honey", k=1, mode="dense")[0].doc_id == "b"


def test_metadata_json_cannot_hold_is_refused_and_dates_become_text(tmp_path):
    """NaN reached SQLite's JSON functions, which called the sound store damaged; a date raised a bare TypeError."""
    import datetime
    import math

    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": "a", "text": "kept"}])
        for bad, words in ((math.nan, "NaN or infinity"), (math.inf, "NaN or infinity"), (object(), "of type object")):
            with pytest.raises(BadArgument, match=f"document n: its metadata holds .*{words}"):
                ix.add([{"id": "n", "text": "x", "score": bad}])
        with pytest.raises(BadArgument, match="the field 'topic' is given twice"):  # one of them was dropped unsaid
            ix.add([{"id": "t", "text": "x", "topic": "Top", "metadata": {"topic": "Inner", "year": 1}}])
        with pytest.raises(BadArgument, match="the field 'year' is given twice"):  # 1 and True: equal in Python only
            ix.add([{"id": "t", "text": "x", "year": 1, "metadata": {"year": True}}])
        ix.add([{"id": "t", "text": "x", "topic": "Top", "metadata": {"topic": "Top", "year": 1}}])  # the same: fine
        assert ix.get("t")["metadata"] == {"topic": "Top", "year": 1}
        for depth in (300, 5000):  # (300 was stored, then failed every search that found it)
            nested = {"a": 1}
            for _ in range(depth):
                nested = [nested]
            with pytest.raises(BadArgument, match="document deep: its metadata nests .* more than 32 levels deep"):
                ix.add([{"id": "deep", "text": "x", "m": nested}])
        ix.add([{"id": "deep", "text": "x", "m": {"a": [[1, 2], {"b": [3]}]}}])  # a few levels: fine
        assert ix.get("deep")["metadata"] == {"m": {"a": [[1, 2], {"b": [3]}]}}
        ix.delete(["deep"])
        ix.add([{"id": "d", "text": "dated", "when": datetime.date(2024, 5, 1)}])
        assert ix.get("d")["metadata"] == {"when": "2024-05-01"}
        assert [h.doc_id for h in ix.search("dated", where="when >= '2024-01-01'")] == ["d"]
        assert ix.get("a")["text"] == "kept" and ix.get("n") is None
    with pytest.raises(BadArgument, match="k must be a whole number"):
        bertsearch.open_index(tmp_path / "ix").search("x", k="3")


def test_a_bad_ann_setting_fails_before_anything_is_written(tmp_path):
    """It failed at the first sync, after the documents were committed, and every later command failed the same way."""
    with pytest.raises(BadArgument, match="bad ANN setting 'Bogus'.*use flat, hnsw"):
        bertsearch.open_index(tmp_path / "ix", create=True, model="hashing", ann="Bogus")
    assert not (tmp_path / "ix").exists()
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": "a", "text": "kept"}])
    with pytest.raises(BadArgument, match="bad ANN setting"):
        bertsearch.open_index(tmp_path / "ix", ann="Bogus")
    with bertsearch.open_index(tmp_path / "ix") as ix:  # the setting it had
        assert ix.config.ann == "flat" and [h.doc_id for h in ix.search("kept")] == ["a"]


def test_a_model_folder_without_weights_and_a_precision_onnx_lacks_are_refused(tmp_path):
    from bertsearch.errors import ModelNotFound

    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelNotFound, match="has a model's settings but no weights"):
        bertsearch.open_index(tmp_path / "ix", create=True, model=str(tmp_path / "bare"))
    with pytest.raises(BadArgument, match="the onnx backend runs in int8 only"):
        bertsearch.open_index(tmp_path / "ix", create=True, backend="onnx", precision="fp32")
    assert not (tmp_path / "ix").exists()


def test_last_updated_counts_a_delete(tmp_path):
    import time

    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": "a", "text": "one"}, {"id": "b", "text": "two"}])
        added = ix.info()["last_updated"]
        time.sleep(1.1)  # (seconds are its resolution)
        ix.delete(["b"])
        assert ix.info()["last_updated"] > added


def test_a_count_too_large_is_refused_not_an_overflow(index, run):
    """-k 10^20 reached SQLite as an integer it cannot hold: OverflowError and a traceback (lexical and hybrid)."""
    for mode in ("lexical", "hybrid", "dense"):
        with pytest.raises(BadArgument, match="k must be a whole number from 1 to 100,000"):
            index.search("lava", k=10**20, mode=mode)
    with pytest.raises(BadArgument, match="passages must be a whole number from 1 to 100,000"):
        index.ask("lava", passages=10**20)
    with pytest.raises(BadArgument, match="rerank depth must be"):
        index.search("lava", rerank=True, rerank_depth=10**20)
    r = run("search", "lava", "--index", index.path, "-k", str(10**20))
    assert r.exit_code == 2 and "1<=x<=100000" in r.output
