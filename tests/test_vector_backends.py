"""What every vector backend must do, whatever it is (FAISS in the folder, milvus-lite): search equal to brute force
over the stored vectors, filters equal to brute force, deletes and upserts seen at once, writes from another process
seen, and a crash between the store's commit and the backend's sync repaired by replaying the change feed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bertsearch
from bertsearch.filters import parse

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["science", "medicine", "music", "history", "Science"]


def _milvus_available() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


def _backends() -> list:
    milvus = pytest.param("milvus", marks=pytest.mark.skipif(
        not _milvus_available() and not os.environ.get("CI"), reason="pymilvus and milvus-lite not installed"))
    return ["faiss", milvus]


@pytest.fixture(params=_backends())
def vectors(request) -> str:
    return request.param


def _doc(i: int, version: int = 1) -> dict:
    rng = np.random.default_rng(i * 7 + version)
    words = " ".join(rng.choice("amber basalt cedar delta ember fjord garnet harbor iris jasper kelp lagoon".split(), 20))
    doc = {"id": f"d{i}", "title": f"Doc {i}", "text": f"v{version} {words}.", "topic": TOPICS[i % len(TOPICS)],
           "year": 1900 + (i * 37) % 120, "version": version}
    if i % 6 == 0:
        doc["rating"] = float(i % 5)
    if i % 9 == 0:
        doc["year"] = str(doc["year"])  # a string: a numeric comparison never matches it
    return doc


def _brute(ix, query: str, k: int, where: str | None = None) -> list[tuple[str, float]]:
    """The top k documents by their best chunk, from every stored vector (and the filter evaluated in Python)."""
    flt = parse(where) if where else None
    everything = ix.store.all_chunks(ix.config.dim, ix.config.vector_dtype, docs=True)
    xq = ix.encoder.encode([query])[0]
    best: dict[str, float] = {}
    for cid, doc_id, meta, x in zip(everything.live.ids, everything.live.doc_ids, everything.live.metadata,
                                    everything.live.vectors):
        if flt is not None and not flt.matches(meta, id=doc_id, title=ix.get(doc_id)["title"]):
            continue
        s = float(xq @ x)
        best[doc_id] = max(best.get(doc_id, -np.inf), s)
    return sorted(best.items(), key=lambda x: (-x[1], x[0]))[:k]


def _same(ix, hits, expected) -> None:
    got = [(h.doc_id, h.score) for h in hits]
    assert len(got) == len(expected), (got, expected)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
    # ids agree wherever the scores are not tied
    for (gi, gs), (ei, es) in zip(got, expected):
        if gi != ei:
            assert abs(gs - es) < 1e-4 and any(abs(es - s) < 1e-4 for i, s in expected if i == gi), (got, expected)


def _open(path: Path, vectors: str, **kw):
    return bertsearch.open_index(path, create=True, model="hashing", vectors=vectors, **kw)


def test_search_equals_brute_force_through_adds_replaces_and_deletes(tmp_path, vectors):
    ix = _open(tmp_path / "ix", vectors)
    try:
        ix.add([_doc(i) for i in range(120)])
        queries = ["amber basalt harbor", "kelp lagoon", "v2 iris jasper fjord"]
        for q in queries:
            _same(ix, ix.search(q, k=10, mode="dense"), _brute(ix, q, 10))
        ix.add([_doc(i, version=2) for i in range(0, 120, 3)])  # upserts: the old chunks must be gone
        ix.delete([f"d{i}" for i in range(1, 120, 5)])
        for q in queries:
            hits = ix.search(q, k=10, mode="dense")
            _same(ix, hits, _brute(ix, q, 10))
            assert not {h.doc_id for h in hits} & {f"d{i}" for i in range(1, 120, 5)}
            for h in hits:
                assert h.text.startswith(f"v{h.metadata['version']} ")  # never the replaced version's chunk
        assert ix.check()["ok"]
    finally:
        ix.close()


FILTERS = [
    "topic = 'science'",
    "topic in ('music', 'history')",
    "year >= 1950",
    "year between 1910 and 1960 and not topic = 'music'",
    "rating is null",
    "rating > 1.5",
    "year != 1937",
    "topic = 'Science' or year < 1920",
    "id in ('d3', 'd10', 'd77')",
    "version = 2",
]


@pytest.mark.parametrize("where", FILTERS)
def test_filters_equal_brute_force_and_give_k_whenever_k_match(tmp_path_factory, vectors, where):
    ix = _filtered_index(tmp_path_factory, vectors)
    ix.exact_subset = 0  # the backend's own filtered search, not the engine's exact path for small subsets
    for q in ("amber basalt harbor", "kelp lagoon iris"):
        expected = _brute(ix, q, 10, where)
        hits = ix.search(q, k=10, mode="dense", where=where)
        _same(ix, hits, expected)


_INDEXES: dict[str, object] = {}


def _filtered_index(tmp_path_factory, vectors: str):
    if vectors not in _INDEXES:
        ix = _open(tmp_path_factory.mktemp("filtered") / "ix", vectors)
        ix.add([_doc(i) for i in range(150)])
        ix.add([_doc(i, version=2) for i in range(0, 150, 4)])
        ix.delete(where="year < 1905")
        ix.add([{**_doc(i), "topic": "history"} for i in range(1, 150, 10)])  # metadata alone changes
        _INDEXES[vectors] = ix
    return _INDEXES[vectors]


@pytest.fixture(scope="module", autouse=True)
def _close_indexes():
    yield
    for ix in _INDEXES.values():
        ix.close()
    _INDEXES.clear()


def test_a_search_sees_its_snapshot_while_another_thread_rewrites_documents(tmp_path, vectors):
    """The vectors another thread synced past a search's snapshot of the store do not drop documents out of it
    (a document being rewritten went missing from most dense searches)."""
    ix = _open(tmp_path / "ix", vectors)
    ix.add([_doc(i) for i in range(30)])
    query = "harbor lagoon cedar ember"
    with ix.store.snapshot():
        expected = _brute(ix, query, 40)  # (the snapshot starts at this first read)
        writer = threading.Thread(target=lambda: (ix.add([_doc(3, 2), _doc(4, 2), _doc(40)]), ix.delete(["d5"]),
                                                  ix.vectors.sync()))
        writer.start()
        writer.join()
        assert ix.vectors.position() > ix.store.feed_head()  # the shared state is past this snapshot
        _same(ix, ix.search(query, k=40, mode="dense"), expected)
        assert {h.doc_id for h in ix.search(query, k=40, mode="dense")} == {f"d{i}" for i in range(30)}
    _same(ix, ix.search(query, k=40, mode="dense"), _brute(ix, query, 40))  # and after it, the new state
    ix.close()


def test_a_search_ahead_of_the_state_another_thread_is_syncing_sees_its_snapshot(tmp_path):
    ix = _open(tmp_path / "ix", "faiss")
    ix.add([_doc(i) for i in range(30)])
    query = "harbor lagoon cedar ember"
    with bertsearch.open_index(tmp_path / "ix") as other:  # another Index: its writes reach ix's vectors at a sync
        other.add([_doc(3, 2), _doc(4, 2), _doc(40)])
        other.delete(["d6"])
    held, done = threading.Event(), threading.Event()

    def syncing() -> None:  # holds the sync lock as a thread syncing would: searches use the state before
        with ix.vectors._lock:
            held.set()
            done.wait(10)

    t = threading.Thread(target=syncing)
    t.start()
    held.wait(10)
    try:
        assert ix.vectors.position() < ix.store.feed_head()
        _same(ix, ix.search(query, k=40, mode="dense"), _brute(ix, query, 40))
    finally:
        done.set()
        t.join()
    ix.close()


def test_writes_of_another_process_are_seen(tmp_path, vectors):
    if vectors == "milvus":
        pytest.skip("one process a milvus-lite folder; several processes share a Milvus server (tests/test_milvus.py)")
    a = _open(tmp_path / "ix", vectors)
    a.add([_doc(i) for i in range(30)])
    b = bertsearch.open_index(tmp_path / "ix")
    try:
        assert len(b.search("amber", k=50, mode="dense")) == 30
        a.delete(["d1", "d2"])
        a.add([_doc(100), _doc(3, version=2)])
        hits = b.search("amber basalt", k=50, mode="dense")
        assert {h.doc_id for h in hits} == {f"d{i}" for i in range(30)} - {"d1", "d2"} | {"d100"}
        _same(b, b.search("kelp lagoon", k=10, mode="dense"), _brute(b, "kelp lagoon", 10))
    finally:
        a.close()
        b.close()


CRASH = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import bertsearch
    from test_vector_backends import _doc
    ix = bertsearch.open_index({path!r}, vectors={vectors!r})
    backend = type(ix.vectors)
    stall = backend.{stall}
    def stalled(self, *a, **kw):
        print("syncing", flush=True)
        time.sleep(60)  # killed here: the store has committed, the backend has not caught up
    setattr(backend, {stall!r}, stalled)
    ix.add([_doc(i, version=3) for i in range(200, 260)])
""")


def test_a_kill_between_the_store_commit_and_the_sync_is_repaired_on_reopen(tmp_path, vectors):
    path = tmp_path / "ix"
    ix = _open(path, vectors)
    ix.add([_doc(i) for i in range(60)])
    ix.close()
    code = CRASH.format(tests=str(ROOT / "tests"), path=str(path), vectors=vectors, stall="sync")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "syncing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    ix = bertsearch.open_index(path)
    try:
        report = ix.check()
        assert report["ok"], report
        assert report["documents"] == 120
        for i in (0, 59, 200, 259):  # every committed document is found by its own text
            d = _doc(i, version=3 if i >= 200 else 1)
            assert ix.search(d["text"], k=1, mode="dense")[0].doc_id == d["id"]
        _same(ix, ix.search("amber cedar", k=10, mode="dense"), _brute(ix, "amber cedar", 10))
    finally:
        ix.close()


def test_backend_named_wrongly_is_refused(tmp_path):
    from bertsearch.errors import BadArgument

    with pytest.raises(BadArgument, match="faiss.*milvus.*http://host:19530"):
        bertsearch.open_index(tmp_path / "ix", create=True, model="hashing", vectors="elastic")
    assert not (tmp_path / "ix").exists()
    bertsearch.open_index(tmp_path / "ix", create=True, model="hashing").close()
    with pytest.raises(BadArgument, match="unknown backend 'bogus'; use one of auto, torch"):  # (it said the vectors
        bertsearch.open_index(tmp_path / "ix", backend="bogus")  # of bogus "differ a little")


# -- FAISS: writes that cost what they add --------------------------------------------------------------------------


def test_faiss_a_small_write_never_rebuilds_or_rewrites_the_file(tmp_path, monkeypatch):
    from bertsearch.vectors.faiss_backend import FaissBackend

    ix = _open(tmp_path / "ix", "faiss")
    try:
        ix.add([_doc(i) for i in range(300)])
        f = tmp_path / "ix" / "vectors.faiss"
        stamp = f.stat().st_mtime_ns
        builds = []
        monkeypatch.setattr(FaissBackend, "_build", lambda self, gpu: builds.append(1) or pytest.fail("rebuilt"))
        ix.add([_doc(i, version=2) for i in range(5)] + [_doc(500)])
        ix.delete(["d7"])
        assert f.stat().st_mtime_ns == stamp and not builds
        st = ix.vectors.current()
        assert len(st.delta_ids) > 0 and len(st.dead) > 0
        _same(ix, ix.search("amber harbor", k=10, mode="dense"), _brute(ix, "amber harbor", 10))
        # another process opening it replays the feed onto the saved file: no rebuild either
        other = bertsearch.open_index(tmp_path / "ix")
        _same(other, other.search("amber harbor", k=10, mode="dense"), _brute(other, "amber harbor", 10))
        other.close()
    finally:
        ix.close()


@pytest.mark.parametrize("ann", ["flat", "hnsw", "ivf"])
def test_faiss_compaction_folds_the_changes_in_saves_and_prunes_the_feed(tmp_path, ann):
    ix = _open(tmp_path / "ix", "faiss", ann=ann)
    try:
        ix.vectors.merge_min = 40
        ix.vectors.merge_fraction = 0.0
        ix.add([_doc(i) for i in range(400)])
        head = ix.store.feed_head()
        assert ix.store.feed_length() == 0 and ix.vectors.saved_position() == head
        ix.add([_doc(i) for i in range(400, 420)])  # under the threshold: a delta
        assert ix.vectors.saved_position() == head and ix.store.feed_length() > 0
        ix.add([_doc(i, version=2) for i in range(0, 60, 2)])  # past it: folded into the base and saved
        st = ix.vectors.current()
        assert ix.vectors.saved_position() == ix.store.feed_head() and ix.store.feed_length() == 0
        assert len(st.delta_ids) == 0 and st.base.count - len(st.dead) == ix.store.counts()["chunks"]
        ix.delete([f"d{i}" for i in range(401, 420, 2)])  # the base's chunks, left out until the next compaction
        assert ix.vectors.current().pending == 10
        assert ix.check()["ok"]
        for q in ("amber harbor", "v2 kelp lagoon"):
            if ann == "flat":
                _same(ix, ix.search(q, k=10, mode="dense"), _brute(ix, q, 10))
            else:  # approximate: the top 10 found among the true top 10, allowing a miss
                got = {h.doc_id for h in ix.search(q, k=10, mode="dense")}
                assert len(got & {i for i, _ in _brute(ix, q, 10)}) >= 9
        assert not {h.doc_id for h in ix.search("amber", k=500, mode="dense")} & {f"d{i}" for i in range(401, 420, 2)}
        # an older reader of the folder, whose feed entries were pruned, starts again from the new file
        ix.add([_doc(900)])
        fresh = bertsearch.open_index(tmp_path / "ix")
        assert "d900" in {h.doc_id for h in fresh.search(_doc(900)["text"], k=3, mode="dense")}
        fresh.close()
    finally:
        ix.close()


def test_faiss_kill_during_compaction_then_reopen(tmp_path):
    path = tmp_path / "ix"
    ix = _open(path, "faiss")
    ix.add([_doc(i) for i in range(60)])
    ix.close()
    code = CRASH.format(tests=str(ROOT / "tests"), path=str(path), vectors="faiss", stall="_save").replace(
        "ix.add(", "ix.vectors.merge_min = 10; ix.vectors.merge_fraction = 0.0; ix.add(")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "syncing"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    ix = bertsearch.open_index(path)
    try:
        assert ix.check()["ok"]
        assert ix.search(_doc(230, version=3)["text"], k=1, mode="dense")[0].doc_id == "d230"
    finally:
        ix.close()


@pytest.mark.parametrize("ann", ["flat", "ivf"])
def test_faiss_check_names_chunks_missing_from_the_vectors_and_vectors_of_deleted_chunks(tmp_path, ann):
    ix = _open(tmp_path / "ix", "faiss", ann=ann)
    try:
        ix.add([_doc(i) for i in range(300)])
        assert ix.check()["ok"]
        st = ix.vectors.current()
        ids = ix.store.chunk_ids()
        st.base.index.remove_ids(np.array(ids[:2], dtype=np.int64))  # damage: two vectors gone from the file's index
        report = ix.check()
        assert not report["ok"] and any("2 chunks have no vector" in p for p in report["problems"])
        repaired = ix.check(repair=True)
        assert repaired["ok"] and any("no vector" in p for p in repaired["repaired"]) and ix.check()["ok"]
    finally:
        ix.close()


def test_faiss_a_file_damaged_in_place_is_never_searched(tmp_path, monkeypatch, caplog):
    """Bytes of vectors.faiss overwritten, its size kept: dense search returned the wrong documents and `check`
    said ok. A damaged file is now rebuilt from the store when loaded (up to VERIFY_ON_LOAD bytes) and named by
    `check` (any size); `check --repair` rebuilds it and says what it repaired."""
    from bertsearch.vectors import faiss_index

    ix = _open(tmp_path / "ix", "faiss")
    ix.add([_doc(i) for i in range(300)])
    want = _brute(ix, "document 7", 5)
    ix.close()
    path = tmp_path / "ix" / "vectors.faiss"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * (size // 2))
    assert path.stat().st_size == size
    with caplog.at_level("WARNING"), bertsearch.open_index(tmp_path / "ix") as ix:
        _same(ix, ix.search("document 7", k=5, mode="dense"), want)
        report = ix.check()  # it said ok with nothing more: the damage mended on load is named
        assert report["ok"] and any("vectors.faiss was damaged" in p for p in report["repaired"])
    assert "vectors.faiss was damaged" in caplog.text
    with open(path, "r+b") as f:  # damaged again; a file too large to verify on load is for `check` to find
        f.seek(200)
        f.write(b"\x01" * (size // 2))
    monkeypatch.setattr(faiss_index, "VERIFY_ON_LOAD", 0)
    with bertsearch.open_index(tmp_path / "ix") as ix:
        report = ix.check()
        assert not report["ok"] and any("vectors.faiss is damaged" in p for p in report["problems"])
        assert "repaired" not in report
        repaired = ix.check(repair=True)
        assert repaired["ok"] and any("damaged" in p for p in repaired["repaired"]) and ix.check()["ok"]
        _same(ix, ix.search("document 7", k=5, mode="dense"), want)
    for cut in (1000, 0):  # truncated, emptied: mended in silence, and `check` said nothing
        os.truncate(path, cut)
        with bertsearch.open_index(tmp_path / "ix") as ix:
            report = ix.check()
            assert report["ok"] and any("was missing or cut short" in p for p in report["repaired"]), report
            _same(ix, ix.search("document 7", k=5, mode="dense"), want)
