"""Filtered search equals brute force over the matching documents, for random filters."""

from __future__ import annotations

import random

import numpy as np
import pytest

import bertsearch
from bertsearch import filters

TOPICS = ["art", "science", "history", "music"]
VOCAB = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(7)
    docs = []
    for i in range(300):
        meta = {}
        if rng.random() < 0.9:
            meta["year"] = rng.randint(1900, 2025)
        if rng.random() < 0.8:
            meta["topic"] = rng.choice(TOPICS)
        if rng.random() < 0.5:
            meta["score"] = round(rng.uniform(0, 5), 1)
        if rng.random() < 0.3:
            meta["date"] = f"20{rng.randint(10, 24)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        text = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(4, 90)))  # long ones span chunks
        docs.append({"id": f"doc{i:03d}", "title": "", "text": text, **meta})
    return docs


@pytest.fixture(scope="module")
def ix(corpus, tmp_path_factory):
    index = bertsearch.open_index(tmp_path_factory.mktemp("f") / "ix", create=True, model="hashing")
    index.add(corpus)
    yield index
    index.close()


def random_filter(rng: random.Random) -> str:
    def leaf() -> str:
        kind = rng.randrange(6)
        if kind == 0:
            return f"year {rng.choice(['<', '<=', '>', '>=', '=', '!='])} {rng.randint(1890, 2030)}"
        if kind == 1:
            return f"topic in ({', '.join(repr(t) for t in rng.sample(TOPICS + ['none'], rng.randint(1, 3)))})"
        if kind == 2:
            a = rng.uniform(0, 5)
            return f"score between {a:.1f} and {a + rng.uniform(0, 2):.1f}"
        if kind == 3:
            return f"{rng.choice(['date', 'score', 'topic'])} is {rng.choice(['', 'not '])}null"
        if kind == 4:
            return f"date >= '20{rng.randint(10, 25)}-01-01'"
        return f"id {rng.choice(['<', '>='])} 'doc{rng.randint(0, 320):03d}'"

    def expr(depth: int) -> str:
        if depth == 0 or rng.random() < 0.4:
            return leaf()
        op = rng.choice(["and", "or", "and not"])
        return f"({expr(depth - 1)} {op} {expr(depth - 1)})"

    return expr(3)


def brute_force(ix, corpus, flt, query: str, k: int) -> list[tuple[float, str]]:
    """Exact best-chunk cosine over every chunk of every matching document."""
    qv = ix.encoder.encode([query])[0]
    best = {}
    for d in corpus:
        meta = {key: v for key, v in d.items() if key not in ("id", "title", "text")}
        if not flt.matches(meta, id=d["id"]):
            continue
        stored = ix.store.document(d["id"])
        chunks = ix.store.doc_chunks([stored["rowid"]])[stored["rowid"]]
        xb = ix.store.chunk_vectors([c for c, _, _ in chunks], ix.config.dim)
        best[d["id"]] = float(np.max(xb @ qv))
    ranked = sorted(best.items(), key=lambda x: (-x[1], x[0]))[:k]
    return [(s, i) for i, s in ranked]


def assert_same_ranking(got, want, where, tol=1e-5):
    """Equal lists, up to float rounding: where ids differ, the scores must tie within `tol`."""
    assert len(got) == len(want), where
    assert np.allclose([s for s, _ in got], [s for s, _ in want], atol=tol), where
    want_score = dict((i, s) for s, i in want)
    for (gs, gi), (ws, wi) in zip(got, want):
        if gi != wi:
            tied = gi in want_score and abs(want_score[gi] - gs) <= tol
            at_boundary = abs(gs - want[-1][0]) <= tol
            assert tied or at_boundary, (where, got, want)


@pytest.mark.parametrize("path", ["exact subset", "faiss id selector"])
def test_filtered_dense_search_equals_brute_force(ix, corpus, path):
    ix.exact_subset = 20_000 if path == "exact subset" else 0
    rng = random.Random(11)
    sizes = []
    for trial in range(200):
        where = random_filter(rng)
        flt = filters.parse(where)
        query = " ".join(rng.choice(VOCAB) for _ in range(3))
        k = rng.choice([1, 5, 10, 30])
        got = [(h.score, h.doc_id) for h in ix.search(query, k=k, mode="dense", where=where)]
        want = brute_force(ix, corpus, flt, query, k)
        assert_same_ranking(got, want, where)
        sizes.append(len(want))
    # the random filters cover empty results, fewer than k, and full pages
    assert 0 in sizes and any(0 < s < 10 for s in sizes) and 30 in sizes


def test_filtered_lexical_and_hybrid_return_only_matching_documents_and_k_when_possible(ix, corpus):
    rng = random.Random(5)
    by_id = {d["id"]: d for d in corpus}
    for _ in range(60):
        where = random_filter(rng)
        flt = filters.parse(where)
        matching = {i for i, d in by_id.items() if flt.matches({k: v for k, v in d.items() if k not in ("id", "title", "text")}, id=i)}
        for mode in ("lexical", "hybrid"):
            hits = ix.search("w1 w2 w3 w4 w5", k=10, mode=mode, where=where)
            assert {h.doc_id for h in hits} <= matching
            if mode == "hybrid":
                assert len(hits) == min(10, len(matching))


def test_filters_with_an_approximate_index(tmp_path, corpus):
    """HNSW with an id selector (no exact shortcut) still returns only matching documents, k of them."""
    index = bertsearch.open_index(tmp_path / "h", create=True, model="hashing", ann="hnsw")
    index.add(corpus)
    index.exact_subset = 0
    hits = index.search("w7 w8", k=10, mode="dense", where="topic = 'music' and year >= 1950")
    assert hits and all(h.metadata.get("topic") == "music" and h.metadata["year"] >= 1950 for h in hits)
    n_match = sum(1 for d in corpus if d.get("topic") == "music" and d.get("year", 0) >= 1950)
    assert len(hits) == min(10, n_match)
    index.close()


def test_delete_where(tmp_path, corpus):
    index = bertsearch.open_index(tmp_path / "d", create=True, model="hashing")
    index.add(corpus)
    n_old = sum(1 for d in corpus if d.get("year", 3000) < 1950)
    assert index.delete(where="year < 1950") == n_old
    assert index.store.counts()["documents"] == len(corpus) - n_old
    assert index.search("w1", k=300, mode="dense", where="year < 1950") == []
    assert index.check()["ok"]
    index.close()


def test_chunk_ids_where_among_keeps_an_or_inside_the_filter(tmp_path):
    from bertsearch.filters import parse

    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": f"d{i}", "text": f"text {i}", "y": i} for i in range(10)])
        one = {ix.store.document(f"d{i}")["rowid"]: i for i in range(10)}
        chunk = {one[doc]: cid for cid, (doc, _, _) in ix.store.chunk_docs(ix.store.chunk_ids().tolist()).items()}
        among = [chunk[2], chunk[3], chunk[5]]
        assert ix.store.chunk_ids_where(parse("y = 1 or y = 5"), among).tolist() == [chunk[5]]
