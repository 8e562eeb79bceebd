"""The Milvus vector backend against a real store: milvus-lite embedded, and a `milvus-lite server` by URI.

Skipped when pymilvus or milvus-lite is missing, except under CI=1, where that fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401
except ImportError:
    if os.environ.get("CI") == "1":
        raise
    pytest.skip("pymilvus and milvus-lite are not installed (pip install 'bertsearch[milvus]')", allow_module_level=True)

from bertsearch.config import IndexConfig
from bertsearch.errors import BadArgument, BertsearchError
from bertsearch.filters import And, Between, Compare, Field, Filter, In, IsNull, Not, Or
from bertsearch.store.sqlite import Store, StoredDocument
from bertsearch.types import Chunk, Document
from bertsearch.vectors.milvus import META_KEY, MilvusBackend, compile_filter, index_settings, typed

ROOT = Path(__file__).resolve().parent.parent
DIM = 16


def config(ann: str = "flat") -> IndexConfig:
    return IndexConfig(model="test", fingerprint="test", dim=DIM, max_tokens=128, ann=ann)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)  # (n, dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def stored(rng: np.random.Generator, doc_id: str, metadata: dict, chunks: int = 2, title: str = "") -> StoredDocument:
    text = "word " * 20
    return StoredDocument(Document(doc_id, text, title=title or doc_id, metadata=metadata), f"h-{doc_id}-{rng.random()}",
                          [Chunk(0, 10, 3) for _ in range(chunks)], unit(rng, chunks))


def brute_force(store: Store, xq: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    _, all_ids, xb = store.vectors(DIM)
    if ids is not None:
        keep = np.isin(all_ids, ids)
        all_ids, xb = all_ids[keep], xb[keep]
    D = xq @ xb.T  # (nq, n)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, 1), all_ids[order]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture
def backend_of(tmp_path):
    """backend_of(store, ann="flat", uri=None) -> a MilvusBackend in tmp_path, closed at the end."""
    opened: list[MilvusBackend] = []

    def make(store: Store, ann: str = "flat", uri: str | None = None, folder: Path | None = None) -> MilvusBackend:
        b = MilvusBackend(folder or tmp_path, store, config(ann), uri=uri)
        opened.append(b)
        return b

    yield make
    for b in opened:
        b.close()


# -- search ------------------------------------------------------------------------------------------------------


def test_flat_search_equals_brute_force(store, backend_of):
    rng = np.random.default_rng(1)
    store.write([stored(rng, f"d{i}", {"n": i}, chunks=1 + i % 3) for i in range(60)])
    b = backend_of(store)
    assert b.exact
    assert b.sync() == store.feed_head()
    n = store.counts()["chunks"]
    assert b.count() == n == b._count(b._collection)
    xq = unit(rng, 7)
    D, I = b.search(xq, 10)
    D0, I0 = brute_force(store, xq, 10)
    assert D.shape == I.shape == (7, 10)
    assert (I == I0).all()
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)
    D, I = b.search(xq, n + 5)  # more than it holds: padded with -1 and -inf, best first
    assert (I[:, :n] >= 0).all() and (I[:, n:] == -1).all() and np.isneginf(D[:, n:]).all()
    assert (np.diff(D[:, :n], axis=1) <= 1e-6).all()
    assert b.check() == []


def test_settings_and_refusals(store, tmp_path):
    assert index_settings("flat")[0] == "FLAT"
    assert index_settings("hnsw") == ("HNSW", {"M": 16, "efConstruction": 200}, {})
    assert index_settings("ivf")[0] == "IVF_FLAT" and index_settings("ivfpq")[0] == "IVF_SQ8"
    assert index_settings('milvus:HNSW:{"M":32,"search":{"ef":256}}') == ("HNSW", {"M": 32}, {"ef": 256})
    for bad in ("IVF256,PQ8", "milvus:HNSW:{nope", 'milvus:HN SW'):
        with pytest.raises(BadArgument):
            index_settings(bad)
    with pytest.raises(BadArgument, match="milvus-lite cannot build IVF_PQ"):
        MilvusBackend(tmp_path, store, config("milvus:IVF_PQ"))
    for ann, exact in (("flat", True), ("hnsw", False), ("ivf", False), ("ivfpq", False)):
        b = MilvusBackend(tmp_path, store, config(ann))
        assert b.exact is exact
        b.close()


def test_missing_pymilvus_says_what_to_install(store, tmp_path, monkeypatch):
    from bertsearch.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # (import pymilvus now raises ImportError)
    with pytest.raises(MissingDependency, match=r'pip install "bertsearch\[milvus\]"'):
        MilvusBackend(tmp_path, store, config()).sync()  # (it connects on first use)


def test_k_results_whenever_k_match_under_hnsw(store, backend_of):
    rng = np.random.default_rng(2)
    store.write([stored(rng, f"d{i}", {"rare": i < 6, "n": i}, chunks=3) for i in range(700)])  # 2,100 chunks
    b = backend_of(store, "hnsw")
    assert not b.exact
    b.sync()
    xq = unit(rng, 5)
    rare = Compare(Field(("rare",)), "=", True)  # 18 chunks
    allowed = store.chunk_ids_where(rare)
    for where, ids in ((rare, None), (rare, allowed), (None, allowed)):
        D, I = b.search(xq, 10, allowed=ids, where=where)
        assert (I >= 0).all() and np.isin(I, allowed).all()
    D, I = b.search(xq, 30, where=rare)  # fewer match than asked
    assert ((I >= 0).sum(axis=1) == len(allowed)).all()
    assert set(I[0][I[0] >= 0]) == set(allowed.tolist())

    # an approximate index that comes up short (as HNSW does under selective filters) is searched again
    # exhaustively, then exactly over the matching chunks' stored vectors
    calls = []

    def short(name, xq_, k, expr, params):
        calls.append(params)
        return [[] for _ in xq_]

    b._search = short
    D, I = b.search(xq, 10, where=rare)
    assert len(calls) == 2 and calls[1]["ef"] >= store.counts()["chunks"]
    D0, I0 = brute_force(store, xq, 10, allowed)
    assert (I == I0).all()
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)


# -- filters -----------------------------------------------------------------------------------------------------

FIELDS = [Field(("year",)), Field(("lang",)), Field(("flag",)), Field(("score",)), Field(("meta", "author")),
          Field(("meta",)), Field(('a"b',)), Field(("x.y",)), Field(("ünï",)), Field(("tags",)), Field(("missing",)),
          Field(("id",), column="id"), Field(("title",), column="title")]
VALUES = [2000, 2001, 2003, 2001.5, -1, 0, "2001", "en", "fr", "", "b", 'q"uote\\', "ünï\n", True, False, 1.5, "d7",
          1e16, -1e-07, "it's"]


def random_metadata(rng: np.random.Generator) -> dict:
    choices = {
        "year": [2000, 2001, 2002, 2003.0, 2001.5, "2001", True, None, [2001]],
        "lang": ["en", "fr", "de", "", 3, None],
        "flag": [True, False, 1, 0, "true"],
        "score": [0.5, 1.5, -1, 0, "1.5", 1e16, -1e-07, 10**16],
        "meta": [{"author": "b"}, {"author": "a"}, {"author": 1}, {"author": None}, "b", {}],
        'a"b': ['q"uote\\', "x", 2000],
        "x.y": ["en", 0],
        "ünï": ["ünï\n", "ünï", 1.5],
        "tags": [["a", "b"], [], None, "a"],
    }
    meta = {}
    for key, values in choices.items():
        if rng.random() < 0.8:  # else the key is missing
            meta[key] = values[rng.integers(len(values))]
    return meta


def random_filter(rng: np.random.Generator, depth: int = 0) -> Filter:
    roll = rng.random()
    if depth < 2 and roll < 0.3:
        parts = tuple(random_filter(rng, depth + 1) for _ in range(2 + int(rng.integers(2))))
        return (And if rng.random() < 0.5 else Or)(parts)
    if depth < 2 and roll < 0.4:
        return Not(random_filter(rng, depth + 1))
    field = FIELDS[rng.integers(len(FIELDS))]
    value = VALUES[rng.integers(len(VALUES))]
    kind = rng.integers(4)
    if kind == 0:
        ops = ["=", "!="] if isinstance(value, bool) else ["=", "!=", "<", "<=", ">", ">="]
        return Compare(field, ops[rng.integers(len(ops))], value)
    if kind == 1:
        values = tuple(VALUES[i] for i in rng.choice(len(VALUES), size=1 + int(rng.integers(3)), replace=False))
        return In(field, values, bool(rng.random() < 0.5))
    if kind == 2:
        low, high = sorted([2000, 2001.5, 2002, 0][rng.integers(4)] for _ in range(2)) if rng.random() < 0.6 else \
            sorted(["a", "d5", "en", "fz"][rng.integers(4)] for _ in range(2))
        return Between(field, low, high, bool(rng.random() < 0.5))
    return IsNull(field, bool(rng.random() < 0.5))


def test_filters_equal_brute_force(store, backend_of):
    rng = np.random.default_rng(3)
    store.write([stored(rng, f"d{i}", random_metadata(rng), chunks=1 + i % 2, title=["t1", "t2"][i % 2])
                 for i in range(60)])
    b = backend_of(store)
    b.sync()
    n = store.counts()["chunks"]
    docs = store.documents(list({r for r, _ in store.chunk_doc_ids(store.vectors(DIM)[1].tolist()).values()}))
    by_chunk = {c: docs[r] for c, (r, _) in store.chunk_doc_ids(store.vectors(DIM)[1].tolist()).items()}
    xq = unit(rng, 2)
    compiled = 0
    for _ in range(250):
        flt = random_filter(rng)
        expected = {c for c, d in by_chunk.items()
                    if flt.matches(d["metadata"], id=d["id"], title=d["title"], updated_at=d["updated_at"])}
        assert set(store.chunk_ids_where(flt).tolist()) == expected, str(flt)  # (the store and matches agree)
        compiled += isinstance(compile_filter(flt), str)
        _, I = b.search(xq, n, where=flt)
        for row in I:
            assert set(row[row >= 0].tolist()) == expected, (str(flt), compile_filter(flt))
    assert compiled > 150  # most went through Milvus's own filtering, not the list of ids


def test_compile_filter_guards_types():
    year = Field(("year",))
    assert compile_filter(Compare(Field(("title",), column="title"), "=", "x")) is None
    assert compile_filter(Compare(Field(("id",), column="id"), "=", 3)) is False  # a column is text
    assert compile_filter(IsNull(Field(("id",), column="id"))) is False
    assert compile_filter(Or((IsNull(Field(("id",), column="id"), True), Compare(year, "=", 1)))) is True
    expr = compile_filter(Compare(year, "!=", 1))
    assert expr == f'(exists typed["n_{b"year".hex()}"] and typed["n_{b"year".hex()}"] != 1)'
    assert compile_filter(Compare(year, "=", "a\x01b")) is None  # a control character Milvus cannot spell
    assert typed({"a": {"b": True}, "c": None, "d": [1]}) == {
        f"v_{b'a'.hex()}": 1, f"v_{b'a'.hex()}_{b'b'.hex()}": 1, f"b_{b'a'.hex()}_{b'b'.hex()}": True,
        f"v_{b'd'.hex()}": 1}


# -- following the store -----------------------------------------------------------------------------------------


def test_deletes_upserts_and_metadata(store, backend_of):
    rng = np.random.default_rng(4)
    store.write([stored(rng, f"d{i}", {"lang": "en"}, chunks=2) for i in range(20)])
    b = backend_of(store)
    b.sync()
    old = store.chunk_ids_where(In(Field(("id",), column="id"), ("d1", "d2")))
    store.delete(["d1"])
    store.write([stored(rng, "d2", {"lang": "fr"}, chunks=3)])  # replaced: its old chunks go, three new ones come
    store.update_metadata({"d3": {"lang": "de"}})
    b.sync()
    assert b.count() == store.counts()["chunks"] == 40 - 4 + 3
    xq = unit(rng, 3)
    D, I = b.search(xq, 5, allowed=old)
    assert (I == -1).all() and np.isneginf(D).all()
    fr = store.chunk_ids_where(Compare(Field(("lang",)), "=", "fr"))
    assert len(fr) == 3 and not np.isin(fr, old).any()
    _, I = b.search(xq, 5, where=Compare(Field(("lang",)), "=", "fr"))
    assert (np.sort(I[:, :3], axis=1) == fr).all() and (I[:, 3:] == -1).all()
    de = store.chunk_ids_where(Compare(Field(("lang",)), "=", "de"))
    _, I = b.search(xq, 5, where=Compare(Field(("lang",)), "=", "de"))
    assert (np.sort(I[:, :2], axis=1) == de).all()
    _, I = b.search(xq, 40, where=Compare(Field(("lang",)), "=", "en"))
    assert ((I >= 0).sum(axis=1) == 40 - 4 - 2).all()
    assert b.check() == []
    assert store.feed_length() == 0 and json.loads(store.get_meta(META_KEY))["position"] == store.feed_head()


def test_crash_before_the_position_is_written_replays(store, backend_of, tmp_path):
    rng = np.random.default_rng(5)
    store.write([stored(rng, f"d{i}", {"n": i}) for i in range(10)])
    b = backend_of(store)
    b.sync()
    before = json.loads(store.get_meta(META_KEY))
    store.delete(["d0"])
    store.write([stored(rng, "d1", {"n": 100}), stored(rng, "d10", {"n": 10})])
    b._save = lambda: None  # Milvus applies, then the process dies before the store records it
    b.sync()
    b.close()
    assert json.loads(store.get_meta(META_KEY)) == before and store.feed_length() > 0
    b = backend_of(store)
    assert b.sync() == store.feed_head()
    assert b.check() == [] and b.count() == store.counts()["chunks"] == 20
    xq = unit(rng, 4)
    assert (b.search(xq, 8)[1] == brute_force(store, xq, 8)[1]).all()
    _, I = b.search(xq, 5, where=Compare(Field(("n",)), "=", 100))
    assert set(I[0][I[0] >= 0].tolist()) == set(store.chunk_ids_where(Compare(Field(("n",)), "=", 100)).tolist())


def test_sigkill_mid_sync_then_reopen(store, backend_of, tmp_path):
    rng = np.random.default_rng(6)
    store.write([stored(rng, f"d{i}", {"n": i}) for i in range(50)])
    b = backend_of(store)
    b.sync()
    b.close()
    store.write([stored(rng, f"e{i}", {"n": i}, chunks=3) for i in range(200)])
    store.delete([f"d{i}" for i in range(0, 50, 2)])
    store.update_metadata({"d1": {"n": -1}})
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from bertsearch.config import IndexConfig
        from bertsearch.store.sqlite import Store
        from bertsearch.vectors import milvus
        milvus.BATCH = 50
        store = Store(Path({str(tmp_path)!r}) / "store.db")
        b = milvus.MilvusBackend(Path({str(tmp_path)!r}), store, IndexConfig(**{config().__dict__!r}))
        upsert, calls = b.client.upsert, []
        def slow(*args, **kwargs):
            upsert(*args, **kwargs)
            calls.append(1)
            if len(calls) == 4:
                print("applied", flush=True)
                time.sleep(120)
        b.client.upsert = slow
        b.sync()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "applied"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    b = backend_of(store)
    b.sync()
    assert b.check() == []
    assert b.count() == b._count(b._collection) == store.counts()["chunks"] == 25 * 2 + 600
    xq = unit(rng, 3)
    assert (b.search(xq, 10)[1] == brute_force(store, xq, 10)[1]).all()


def test_lost_rows_feed_gap_and_epoch_reload(store, backend_of):
    rng = np.random.default_rng(7)
    store.write([stored(rng, f"d{i}", {"n": i}) for i in range(10)])
    b = backend_of(store)
    b.sync()
    first = b._collection
    b.client.delete(first, ids=[int(i) for i in store.vectors(DIM)[1][:3]])  # rows lost (a power cut, say)
    b.close()
    b = backend_of(store)
    b.sync()  # the first sync of a process counts the rows: loaded afresh
    assert b._collection != first and b.check() == [] and not b.client.has_collection(first)
    b.close()
    b = backend_of(store)  # the feed pruned past its position (another backend followed it): loaded afresh
    store.write([stored(rng, "d11", {})])
    store.prune_feed(store.feed_head())
    b.sync()
    assert b.check() == [] and b.count() == 22
    second = b._collection
    store.set_meta("epoch", "0123456789abcdef")  # a restored or re-indexed store: another collection
    b.sync()
    assert b._collection.startswith("bertsearch_0123456789abcdef_") and b.check() == []
    assert b.client.list_collections() == [b._collection] and second != b._collection
    third = b._collection
    b.rebuild()  # a repair: everything afresh into the next collection, the old one dropped
    assert b._collection == third[:-1] + "2" and b.client.list_collections() == [b._collection] and b.check() == []


def test_read_only_store_applies_without_writing(store, backend_of):
    rng = np.random.default_rng(8)
    store.write([stored(rng, f"d{i}", {}) for i in range(5)])
    b = backend_of(store)
    b.sync()
    recorded = store.get_meta(META_KEY)
    store.write([stored(rng, "d9", {})])
    store.read_only = True
    try:
        assert b.sync() == store.feed_head() and b.count() == 12
        assert store.get_meta(META_KEY) == recorded and store.feed_length() > 0
    finally:
        store.read_only = False


def test_second_process_on_the_same_folder_is_told_what_to_do(store, backend_of, tmp_path):
    b = backend_of(store)
    b.sync()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from bertsearch.config import IndexConfig
        from bertsearch.errors import BertsearchError
        from bertsearch.store.sqlite import Store
        from bertsearch.vectors.milvus import MilvusBackend
        try:
            MilvusBackend(Path({str(tmp_path)!r}), Store(Path({str(tmp_path)!r}) / "store.db"), IndexConfig(**{config().__dict__!r})).sync()
        except BertsearchError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                         timeout=60).stdout
    assert "open in another process" in out and "milvus-lite server --data-dir" in out and "faiss" in out


# -- a Milvus server by URI --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int) -> subprocess.Popen:
    """A `milvus-lite server` subprocess, once it takes connections."""
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None and time.monotonic() < deadline, "milvus-lite server did not start"
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `milvus-lite server` subprocess: the path a Milvus server or cluster takes (gRPC by URI)."""
    port = free_port()
    proc = start_server(tmp_path_factory.mktemp("milvus-server") / "milvus.db", port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def test_server_by_uri(server, store, backend_of, tmp_path):
    rng = np.random.default_rng(9)
    store.write([stored(rng, f"d{i}", {"lang": ["en", "fr"][i % 2], "year": 2000 + i}) for i in range(30)])
    b = backend_of(store, uri=server)
    b.sync()
    assert b.info()["where"] == server and b.count() == 60
    other_store = Store(tmp_path / "other.db")  # a second index on the same server has a collection of its own
    try:
        other_store.write([stored(rng, "x", {})])
        other = backend_of(other_store, uri=server, folder=tmp_path / "other")
        other.sync()
        assert other._collection != b._collection and other.count() == 2
    finally:
        other_store.close()
    xq = unit(rng, 4)
    assert (b.search(xq, 10)[1] == brute_force(store, xq, 10)[1]).all()
    flt = And((Compare(Field(("lang",)), "=", "en"), Not(Compare(Field(("year",)), ">", 2010))))
    _, I = b.search(xq, 60, where=flt)
    assert set(I[0][I[0] >= 0].tolist()) == set(store.chunk_ids_where(flt).tolist()) != set()
    store.delete(["d0", "d2"])
    store.write([stored(rng, "d4", {"lang": "de"}, chunks=1)])  # replaced: upserted, never inserted twice
    b.sync()
    assert b.check() == [] and b._count(b._collection) == 60 - 4 - 2 + 1
    b.close()
    b = backend_of(store, uri=server)  # another process's view: the collection and position from the store
    assert b.sync() == store.feed_head() and b.count() == 55 and b.check() == []


def test_unreachable_uri_fails_fast(store, backend_of):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(BertsearchError, match="cannot reach Milvus at " + uri.replace(".", r"\.")):
        backend_of(store, uri=uri).sync()
    assert time.monotonic() - t0 < 10


# -- through the public API --------------------------------------------------------------------------------------


def test_a_server_down_keeps_writes_and_answers_503_not_500(tmp_path, docs, caplog):
    """Milvus went down under an open index: an add or delete was committed to the store, then raised (the CLI
    exited 1, the service answered 500, and a client's retry got 409); a dense search answered 500 with pymilvus's
    traceback. Writes now succeed with a warning, dense searches raise VectorsUnavailable (503 over HTTP), and the
    vectors follow the store once Milvus is back."""
    from fastapi.testclient import TestClient

    import bertsearch
    from bertsearch.errors import VectorsUnavailable
    from bertsearch.service.app import Keys, create_app

    port, data = free_port(), tmp_path / "milvus.db"
    proc = start_server(data, port)
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing", vectors=f"http://127.0.0.1:{port}")
    try:
        ix.add(docs[:3])
        stop_server(proc)
        with caplog.at_level("WARNING", logger="bertsearch.engine"):
            report = ix.add([docs[3]])
            assert ix.delete([docs[0]["id"]]) == 1
        assert report.added == 1 and "the change is stored" in caplog.text and f"127.0.0.1:{port}" in caplog.text
        assert [h.doc_id for h in ix.search(docs[3]["title"], k=1, mode="lexical")] == [docs[3]["id"]]
        with pytest.raises(VectorsUnavailable, match=f"Milvus at http://127.0.0.1:{port} cannot be reached"):
            ix.search("lava", k=2, mode="dense")
        with TestClient(create_app(ix, keys=Keys(write="w" * 24), warm=False)) as client:
            r = client.get("/search", params={"q": "lava", "mode": "hybrid"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "vectors_unavailable", r.text
            assert r.json()["error"]["kind"] == "VectorsUnavailable" and r.headers["Retry-After"]
            assert client.get("/search", params={"q": "lava", "mode": "lexical"}).status_code == 200
            r = client.post("/documents", json=[{"id": "new", "text": "a volcano in Iceland"}],
                            headers={"Authorization": "Bearer " + "w" * 24})
            assert r.status_code == 200 and r.json()["added"] == 1, r.text
        proc = start_server(data, port)
        deadline = time.monotonic() + 60
        while True:  # (the client may take a moment to connect again: what Retry-After is for)
            try:
                hits = ix.search("the sky, bacteria, lava and a piano, a volcano", k=10, mode="dense")
                break
            except VectorsUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert {h.doc_id for h in hits} == {d["id"] for d in docs[1:]} | {"new"}
        assert ix.check()["ok"]
    finally:
        ix.close()
        stop_server(proc)


def test_index_on_embedded_milvus_equals_faiss(tmp_path, docs):
    import bertsearch

    more = [{"id": f"x{i}", "title": f"Extra {i}", "text": f"lava piano aurora bacteria number {i} " * (1 + i % 4),
             "topic": ["science", "music", 3][i % 3], "year": 1900 + i} for i in range(40)]
    ixs = {v: bertsearch.open_index(tmp_path / v, create=True, model="hashing", vectors=v) for v in ("milvus", "faiss")}
    try:
        for ix in ixs.values():
            ix.exact_subset = 0  # filters evaluated by the backend, not by the engine's exact path
            ix.add(docs + more)
            ix.delete(["volcano", "x3"])
            ix.add([{"id": "piano", "title": "Piano", "text": "Lava flows from the piano.", "topic": "geology"}])
        assert (tmp_path / "milvus" / "milvus.db").is_dir() and ixs["milvus"].info()["vectors"] == "milvus"
        for q, where in (("northern lights", None), ("lava", "topic = 'geology'"), ("piano number", "year >= 1920"),
                         ("bacteria", "topic != 'science' and not year < 1930"), ("aurora", "id in ('x5', 'aurora')")):
            got = {v: [(h.doc_id, round(h.score, 4)) for h in ix.search(q, k=5, mode="dense", where=where)]
                   for v, ix in ixs.items()}
            assert got["milvus"] == got["faiss"] and got["milvus"], (q, where, got)
        hits = {h.doc_id: h for h in ixs["milvus"].search("lava", k=50, mode="dense")}
        assert hits["piano"].text.startswith("Lava flows") and "volcano" not in hits and "x3" not in hits
        assert ixs["milvus"].check()["ok"]
    finally:
        for ix in ixs.values():
            ix.close()
    ix = bertsearch.open_index(tmp_path / "milvus")  # reopened: the index remembers where its vectors are
    try:
        assert ix.info()["vectors"] == "milvus"
        assert [h.doc_id for h in ix.search("lava", k=3, mode="dense", where="topic = 'geology'")] == ["piano"]
    finally:
        ix.close()


def test_a_collection_the_server_lost_is_loaded_again_by_a_search(tmp_path, docs, caplog):
    """Every search failed ("a write transaction cannot start inside a read snapshot") after the server lost the
    collection, until `check` ran: the reload recorded itself from inside the search's read snapshot."""
    import bertsearch

    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing", vectors="milvus") as ix:
        ix.add(docs)
        before = [h.doc_id for h in ix.search("northern lights", k=3, mode="dense")]
        ix.vectors.client.drop_collection(ix.vectors._collection)  # as a server restarted without its data
        assert [h.doc_id for h in ix.search("northern lights", k=3, mode="dense")] == before
        assert "is missing): loading them again from the store" in caplog.text
    caplog.clear()
    with bertsearch.open_index(tmp_path / "ix") as ix:  # the reload was recorded: no second one
        assert [h.doc_id for h in ix.search("northern lights", k=3, mode="dense")] == before
    assert "loading the vectors" not in caplog.text


def test_index_on_a_server_sees_the_writes_of_another_process(server, tmp_path, docs):
    import bertsearch

    path = tmp_path / "ix"
    ix = bertsearch.open_index(path, create=True, model="hashing", vectors=server)
    try:
        ix.add(docs[:2])
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            import bertsearch
            ix = bertsearch.open_index({str(path)!r})
            ix.add({docs[2:]!r})
            ix.delete([{docs[0]['id']!r}])
            ix.close()
        """)
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120, cwd=ROOT)
        hits = ix.search("the sky, bacteria, lava and a piano", k=10, mode="dense")
        assert {h.doc_id for h in hits} == {d["id"] for d in docs[1:]}
        report = ix.check()
        assert report["ok"], report
    finally:
        ix.close()


def test_a_copy_made_with_cp_gets_a_collection_of_its_own(server, tmp_path, docs, caplog):
    """Both folders named one collection on the server: a delete through the copy took the document out of the
    original's dense results (its store still held it)."""
    import shutil

    import bertsearch

    with bertsearch.open_index(tmp_path / "a", create=True, model="hashing", vectors=server) as ix:
        ix.add(docs)
        shared = ix.vectors._collection
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with bertsearch.open_index(tmp_path / "b") as copy:
        assert "is a copy of the index at" in caplog.text
        copy.delete(["aurora"])
        copy.add([{"id": "fjord", "text": "A fjord is carved by a glacier."}])
        assert copy.vectors._collection != shared
        assert "aurora" not in {h.doc_id for h in copy.search("northern lights", k=10, mode="dense")}
    caplog.clear()
    with bertsearch.open_index(tmp_path / "a") as ix:  # the original: its own documents, its collection kept
        found = {h.doc_id for h in ix.search("northern lights glacier", k=10, mode="dense")}
        assert "aurora" in found and "fjord" not in found and ix.check()["ok"]
        assert ix.vectors._collection == shared and "is a copy" not in caplog.text
    shutil.move(tmp_path / "a", tmp_path / "moved")  # a moved folder keeps its collection
    with bertsearch.open_index(tmp_path / "moved") as ix:
        assert "aurora" in {h.doc_id for h in ix.search("northern lights", k=10, mode="dense")}
        assert ix.vectors._collection == shared and "is a copy" not in caplog.text


def test_reindex_keeps_the_vectors_in_milvus(tmp_path, docs):
    import bertsearch
    from bertsearch import reindex as rx

    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing:64", vectors="milvus") as ix:
        ix.add(docs)
    rx.reindex(tmp_path / "ix", "hashing:128")
    with bertsearch.open_index(tmp_path / "ix") as ix:
        assert ix.info()["vectors"] == "milvus" and ix.config.dim == 128
        assert ix.search("magma chamber", k=1, mode="dense")[0].doc_id == "volcano"
        assert ix.check()["ok"]
